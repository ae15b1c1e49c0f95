//! Web sessions: opaque tokens minted after a PAM login. Only a SHA-256 of each token
//! is kept, so a memory dump of kimchid does not hand out live sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kimchi_dbus::SessionInfo;
use rand::RngCore;
use sha2::{Digest, Sha256};

type TokenHash = [u8; 32];

struct Session {
    info: SessionInfo,
    created: Instant,
    last_used: Instant,
}

pub struct SessionStore {
    sessions: Mutex<HashMap<TokenHash, Session>>,
    idle_timeout: Duration,
    max_lifetime: Duration,
}

impl SessionStore {
    pub fn new(idle_timeout: Duration, max_lifetime: Duration) -> Self {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle_timeout,
            max_lifetime,
        }
    }

    /// Mints a token for `info`; the token itself is returned once and never stored.
    pub fn create(&self, info: SessionInfo) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("session lock poisoned");
        sessions.retain(|_, s| !self.expired(s, now));
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
        let mut sessions = self.sessions.lock().expect("session lock poisoned");
        let session = sessions.get_mut(&key)?;
        if self.expired(session, now) {
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

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) > self.idle_timeout
            || now.duration_since(s.created) > self.max_lifetime
    }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> SessionInfo {
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
    fn unknown_token_is_rejected() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(600));
        store.create(alice());
        assert_eq!(store.resolve("forged"), None);
    }
}
