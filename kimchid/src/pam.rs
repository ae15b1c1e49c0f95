//! Password checks through PAM (service `kimchi`) and the identity they establish.
//! Blocking (callers run this on the blocking pool) but never sleeping: the failure
//! delay PAM's modules ask for (pam_faildelay, pam_unix; ~2 s) is not slept inside
//! the transaction but handed back, so that the caller waits after giving up its
//! PAM slot. Linux-PAM lets an application take over that delay with the
//! `PAM_FAIL_DELAY` item, which nonstick does not expose: hence libpam directly.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;
use std::time::Duration;

use kimchi_dbus::SessionInfo;
use libpam_sys::{pam_conv, pam_handle, pam_message, pam_response};
use nix::unistd::{getgrouplist, Group, User};

use crate::error::{Error, Result};

const PAM_SERVICE: &CStr = c"kimchi";

/// What PAM said about a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(SessionInfo),
    /// Refused; the caller should wait `delay` (what PAM's modules asked for) before
    /// answering, outside any slot.
    Refused {
        delay: Duration,
    },
}

/// What the conversation and the delay callback see (PAM's `appdata_ptr`).
struct Conversation {
    user: CString,
    password: CString,
    /// The failure delay PAM computed, in microseconds.
    delay_usec: Cell<c_uint>,
}

/// Authenticates `user` with `password` and checks the account is usable, then
/// resolves the uid and group names the authorization rules judge.
pub fn login(user: &str, password: &str) -> Result<Verdict> {
    let refused_at_once = Verdict::Refused {
        delay: Duration::ZERO,
    };
    if user.is_empty() {
        return Ok(refused_at_once);
    }
    let (Ok(c_user), Ok(c_password)) = (CString::new(user), CString::new(password)) else {
        return Ok(refused_at_once);
    };
    let conversation = Conversation {
        user: c_user,
        password: c_password,
        delay_usec: Cell::new(0),
    };
    let refusal = {
        let mut txn = Transaction::start(&conversation)?;
        txn.step("authentication", |h| unsafe {
            libpam_sys::pam_authenticate(h, 0)
        })
        .and_then(|()| {
            txn.step("account check", |h| unsafe {
                libpam_sys::pam_acct_mgmt(h, 0)
            })
        })
        .err()
    };
    match refusal {
        None => identity(user).map(Verdict::Accepted),
        Some(why) => {
            tracing::info!(user, "PAM refused: {why}");
            let delay = Duration::from_micros(conversation.delay_usec.get().into());
            Ok(Verdict::Refused { delay })
        }
    }
}

/// An open PAM transaction; ended (`pam_end`) with its last status when dropped.
struct Transaction {
    handle: *mut pam_handle,
    last: c_int,
}

impl Transaction {
    /// Starts service `kimchi` for the conversation's user, with the failure delay
    /// redirected to [`record_delay`]. `conversation` must outlive the transaction.
    fn start(conversation: &Conversation) -> Result<Transaction> {
        let mut conv = pam_conv {
            conv: converse,
            appdata_ptr: ptr::from_ref(conversation).cast_mut().cast(),
        };
        let mut handle = ptr::null_mut();
        // SAFETY: valid C strings and conversation; Linux-PAM copies `conv`.
        let status = unsafe {
            libpam_sys::pam_start(
                PAM_SERVICE.as_ptr(),
                conversation.user.as_ptr(),
                &mut conv,
                &mut handle,
            )
        };
        if status != libpam_sys::PAM_SUCCESS || handle.is_null() {
            return Err(Error::Pam(format!(
                "cannot start a PAM transaction (status {status})"
            )));
        }
        let txn = Transaction {
            handle,
            last: libpam_sys::PAM_SUCCESS,
        };
        let delay_fn: unsafe extern "C" fn(c_int, c_uint, *mut c_void) = record_delay;
        // SAFETY: the item PAM_FAIL_DELAY is the callback itself.
        let status = unsafe {
            libpam_sys::pam_set_item(
                txn.handle,
                libpam_sys::PAM_FAIL_DELAY,
                delay_fn as *const c_void,
            )
        };
        if status != libpam_sys::PAM_SUCCESS {
            return Err(Error::Pam(format!(
                "cannot take over PAM's failure delay: {}",
                txn.describe(status)
            )));
        }
        Ok(txn)
    }

