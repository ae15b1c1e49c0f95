//! Failed logins slow down the address and the user name they come from, answered at
//! once (429 with `Retry-After`) so that a throttled client holds no PAM slot in
//! kimchid and nothing waits on its behalf.
//!
//! Two counters judge each password check (`POST /login`, HTTP Basic anywhere):
//! - the client address (IPv6 by its /64, which one host is usually given), so a
//!   burst that cycles through user names is throttled too;
//! - the user name *at that address*, so a user's own mistakes slow them down early,
//!   while someone failing for alice elsewhere never throttles alice here.
//!
//! There is deliberately no counter per user name alone: it would let anyone lock a
//! user out. Guessing one user's password from many addresses is slowed by PAM's own
//! delay on each refusal (kimchid, outside its PAM slots) and by kimchid's bound on
//! concurrent PAM checks.
//!
//! Attempts count as failures as soon as they start, so a burst of concurrent requests
//! is judged before any of them has an answer; an attempt that ends in success takes
//! its count back and clears its user-at-address counter, and one that ends without a
//! verdict (kimchid unreachable) takes its counts back. A success does not clear the
//! address's failures: one valid account must not launder guesses at others. Counters
//! are forgotten [`Policy::forget_after`] after their last failure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kimchi_dbus::SessionInfo;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::kimchid::Kimchid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures of one user name from one address before any delay.
    pub user_free: u32,
    /// Failures from one address (any user names) before any delay.
    pub address_free: u32,
    /// Delay after the first failure beyond the free ones; it doubles with each more.
    pub first_delay: Duration,
    /// Cap of the delay.
    pub max_delay: Duration,
    /// A counter is forgotten this long after its last failure.
    pub forget_after: Duration,
    /// Counters kept at most; beyond it the least recently failed go first.
    pub capacity: usize,
}

impl Default for Policy {
    /// A person mistyping is not slowed down, a script is slowed to one guess a
    /// minute per address within a few minutes: 5 free failures per user and
    /// address, 20 per address, then 1 s, 2 s, 4 s … up to 60 s between attempts,
    /// forgotten 10 minutes after the last failure; 65,536 counters (a few MiB).
    fn default() -> Self {
        Policy {
            user_free: 5,
            address_free: 20,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            capacity: 65_536,
        }
    }
}

/// The address part of a key: IPv4 (also when it arrives IPv4-mapped on the dual-stack
/// socket) or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Source(IpAddr);

impl Source {
    fn of(peer: IpAddr) -> Source {
        match peer.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Source(v4),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(Source),
    /// The user name as a digest, so that a long name costs no more memory.
    User(Source, [u8; 16]),
}

impl Key {
    fn free(self, policy: &Policy) -> u32 {
        match self {
            Key::Address(_) => policy.address_free,
            Key::User(..) => policy.user_free,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

impl Entry {
    /// When the next attempt may come, if it has to wait.
    fn blocked_until(&self, free: u32, policy: &Policy) -> Option<Instant> {
        let beyond = self.failures.checked_sub(free).filter(|n| *n > 0)?;
        Some(self.last + delay(beyond, policy))
    }
}

/// The wait after the `n`th failure beyond the free ones (n ≥ 1).
fn delay(n: u32, policy: &Policy) -> Duration {
    let doublings = (n - 1).min(31);
    policy
        .first_delay
        .saturating_mul(1 << doublings)
        .min(policy.max_delay)
}

#[derive(Debug, Default)]
pub struct Throttle {
    policy: Policy,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// A password check under way; dropped without [`Attempt::settle`], it stays counted
/// as a failure (a client that hangs up does not get its attempt back).
#[must_use]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    /// Each key with the time of its failure before this attempt, to put back if this
    /// attempt is taken back and nothing came after it.
    keys: [(Key, Instant); 2],
    at: Instant,
}

impl Throttle {
    #[cfg(test)]
    fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            entries: Mutex::default(),
        }
    }

    /// Opens a session with kimchid (PAM checks the password) unless `peer` or `user`
    /// at it must wait; every password the gateway passes on goes through here.
    pub async fn login(
        &self,
        kimchid: &Kimchid,
        peer: IpAddr,
        user: &str,
        password: &str,
        request_id: &str,
    ) -> Result<(String, SessionInfo), Error> {
        let attempt = self.begin(peer, user)?;
        let outcome = kimchid.login(user, password, request_id).await;
        attempt.settle(&outcome);
        outcome
    }

    /// Counts a password check of `user` from `peer`, or says how long to wait
    /// ([`Error::Throttled`]).
    pub fn begin(&self, peer: IpAddr, user: &str) -> Result<Attempt<'_>, Error> {
        self.begin_at(peer, user, Instant::now())
            .map_err(|retry_after| Error::Throttled { retry_after })
    }

