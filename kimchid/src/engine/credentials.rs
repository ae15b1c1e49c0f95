//! Credentials PAM accepted a moment ago, so that HTTP Basic (a login per request)
//! does not run a PAM transaction per request. Only a salted SHA-256 of the user and
//! password is kept (the salt is random per process), for seconds; a refused password
//! for a user forgets that user's entry at once, and concurrent logins with the same
//! credentials share one PAM transaction instead of queueing for one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kimchi_dbus::SessionInfo;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a verified password stands without asking PAM again: a changed password or
/// locked account counts after this long at most.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(10);
/// Bound on remembered users; beyond it everything is forgotten.
const CAPACITY: usize = 1024;

type Digest32 = [u8; 32];

pub struct Credentials {
    salt: [u8; 32],
    verified: Mutex<HashMap<String, Verified>>,
    /// One lock per credential being checked right now (by digest), shared by the
    /// logins that present it; gone when the last of them is done.
    checks: Mutex<HashMap<Digest32, Arc<tokio::sync::Mutex<()>>>>,
}

struct Verified {
    digest: Digest32,
    info: SessionInfo,
    at: Instant,
}

/// Held while PAM checks one credential; others presenting it wait for the outcome.
pub struct Check<'a> {
    credentials: &'a Credentials,
    digest: Digest32,
    turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Default for Credentials {
    fn default() -> Self {
        let mut salt = [0u8; 32];
        rand::rng().fill_bytes(&mut salt);
        Credentials {
            salt,
            verified: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
        }
    }
}

impl Credentials {
    /// The identity PAM gave for exactly these credentials, if that was less than
    /// [`CREDENTIAL_LIFETIME`] ago.
    pub fn recall(&self, user: &str, password: &str) -> Option<SessionInfo> {
        self.recall_at(user, password, Instant::now())
    }

    fn recall_at(&self, user: &str, password: &str, now: Instant) -> Option<SessionInfo> {
        let digest = self.digest(user, password);
        let mut verified = self.verified.lock().expect("credentials lock poisoned");
        let entry = verified.get(user)?;
        if now.duration_since(entry.at) >= CREDENTIAL_LIFETIME {
            verified.remove(user);
            return None;
        }
        // A plain comparison: the digests are keyed by a secret salt, so how long it
        // takes tells nothing about the password.
        (entry.digest == digest).then(|| entry.info.clone())
    }

    /// Waits for any check of the same credentials in progress, then holds the turn:
    /// the caller recalls again before asking PAM itself.
    pub async fn check(&self, user: &str, password: &str) -> Check<'_> {
        let digest = self.digest(user, password);
        let lock = self
            .checks
            .lock()
            .expect("credentials lock poisoned")
            .entry(digest)
            .or_default()
            .clone();
        Check {
            credentials: self,
            digest,
            turn: lock.lock_owned().await,
        }
    }

    /// PAM accepted these credentials.
    pub fn remember(&self, user: &str, password: &str, info: SessionInfo) {
        let digest = self.digest(user, password);
        let mut verified = self.verified.lock().expect("credentials lock poisoned");
        if verified.len() >= CAPACITY {
            verified.clear();
        }
        verified.insert(
            user.to_owned(),
            Verified {
                digest,
                info,
                at: Instant::now(),
            },
        );
    }

    /// PAM refused a password for `user`: nothing about the user is taken on trust.
    pub fn forget(&self, user: &str) {
        self.verified
            .lock()
            .expect("credentials lock poisoned")
            .remove(user);
    }

    fn digest(&self, user: &str, password: &str) -> Digest32 {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update((user.len() as u64).to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }
}

impl Drop for Check<'_> {
    fn drop(&mut self) {
        let mut checks = self
            .credentials
            .checks
            .lock()
            .expect("credentials lock poisoned");
        // The map's reference and ours: nobody else is waiting on this credential.
        if Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&self.turn)) == 2 {
            checks.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::engine::sessions::tests::alice;

    #[test]
    fn only_the_same_password_is_recalled_and_only_for_a_while() {
        let credentials = Credentials::default();
        assert_eq!(credentials.recall("alice", "pw"), None);
        credentials.remember("alice", "pw", alice());
        assert_eq!(credentials.recall("alice", "pw"), Some(alice()));
        assert_eq!(credentials.recall("alice", "pW"), None);
        assert_eq!(credentials.recall("alicepw", ""), None);
        let later = Instant::now() + CREDENTIAL_LIFETIME;
        assert_eq!(credentials.recall_at("alice", "pw", later), None);
        assert_eq!(
            credentials.recall("alice", "pw"),
            None,
            "expired entry dropped"
        );
    }

    #[test]
    fn a_refusal_forgets_the_user() {
        let credentials = Credentials::default();
        credentials.remember("alice", "pw", alice());
        credentials.forget("alice");
        assert_eq!(credentials.recall("alice", "pw"), None);
    }

    #[test]
    fn no_password_is_kept() {
        let credentials = Credentials::default();
        credentials.remember("alice", "secret-password", alice());
        let verified = credentials.verified.lock().unwrap();
        let entry = &verified["alice"];
        let plain: Digest32 = Sha256::digest(b"secret-password").into();
        assert_ne!(entry.digest, plain);
        assert!(!entry
            .digest
            .windows(b"secret".len())
            .any(|w| w == b"secret"));
        let other = Credentials::default();
        assert_ne!(
            entry.digest,
            other.digest("alice", "secret-password"),
            "salted per process"
        );
    }

    #[tokio::test]
    async fn logins_with_one_credential_take_turns_and_leave_nothing_behind() {
        let credentials = Credentials::default();
        let first = credentials.check("alice", "pw").await;
        let second = credentials.check("alice", "pw");
        tokio::pin!(second);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "waits for the first check"
        );
        let other = credentials.check("alice", "other").await;
        drop(other);
        drop(first);
        let second = second.await;
        drop(second);
        assert!(credentials.checks.lock().unwrap().is_empty());
    }
}
