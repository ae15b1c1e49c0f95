//! Names held while work on them runs (a VM being created, a volume being wiped), so
//! a second request for the same name is refused up front instead of failing inside
//! libvirt halfway.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

type Held<K> = Arc<Mutex<HashSet<K>>>;

pub struct Claims<K: Hash + Eq> {
    held: Held<K>,
}

/// Holds its key until dropped.
pub struct Claim<K: Hash + Eq> {
    held: Held<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Claims<K> {
    pub fn new() -> Self {
        Claims {
            held: Arc::default(),
        }
    }

    /// Claims the key `choose` picks, seeing what is held now; nothing else can claim
    /// meanwhile, so the choice and the claim are one step.
    pub fn claim_with<E>(
        &self,
        choose: impl FnOnce(&HashSet<K>) -> Result<K, E>,
    ) -> Result<Claim<K>, E> {
        let mut held = self.held.lock().expect("claims lock poisoned");
        let key = choose(&held)?;
        held.insert(key.clone());
        Ok(Claim {
            held: self.held.clone(),
            key,
        })
    }

    /// Whether `key` is claimed now.
    pub fn holds(&self, key: &K) -> bool {
        self.held
            .lock()
            .expect("claims lock poisoned")
            .contains(key)
    }
}

impl<K: Hash + Eq> Claim<K> {
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq> Drop for Claim<K> {
    fn drop(&mut self) {
        self.held
            .lock()
            .expect("claims lock poisoned")
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(name: &str) -> impl FnOnce(&HashSet<String>) -> Result<String, String> + '_ {
        move |held| {
            if held.contains(name) {
                Err(format!("{name} is held"))
            } else {
                Ok(name.to_owned())
            }
        }
    }

    #[test]
    fn a_claimed_key_is_held_until_the_claim_drops() {
        let claims = Claims::new();
        let first = claims.claim_with(free("a")).unwrap();
        assert_eq!(first.key(), "a");
        assert_eq!(claims.claim_with(free("a")).err().unwrap(), "a is held");
        let other = claims.claim_with(free("b")).unwrap();
        assert!(claims.holds(&"a".to_owned()));
        drop(first);
        assert!(!claims.holds(&"a".to_owned()));
        assert_eq!(claims.claim_with(free("a")).unwrap().key(), "a");
        assert_eq!(other.key(), "b");
    }
}
