//! Every method call is judged here before it does anything: polkit decides, with
//! the caller's bus name as subject. Calls from the gateway must carry a web session;
//! the web user's name and groups travel to polkit as details for the shipped rule.
//! Callers' uids and polkit's recent answers are remembered (`remembered.rs`); a web
//! session is resolved on every call, so a logout counts at once.

mod remembered;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use kimchi_dbus::{CallOptions, SessionInfo};
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, UniqueName};
use zbus::Variant;
use zbus_polkit::policykit1::{AuthorityProxy, AuthorizationResult, CheckAuthorizationFlags};

use crate::engine::sessions::{SessionStore, Sessions};
use crate::error::{Error, Result};

use remembered::{Question, Remembered};

const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";

/// polkit action ids, one per operation family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    VmLifecycle,
    VmManage,
    VmConsole,
    TemplateManage,
    PoolManage,
    VolumeManage,
    NetworkManage,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Read => "org.kimchi.read",
            Action::VmLifecycle => "org.kimchi.vm.lifecycle",
            Action::VmManage => "org.kimchi.vm.manage",
            Action::VmConsole => "org.kimchi.vm.console",
            Action::TemplateManage => "org.kimchi.template.manage",
            Action::PoolManage => "org.kimchi.storage.pool-manage",
            Action::VolumeManage => "org.kimchi.storage.volume-manage",
            Action::NetworkManage => "org.kimchi.network.manage",
        }
    }
}

/// Who is calling, once identified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// A process on the bus, judged as itself.
    Direct { uid: u32 },
    /// A web user, speaking through the gateway.
    Web(SessionInfo),
}

pub struct Authority {
    polkit: AuthorityProxy<'static>,
    bus: DBusProxy<'static>,
    sessions: Arc<Sessions>,
    remembered: Remembered,
}

impl Authority {
    pub async fn new(conn: &zbus::Connection, sessions: Arc<Sessions>) -> Result<Self> {
        let polkit = AuthorityProxy::new(conn)
            .await
            .map_err(|e| Error::Polkit(e.to_string()))?;
        let bus = DBusProxy::new(conn)
            .await
            .map_err(|e| Error::Internal(format!("bus driver proxy: {e}")))?;
        Ok(Authority {
            polkit,
            bus,
            sessions,
            remembered: Remembered::default(),
        })
    }

    /// Forgets what no longer holds, as the bus tells of it: every decision when
    /// polkit reloads its rules or actions (or polkitd is replaced), a caller's uid and
    /// decisions when its name leaves the bus. Subscribed before it returns, so no
    /// change after startup is missed; the streams are then followed by a task.
    pub async fn follow_changes(self: Arc<Self>) -> Result<()> {
        let subscribe = |e: zbus::Error| Error::Internal(format!("bus signal subscription: {e}"));
        let mut polkit_changed = self.polkit.receive_changed().await.map_err(subscribe)?;
        let mut owners = self
            .bus
            .receive_name_owner_changed()
            .await
            .map_err(subscribe)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(_) = polkit_changed.next() => {
                        tracing::debug!("polkit changed; remembered decisions dropped");
                        self.remembered.forget_decisions();
                    }
                    Some(signal) = owners.next() => {
                        let Ok(args) = signal.args() else { continue };
                        let name = args.name().as_str();
                        if name == POLKIT_NAME {
                            self.remembered.forget_decisions();
                        } else if args.new_owner().is_none() && name.starts_with(':') {
                            self.remembered.forget_caller(name);
                        }
                    }
                    else => break,
                }
            }
        });
        Ok(())
    }

    /// The kernel-attested uid of `sender`, asked of the bus once per connection.
    pub async fn caller_uid(&self, sender: &UniqueName<'_>) -> Result<u32> {
        if let Some(uid) = self.remembered.uid(sender) {
            return Ok(uid);
        }
        let uid = self
            .bus
            .get_connection_unix_user(BusName::from(sender.clone()))
            .await
            .map_err(|e| Error::Internal(format!("cannot identify caller {sender}: {e}")))?;
        self.remembered.remember_uid(sender, uid);
        Ok(uid)
    }

    /// Refuses every caller but the gateway's uid.
    pub async fn check_gateway(&self, sender: &UniqueName<'_>) -> Result<()> {
        let uid = self.caller_uid(sender).await?;
        if self.sessions.gateway_uid() == Some(uid) {
            Ok(())
        } else {
            Err(Error::NotAuthorized(format!(
                "only the gateway's user may open a gateway link, not uid {uid}"
            )))
        }
    }

    /// Identifies the caller (`sender` on the bus) and asks polkit whether it may
    /// perform `action`; `object` names the target (`[("kimchi.vm.name", "web01")]`)
    /// for targeted rules.
    pub async fn authorize(
        &self,
        sender: &UniqueName<'_>,
        opts: &CallOptions,
        action: Action,
        object: &[(&str, &str)],
    ) -> Result<()> {
        let uid = self.caller_uid(sender).await?;
        let caller = identify(
            self.sessions.store(),
            self.sessions.gateway_uid(),
            uid,
            opts,
        )?;
        let groups;
        let mut details: HashMap<&str, &str> = object.iter().copied().collect();
        let mut flags = CheckAuthorizationFlags::empty();
        match &caller {
            Caller::Web(info) => {
                groups = info.groups.join(",");
                details.insert("kimchi.web.user", &info.user);
                details.insert("kimchi.web.groups", &groups);
            }
            Caller::Direct { .. } => {
                if !opts.no_user_interaction {
                    flags |= CheckAuthorizationFlags::ALLOW_USER_INTERACTION;
                }
            }
        }
        let question = Question {
            subject: sender.to_string(),
            action: action.id(),
            details: details
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags.bits(),
        };
        if self.remembered.granted(&question) {
            return Ok(());
        }
        let epoch = self.remembered.epoch();
        // polkit's `system-bus-name` subject, named here rather than taken from a
        // message header: a call over the gateway's link carries none.
        let subject = (
            "system-bus-name",
            HashMap::from([("name", Variant::from(sender.as_str()))]),
        );
        let result: AuthorizationResult = self
            .polkit
            .inner()
            .call(
                "CheckAuthorization",
                &(subject, action.id(), &details, flags, ""),
            )
            .await
            .map_err(|e| Error::Polkit(e.to_string()))?;
        if result.is_authorized {
            self.remembered.remember_grant(epoch, question);
            return Ok(());
        }
        let who = match &caller {
            Caller::Web(info) => format!("user '{}'", info.user),
            Caller::Direct { uid } => format!("uid {uid}"),
        };
        let hint = if result.is_challenge {
            " (authentication required; no agent answered)"
        } else {
            ""
        };
        Err(Error::NotAuthorized(format!(
            "{who} is not allowed to perform {}{hint}",
            action.id()
        )))
    }
}

