//! Web sessions: who may log in, PAM logins (a bounded number at once), and opaque
//! tokens minted after them. Only a SHA-256 of each token is kept, so a memory dump
//! of kimchid does not hand out live sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kimchi_dbus::SessionInfo;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::credentials::Credentials;
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::pam::{self, Verdict};

/// PAM logins running at once; more wait their turn. Each holds a blocking thread
/// while PAM checks (PAM's failure delay is waited out after the slot is given back),
/// so this bounds threads and memory under a burst of password guessing; Basic-auth
/// requests with a remembered password take none.
const CONCURRENT_LOGINS: usize = 16;

/// The login service: sessions exist for the gateway; root may log in too (for
/// administration scripts); nobody else gets to try passwords through kimchid.
pub struct Sessions {
    store: SessionStore,
    credentials: Credentials,
    logins: Semaphore,
    gateway_uid: Option<u32>,
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration, gateway_uid: Option<u32>) -> Self {
        Sessions {
            store: SessionStore::new(idle, max),
            credentials: Credentials::default(),
            logins: Semaphore::new(CONCURRENT_LOGINS),
            gateway_uid,
        }
    }

    pub fn store(&self) -> &SessionStore {
        &self.store
    }

    /// The uid whose calls must carry a web session (and only whose may).
    pub fn gateway_uid(&self) -> Option<u32> {
        self.gateway_uid
    }

    fn check_caller(&self, caller_uid: u32) -> Result<()> {
        if caller_uid == 0 || self.gateway_uid == Some(caller_uid) {
            Ok(())
        } else {
            Err(Error::NotAuthorized(format!(
                "uid {caller_uid} may not open web sessions"
            )))
        }
    }

    /// Checks the password with PAM (service `kimchi`), unless PAM accepted the same
    /// one seconds ago, and mints a token.
    pub async fn login(
        &self,
        caller_uid: u32,
        user: String,
        password: String,
    ) -> Result<(String, SessionInfo)> {
        self.check_caller(caller_uid)?;
        let info = match self.credentials.recall(&user, &password) {
            Some(info) => info,
            None => self.verify(user, password).await?,
        };
        tracing::debug!(user = %info.user, groups = ?info.groups, "web session opened");
        Ok((self.store.create(info.clone()), info))
    }

    async fn verify(&self, user: String, password: String) -> Result<SessionInfo> {
        let check = self.credentials.check(&user, &password).await;
        if let Some(info) = self.credentials.recall(&user, &password) {
            return Ok(info);
        }
        let turn = self
            .logins
            .acquire()
            .await
            .map_err(|_| Error::Internal("login queue closed".into()))?;
        let (who, secret) = (user.clone(), password.clone());
        let verdict = tokio::task::spawn_blocking(move || pam::login(&who, &secret))
            .await
            .map_err(|e| Error::Internal(format!("PAM task failed: {e}")))??;
        drop(turn);
        match verdict {
            Verdict::Accepted(info) => {
                tracing::info!(user = %info.user, groups = ?info.groups, "PAM accepted a login");
                self.credentials.remember(&user, &password, info.clone());
                Ok(info)
            }
            Verdict::Refused { delay } => {
                self.credentials.forget(&user);
                drop(check);
                // PAM's failure delay, holding nothing: guessing stays slow for every
                // caller (root on the bus too) while other logins go on.
                tokio::time::sleep(delay).await;
                Err(Error::AuthenticationFailed(format!(
                    "authentication failed for user '{}'",
                    excerpt(&user)
                )))
            }
        }
    }

    /// Ends the session of `token`; unknown tokens are not an error (logout is
    /// idempotent).
    pub fn logout(&self, caller_uid: u32, token: &str) -> Result<()> {
        self.check_caller(caller_uid)?;
        self.store.remove(token);
        Ok(())
    }
}

type TokenHash = [u8; 32];

struct Session {
    info: SessionInfo,
    created: Instant,
    last_used: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    idle: Duration,
    max: Duration,
}

pub struct SessionStore {
    sessions: Mutex<HashMap<TokenHash, Session>>,
    lifetimes: Mutex<Lifetimes>,
}