    /// Runs one PAM call; `Err` holds PAM's words for a refusal.
    fn step(
        &mut self,
        what: &str,
        call: impl FnOnce(*mut pam_handle) -> c_int,
    ) -> std::result::Result<(), String> {
        self.last = call(self.handle);
        if self.last == libpam_sys::PAM_SUCCESS {
            Ok(())
        } else {
            Err(format!("{what}: {}", self.describe(self.last)))
        }
    }

    fn describe(&self, status: c_int) -> String {
        // SAFETY: pam_strerror returns a static string (or null).
        let text = unsafe { libpam_sys::pam_strerror(self.handle, status) };
        if text.is_null() {
            format!("status {status}")
        } else {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: the handle came from pam_start and is ended once.
        unsafe { libpam_sys::pam_end(self.handle, self.last) };
    }
}

/// PAM's conversation: the user name for a visible prompt, the password for a
/// hidden one; messages are logged. Answers are malloc'ed, as PAM frees them.
unsafe extern "C" fn converse(
    count: c_int,
    messages: *const *const pam_message,
    answers: *mut *mut pam_response,
    appdata: *mut c_void,
) -> c_int {
    let Ok(count @ 1..=32) = usize::try_from(count) else {
        return libpam_sys::PAM_CONV_ERR;
    };
    if messages.is_null() || answers.is_null() || appdata.is_null() {
        return libpam_sys::PAM_CONV_ERR;
    }
    // SAFETY: PAM passes the appdata_ptr given to pam_start: our Conversation.
    let conversation = unsafe { &*appdata.cast::<Conversation>() };
    // SAFETY: calloc of `count` zeroed responses (null `resp` each).
    let replies: *mut pam_response =
        unsafe { libc::calloc(count, std::mem::size_of::<pam_response>()) }.cast();
    if replies.is_null() {
        return libpam_sys::PAM_BUF_ERR;
    }
    for i in 0..count {
        // SAFETY: Linux-PAM passes `count` pointers to messages.
        let message = unsafe { &**messages.add(i) };
        let answer = match message.msg_style {
            libpam_sys::PAM_PROMPT_ECHO_ON => Some(&conversation.user),
            libpam_sys::PAM_PROMPT_ECHO_OFF => Some(&conversation.password),
            libpam_sys::PAM_ERROR_MSG | libpam_sys::PAM_TEXT_INFO => {
                if !message.msg.is_null() {
                    let text = unsafe { CStr::from_ptr(message.msg) };
                    tracing::debug!("PAM: {}", text.to_string_lossy());
                }
                None
            }
            _ => {
                unsafe { free_replies(replies, count) };
                return libpam_sys::PAM_CONV_ERR;
            }
        };
        if let Some(answer) = answer {
            // SAFETY: a valid C string; PAM frees the copy.
            let copy: *mut c_char = unsafe { libc::strdup(answer.as_ptr()) };
            if copy.is_null() {
                unsafe { free_replies(replies, count) };
                return libpam_sys::PAM_BUF_ERR;
            }
            unsafe { (*replies.add(i)).resp = copy };
        }
    }
    unsafe { *answers = replies };
    libpam_sys::PAM_SUCCESS
}

/// Frees answers built by [`converse`] that PAM will not get.
unsafe fn free_replies(replies: *mut pam_response, count: usize) {
    for i in 0..count {
        unsafe { libc::free((*replies.add(i)).resp.cast()) };
    }
    unsafe { libc::free(replies.cast()) };
}

/// Linux-PAM calls this instead of sleeping when a step failed: the delay is noted
/// for the caller, who waits outside its PAM slot.
unsafe extern "C" fn record_delay(_status: c_int, usec: c_uint, appdata: *mut c_void) {
    if let Some(conversation) = unsafe { appdata.cast::<Conversation>().as_ref() } {
        conversation.delay_usec.set(usec);
    }
}

fn identity(user: &str) -> Result<SessionInfo> {
    let entry = User::from_name(user)
        .map_err(|e| Error::Internal(format!("cannot look up user '{user}': {e}")))?
        .ok_or_else(|| {
            Error::Internal(format!("PAM accepted '{user}' but it has no passwd entry"))
        })?;
    let cname =
        CString::new(user).map_err(|_| Error::InvalidArgument("user name has NUL".into()))?;
    let gids = getgrouplist(&cname, entry.gid)
        .map_err(|e| Error::Internal(format!("cannot list groups of '{user}': {e}")))?;
    let mut groups: Vec<String> = gids
        .into_iter()
        .filter_map(|gid| Group::from_gid(gid).ok().flatten())
        .map(|g| g.name)
        .collect();
    groups.sort();
    groups.dedup();
    Ok(SessionInfo {
        user: user.to_owned(),
        uid: entry.uid.as_raw(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn conversation() -> Conversation {
        Conversation {
            user: c"alice".into(),
            password: c"s3cret".into(),
            delay_usec: Cell::new(0),
        }
    }

    fn message(style: c_int, text: &CStr) -> pam_message {
        pam_message {
            msg_style: style,
            msg: text.as_ptr(),
        }
    }

    /// Runs the conversation on `messages`; the answers (None for no answer).
    fn converse_with(messages: &[pam_message]) -> std::result::Result<Vec<Option<String>>, c_int> {
        let conv = conversation();
        let pointers: Vec<*const pam_message> = messages.iter().map(ptr::from_ref).collect();
        let mut replies = ptr::null_mut();
        let status = unsafe {
            converse(
                pointers.len() as c_int,
                pointers.as_ptr(),
                &mut replies,
                ptr::from_ref(&conv).cast_mut().cast(),
            )
        };
        if status != libpam_sys::PAM_SUCCESS {
            assert!(replies.is_null(), "no answers on a failure");
            return Err(status);
        }
        let answers = (0..messages.len())
            .map(|i| {
                let resp = unsafe { (*replies.add(i)).resp };
                (!resp.is_null()).then(|| {
                    unsafe { CStr::from_ptr(resp) }
                        .to_string_lossy()
                        .into_owned()
                })
            })
            .collect();
        unsafe { free_replies(replies, messages.len()) };
        Ok(answers)
    }

    #[test]
    fn conversation_answers_user_and_password_and_only_logs_messages() {
        let answers = converse_with(&[
            message(libpam_sys::PAM_PROMPT_ECHO_ON, c"login:"),
            message(libpam_sys::PAM_TEXT_INFO, c"hello"),
            message(libpam_sys::PAM_PROMPT_ECHO_OFF, c"Password:"),
            message(libpam_sys::PAM_ERROR_MSG, c"careful"),
        ])
        .unwrap();
        assert_eq!(
            answers,
            [Some("alice".into()), None, Some("s3cret".into()), None]
        );
    }

    #[test]
    fn conversation_refuses_unknown_styles_and_no_messages() {
        assert_eq!(
            converse_with(&[message(99, c"binary prompt")]),
            Err(libpam_sys::PAM_CONV_ERR)
        );
        assert_eq!(converse_with(&[]), Err(libpam_sys::PAM_CONV_ERR));
    }

    #[test]
    fn the_failure_delay_is_recorded_not_slept() {
        let conv = conversation();
        let started = Instant::now();
        unsafe {
            record_delay(
                libpam_sys::PAM_AUTH_ERR,
                2_000_000,
                ptr::from_ref(&conv).cast_mut().cast(),
            )
        };
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(conv.delay_usec.get(), 2_000_000);
    }

    /// A real transaction of the `kimchi` service (or PAM's `other`): a wrong password
    /// is refused without the transaction sleeping the delay it asks for.
    #[test]
    fn a_wrong_password_comes_back_with_the_delay_instead_of_sleeping_it() {
        let started = Instant::now();
        let verdict = login("root", "certainly not the password").unwrap();
        let elapsed = started.elapsed();
        let Verdict::Refused { delay } = verdict else {
            panic!("a wrong password was accepted: {verdict:?}");
        };
        println!("PAM refused in {elapsed:?}, asking for a delay of {delay:?}");
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
        assert!(elapsed < delay, "slept {elapsed:?} inside the transaction");
    }

    #[test]
    fn root_identity_includes_its_primary_group() {
        let info = identity("root").unwrap();
        assert_eq!(info.uid, 0);
        assert!(info.groups.iter().any(|g| g == "root"));
    }

    #[test]
    fn nul_in_credentials_is_refused_without_pam() {
        let at_once = Verdict::Refused {
            delay: Duration::ZERO,
        };
        assert_eq!(login("ro\0ot", "x").unwrap(), at_once);
        assert_eq!(login("root", "x\0").unwrap(), at_once);
        assert_eq!(login("", "x").unwrap(), at_once);
    }
}
