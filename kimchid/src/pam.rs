//! Password checks through PAM (service `kimchi`) and the identity they establish.
//! Blocking: callers run this on the blocking pool (a failed attempt sleeps ~2 s in
//! pam_faildelay).

use std::ffi::{CString, OsStr, OsString};

use kimchi_dbus::SessionInfo;
use nix::unistd::{getgrouplist, Group, User};
use nonstick::{AuthnFlags, ConversationAdapter, Transaction, TransactionBuilder};

use crate::error::{Error, Result};

const PAM_SERVICE: &str = "kimchi";

struct Credentials {
    user: String,
    password: String,
}

impl ConversationAdapter for Credentials {
    fn prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(OsString::from(&self.user))
    }

    fn masked_prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(OsString::from(&self.password))
    }

    fn error_msg(&self, message: impl AsRef<OsStr>) {
        tracing::debug!("PAM: {}", message.as_ref().to_string_lossy());
    }

    fn info_msg(&self, message: impl AsRef<OsStr>) {
        tracing::debug!("PAM: {}", message.as_ref().to_string_lossy());
    }
}

/// Authenticates `user` with `password` and checks the account is usable, then
/// resolves the uid and group names the authorization rules judge.
/// `Ok(None)` means the credentials were refused.
pub fn login(user: &str, password: &str) -> Result<Option<SessionInfo>> {
    if user.is_empty() || user.contains('\0') || password.contains('\0') {
        return Ok(None);
    }
    let creds = Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    };
    let mut txn = TransactionBuilder::new_with_service(PAM_SERVICE)
        .username(user)
        .build(creds.into_conversation())
        .map_err(|e| Error::Pam(format!("cannot start a PAM transaction: {e}")))?;
    if let Err(e) = txn.authenticate(AuthnFlags::empty()) {
        tracing::info!(user, "PAM authentication refused: {e}");
        return Ok(None);
    }
    if let Err(e) = txn.account_management(AuthnFlags::empty()) {
        tracing::info!(user, "PAM account check refused: {e}");
        return Ok(None);
    }
    identity(user).map(Some)
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
    use super::*;

    #[test]
    fn root_identity_includes_its_primary_group() {
        let info = identity("root").unwrap();
        assert_eq!(info.uid, 0);
        assert!(info.groups.iter().any(|g| g == "root"));
    }

    #[test]
    fn nul_in_credentials_is_refused_without_pam() {
        assert_eq!(login("ro\0ot", "x").unwrap(), None);
        assert_eq!(login("", "x").unwrap(), None);
    }
}