impl SessionStore {
    pub fn new(idle: Duration, max: Duration) -> Self {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            lifetimes: Mutex::new(Lifetimes { idle, max }),
        }
    }

    /// New lifetimes apply to existing sessions too (a reload can shorten them).
    pub fn set_lifetimes(&self, idle: Duration, max: Duration) {
        *self.lifetimes.lock().expect("session lock poisoned") = Lifetimes { idle, max };
    }

    /// Mints a token for `info`; the token itself is returned once and never stored.
    pub fn create(&self, info: SessionInfo) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = Instant::now();
        let lifetimes = self.lifetimes();
        let mut sessions = self.sessions.lock().expect("session lock poisoned");
        sessions.retain(|_, s| !s.expired(lifetimes, now));
        sessions.insert(
            hash(&token),
            Session {
                info,
                created: now,
                last_used: now,
            },
        );
        token
    }

    /// The identity behind `token`, refreshing its idle timer; `None` when unknown or
    /// expired (an expired session is dropped on the spot).
    pub fn resolve(&self, token: &str) -> Option<SessionInfo> {
        self.resolve_at(token, Instant::now())
    }

    fn resolve_at(&self, token: &str, now: Instant) -> Option<SessionInfo> {
        let key = hash(token);
        let lifetimes = self.lifetimes();
        let mut sessions = self.sessions.lock().expect("session lock poisoned");
        let session = sessions.get_mut(&key)?;
        if session.expired(lifetimes, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.info.clone())
    }

    /// Ends the session; true when there was one.
    pub fn remove(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .expect("session lock poisoned")
            .remove(&hash(token))
            .is_some()
    }

    fn lifetimes(&self) -> Lifetimes {
        *self.lifetimes.lock().expect("session lock poisoned")
    }
}

impl Session {
    fn expired(&self, lifetimes: Lifetimes, now: Instant) -> bool {
        now.duration_since(self.last_used) > lifetimes.idle
            || now.duration_since(self.created) > lifetimes.max
    }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::assert_error;

    const GW: u32 = 990;

    fn service() -> Sessions {
        Sessions::new(Duration::from_secs(60), Duration::from_secs(600), Some(GW))
    }

    #[tokio::test]
    async fn other_users_may_not_try_passwords() {
        assert_error!(
            service().login(1000, "alice".into(), "guess".into()).await,
            NotAuthorized,
            "uid 1000 may not open web sessions"
        );
    }

    #[test]
    fn logout_is_for_the_gateway_and_root_and_idempotent() {
        let sessions = service();
        let token = sessions.store().create(alice());
        assert_error!(
            sessions.logout(1000, &token),
            NotAuthorized,
            "uid 1000 may not open web sessions"
        );
        assert_eq!(sessions.store().resolve(&token), Some(alice()));
        sessions.logout(GW, &token).unwrap();
        assert_eq!(sessions.store().resolve(&token), None);
        sessions.logout(0, &token).unwrap();
    }

    pub(in crate::engine) fn alice() -> SessionInfo {
        SessionInfo {
            user: "alice".into(),
            uid: 1000,
            groups: vec!["kimchi-admin".into()],
        }
    }

    #[test]
    fn token_resolves_until_logout() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        let token = store.create(alice());
        assert_eq!(token.len(), 64);
        assert_eq!(store.resolve(&token), Some(alice()));
        assert!(store.remove(&token));
        assert_eq!(store.resolve(&token), None);
        assert!(!store.remove(&token));
    }

    #[test]
    fn only_hashes_are_stored() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        let token = store.create(alice());
        let sessions = store.sessions.lock().unwrap();
        assert!(sessions.contains_key(&hash(&token)));
        assert!(!sessions.keys().any(|k| hex::encode(k) == token));
    }

    #[test]
    fn idle_session_expires() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        let token = store.create(alice());
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(store.resolve_at(&token, later), None);
        assert_eq!(store.resolve(&token), None, "expired session is dropped");
    }

    #[test]
    fn busy_session_still_ends_at_max_lifetime() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(100));
        let token = store.create(alice());
        let start = Instant::now();
        for step in 1..=3 {
            let t = start + Duration::from_secs(step * 30);
            assert!(store.resolve_at(&token, t).is_some(), "step {step}");
        }
        assert_eq!(
            store.resolve_at(&token, start + Duration::from_secs(120)),
            None
        );
    }

    #[test]
    fn shortened_lifetime_applies_to_existing_sessions() {
        let store = SessionStore::new(Duration::from_secs(600), Duration::from_secs(6000));
        let token = store.create(alice());
        store.set_lifetimes(Duration::from_secs(10), Duration::from_secs(6000));
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(store.resolve_at(&token, later), None);
    }

    #[test]
    fn unknown_token_is_rejected() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        store.create(alice());
        assert_eq!(store.resolve("forged"), None);
    }
}