/// Sessions are honoured only from the gateway, and the gateway acts only through
/// sessions: it has no authority of its own.
fn identify(
    sessions: &SessionStore,
    gateway_uid: Option<u32>,
    uid: u32,
    opts: &CallOptions,
) -> Result<Caller> {
    let from_gateway = gateway_uid == Some(uid);
    match (&opts.session, from_gateway) {
        (Some(token), true) => sessions.resolve(token).map(Caller::Web).ok_or_else(|| {
            Error::SessionInvalid("session expired or unknown; log in again".into())
        }),
        (Some(_), false) => Err(Error::NotAuthorized(
            "option kimchi.session is accepted only from the gateway".into(),
        )),
        (None, true) => Err(Error::SessionInvalid(
            "calls from the gateway must carry a web session".into(),
        )),
        (None, false) => Ok(Caller::Direct { uid }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::assert_error;

    const GW: u32 = 990;
    const ONLY_FROM_THE_GATEWAY: &str = "option kimchi.session is accepted only from the gateway";

    fn store_with(user: &str) -> (SessionStore, String) {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        let token = store.create(SessionInfo {
            user: user.into(),
            uid: 1001,
            groups: vec!["kimchi-users".into()],
        });
        (store, token)
    }

    fn with_session(token: &str) -> CallOptions {
        CallOptions {
            session: Some(token.into()),
            ..CallOptions::default()
        }
    }

    #[test]
    fn gateway_with_valid_session_acts_as_the_web_user() {
        let (store, token) = store_with("bob");
        let caller = identify(&store, Some(GW), GW, &with_session(&token)).unwrap();
        assert!(matches!(caller, Caller::Web(info) if info.user == "bob"));
    }

    #[test]
    fn session_from_another_uid_is_refused_even_if_valid() {
        let (store, token) = store_with("bob");
        assert_error!(
            identify(&store, Some(GW), 0, &with_session(&token)),
            NotAuthorized,
            ONLY_FROM_THE_GATEWAY
        );
    }

    #[test]
    fn gateway_without_session_has_no_authority() {
        let (store, _) = store_with("bob");
        assert_error!(
            identify(&store, Some(GW), GW, &CallOptions::default()),
            SessionInvalid,
            "calls from the gateway must carry a web session"
        );
    }

    #[test]
    fn gateway_with_unknown_session_is_session_invalid() {
        let (store, _) = store_with("bob");
        assert_error!(
            identify(&store, Some(GW), GW, &with_session("forged")),
            SessionInvalid,
            "session expired or unknown; log in again"
        );
    }

    #[test]
    fn direct_caller_is_judged_as_itself() {
        let (store, _) = store_with("bob");
        let caller = identify(&store, Some(GW), 0, &CallOptions::default()).unwrap();
        assert_eq!(caller, Caller::Direct { uid: 0 });
    }

    #[test]
    fn without_a_gateway_user_no_session_is_honoured() {
        let (store, token) = store_with("bob");
        assert_error!(
            identify(&store, None, GW, &with_session(&token)),
            NotAuthorized,
            ONLY_FROM_THE_GATEWAY
        );
    }
}