    fn begin_at(&self, peer: IpAddr, user: &str, now: Instant) -> Result<Attempt<'_>, Duration> {
        let source = Source::of(peer);
        let digest: [u8; 32] = Sha256::digest(user.as_bytes()).into();
        let user_key = Key::User(source, digest[..16].try_into().expect("16 bytes"));
        let keys = [Key::Address(source), user_key];
        let policy = &self.policy;
        let mut entries = self.entries.lock().expect("throttle lock poisoned");
        let mut wait = Duration::ZERO;
        for key in keys {
            let Some(entry) = entries.get(&key) else {
                continue;
            };
            if now.duration_since(entry.last) >= policy.forget_after {
                entries.remove(&key);
            } else if let Some(until) = entry.blocked_until(key.free(policy), policy) {
                wait = wait.max(until.saturating_duration_since(now));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        self.make_room(&mut entries, now);
        let before = keys.map(|key| {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            let previous = entry.last;
            entry.failures += 1;
            entry.last = now;
            (key, previous)
        });
        Ok(Attempt {
            throttle: self,
            keys: before,
            at: now,
        })
    }

    /// Room for the two counters of a new attempt: expired ones go, then the least
    /// recently failed.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, now: Instant) {
        let policy = &self.policy;
        if entries.len() + 2 <= policy.capacity {
            return;
        }
        entries.retain(|_, e| now.duration_since(e.last) < policy.forget_after);
        while entries.len() + 2 > policy.capacity {
            let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) else {
                return;
            };
            entries.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

impl Attempt<'_> {
    /// Records how the check ended: refused passwords stay counted, a success clears
    /// the user's counter at this address, anything else (no verdict) is taken back.
    pub fn settle<T>(self, outcome: &Result<T, Error>) {
        match outcome {
            Err(Error::Kimchid(kimchi_dbus::Error::AuthenticationFailed(_))) => {}
            Ok(_) => self.take_back(true),
            Err(_) => self.take_back(false),
        }
    }

    fn take_back(self, succeeded: bool) {
        let mut entries = self
            .throttle
            .entries
            .lock()
            .expect("throttle lock poisoned");
        for (key, previous) in self.keys {
            if succeeded && matches!(key, Key::User(..)) {
                entries.remove(&key);
                continue;
            }
            let Some(entry) = entries.get_mut(&key) else {
                continue;
            };
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures == 0 {
                entries.remove(&key);
            } else if entry.last == self.at {
                entry.last = previous;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn policy() -> Policy {
        Policy {
            user_free: 2,
            address_free: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(100),
            capacity: 64,
        }
    }

    fn refused() -> Result<(), Error> {
        Err(Error::Kimchid(kimchi_dbus::Error::AuthenticationFailed(
            "no".into(),
        )))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// `n` refused attempts at `at`; panics if one is throttled.
    fn fail(t: &Throttle, peer: IpAddr, user: &str, at: Instant, n: u32) {
        for i in 0..n {
            let attempt = t
                .begin_at(peer, user, at)
                .unwrap_or_else(|w| panic!("attempt {i} throttled for {w:?}"));
            attempt.settle(&refused());
        }
    }

    #[test]
    fn delays_start_after_the_free_failures_double_and_are_capped() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 2);
        // The third failure is counted and makes the next attempt wait 1 s.
        fail(&t, A, "alice", now, 1);
        assert_eq!(t.begin_at(A, "alice", now).err(), Some(secs(1)));
        let mut at = now;
        for expected in [2, 4, 8, 8, 8] {
            at += secs(8);
            fail(&t, A, "alice", at, 1);
            assert_eq!(t.begin_at(A, "alice", at).err(), Some(secs(expected)));
        }
        // Half way through the wait, the rest of it is asked.
        assert_eq!(t.begin_at(A, "alice", at + secs(3)).err(), Some(secs(5)));
        assert!(t.begin_at(A, "alice", at + secs(8)).is_ok());
    }

    #[test]
    fn a_concurrent_burst_is_judged_before_any_answer() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        // 50 checks started at once, none answered yet.
        let started: Vec<_> = (0..50).map(|_| t.begin_at(A, "alice", now)).collect();
        let passed = started.iter().filter(|r| r.is_ok()).count();
        assert_eq!(passed, 3, "the free ones and the one that starts the delay");
        assert!(started
            .iter()
            .skip(3)
            .all(|r| r.as_ref().err() == Some(&secs(1))));
        for attempt in started.into_iter().flatten() {
            attempt.settle(&refused());
        }
        assert_eq!(t.begin_at(A, "alice", now).err(), Some(secs(1)));
    }

    #[test]
    fn cycling_user_names_is_throttled_per_address() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for i in 0..5 {
            fail(&t, A, &format!("user{i}"), now, 1);
        }
        assert_eq!(t.begin_at(A, "user99", now).err(), Some(secs(1)));
        // Another address is not concerned.
        assert!(t.begin_at(B, "user99", now).is_ok());
    }

    #[test]
    fn failures_for_a_user_elsewhere_do_not_throttle_that_user_here() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 3);
        assert!(t.begin_at(A, "alice", now).is_err());
        let attempt = t.begin_at(B, "alice", now).expect("alice from B is free");
        attempt.settle(&Ok(()));
    }

    #[test]
    fn success_clears_the_users_counter_but_not_the_addresss_failures() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 2);
        t.begin_at(A, "alice", now).unwrap().settle(&Ok(()));
        // Two more failures for alice are free again…
        fail(&t, A, "alice", now, 2);
        // …and the address has counted the four failures: the next one starts its delay.
        fail(&t, A, "bob", now, 1);
        assert_eq!(t.begin_at(A, "carol", now).err(), Some(secs(1)));
    }

    #[test]
    fn a_success_does_not_make_others_wait_longer() {
        let t = Throttle::new(policy());
        let start = Instant::now();
        fail(&t, A, "u1", start, 1);
        fail(&t, A, "u2", start, 1);
        fail(&t, A, "u3", start, 1);
        fail(&t, A, "u4", start, 1);
        fail(&t, A, "u5", start, 1);
        assert_eq!(t.begin_at(A, "alice", start).err(), Some(secs(1)));
        // alice logs in once the wait is over; the address's clock is not restarted.
        let later = start + secs(1);
        t.begin_at(A, "alice", later).unwrap().settle(&Ok(()));
        assert!(t.begin_at(A, "bob", later).is_ok());
    }

    #[test]
    fn no_verdict_takes_the_attempt_back() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        let unreachable = Err::<(), _>(Error::BadReply("x".into()));
        for _ in 0..10 {
            t.begin_at(A, "alice", now).unwrap().settle(&unreachable);
        }
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn an_abandoned_attempt_stays_counted() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            drop(t.begin_at(A, "alice", now).unwrap());
        }
        assert_eq!(t.begin_at(A, "alice", now).err(), Some(secs(1)));
    }

    #[test]
    fn counters_are_forgotten_after_a_quiet_while() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 3);
        let later = now + secs(100);
        // Forgotten: two free failures again before the delay starts over at 1 s.
        fail(&t, A, "alice", later, 3);
        assert_eq!(t.begin_at(A, "alice", later).err(), Some(secs(1)));
    }

    #[test]
    fn memory_is_bounded_and_the_least_recent_go_first() {
        let t = Throttle::new(policy());
        let start = Instant::now();
        fail(&t, A, "alice", start, 3);
        for i in 0..100u8 {
            let peer = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
            fail(&t, peer, "x", start + secs(1 + u64::from(i) / 10), 1);
        }
        assert!(t.len() <= 64, "{}", t.len());
        assert!(t.begin_at(A, "alice", start + secs(11)).is_ok(), "evicted");
    }

    #[test]
    fn ipv4_mapped_and_one_ipv6_64_are_one_address() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(A));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_ne!(Source::of(A), Source::of(B));
    }

    #[test]
    fn throttled_is_429_with_the_wait_in_whole_seconds() {
        let t = Throttle::new(policy());
        fail(&t, A, "alice", Instant::now(), 3);
        let err = t.begin(A, "alice").err().expect("throttled");
        assert_eq!(err.status().as_u16(), 429);
        assert!(matches!(err, Error::Throttled { retry_after } if retry_after <= secs(1)));
    }
}
