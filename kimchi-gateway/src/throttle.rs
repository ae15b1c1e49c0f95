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
//! Checks under way are counted by distinct credentials (a salted digest of user and
//! password, kept only while the check runs): a script's concurrent Basic calls with
//! one password are one check (kimchid runs one PAM transaction for them too), a burst
//! of guesses is many. An address has at most [`Policy::max_in_flight`] distinct ones
//! under way; once a counter has a failure on record, the ones under way count as
//! failures to come, so a burst started when a delay ends gets one guess through.
//!
//! A success clears the user's counter at that address but not the address's
//! failures: one valid account must not launder guesses at others. A check that ends
//! without a verdict (kimchid unreachable) is not counted; one whose client hangs up
//! counts as a failure. Failures are forgiven one per [`Policy::forgive_every`] since
//! the last one, and a counter stops growing once its delay is at the cap: a steady
//! guesser gets one attempt per cap, and an address that stops failing is forgotten
//! within minutes (so a few typos per run, such as a test suite's, never add up).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kimchi_dbus::SessionInfo;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::kimchid::Kimchid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    /// Failures of one user name from one address before any delay.
    user_free: u32,
    /// Failures from one address (any user names) before any delay.
    address_free: u32,
    /// Delay after the first failure beyond the free ones; it doubles with each more.
    first_delay: Duration,
    /// Cap of the delay.
    max_delay: Duration,
    /// Distinct credentials from one address under check at once.
    max_in_flight: usize,
    /// One failure is forgiven per this much time since the last failure.
    forgive_every: Duration,
    /// Counters kept at most; beyond it the least recently used go first.
    capacity: usize,
}

impl Default for Policy {
    /// A person mistyping is not slowed down, a script is slowed to one guess a
    /// minute per address within a few minutes: 5 free failures per user and
    /// address, 20 per address, then 1 s, 2 s, 4 s … up to 60 s between attempts;
    /// 16 distinct credentials under check at once per address (as many PAM checks
    /// as kimchid runs); a failure forgiven per minute without one; 65,536 counters
    /// (a few MiB).
    fn default() -> Self {
        Policy {
            user_free: 5,
            address_free: 20,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_in_flight: 16,
            forgive_every: Duration::from_secs(60),
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

/// 128 bits of a SHA-256: names a user, or a credential under check.
type Digest16 = [u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(Source),
    /// The user name as a digest, so that a long name costs no more memory.
    User(Source, Digest16),
}

impl Key {
    fn free(self, policy: &Policy) -> u32 {
        match self {
            Key::Address(_) => policy.address_free,
            Key::User(..) => policy.user_free,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Failures as of `last_failure`; fewer count later (see [`Entry::failures`]).
    failures: u32,
    last_failure: Instant,
    /// Credentials under check, with how many checks of each.
    in_flight: HashMap<Digest16, u32>,
    /// The last attempt's start, or its failure: delays run from here.
    last: Instant,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            last_failure: now,
            in_flight: HashMap::new(),
            last: now,
        }
    }

    /// The failures that still count at `now`.
    fn failures(&self, now: Instant, policy: &Policy) -> u32 {
        let quiet = now.saturating_duration_since(self.last_failure);
        let forgiven = quiet.as_nanos() / policy.forgive_every.as_nanos().max(1);
        self.failures
            .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
    }

    /// Distinct credentials under check.
    fn pending(&self) -> u32 {
        u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX)
    }

    /// When an attempt with a credential not yet under check may start, if it has to
    /// wait.
    fn blocked_until(&self, free: u32, now: Instant, policy: &Policy) -> Option<Instant> {
        let failures = self.failures(now, policy);
        if failures == 0 {
            return None;
        }
        let counted = failures.saturating_add(self.pending());
        let beyond = counted.checked_sub(free).filter(|n| *n > 0)?;
        Some(self.last + delay(beyond, policy))
    }

    fn start(&mut self, credential: Digest16) {
        *self.in_flight.entry(credential).or_default() += 1;
    }

    fn end(&mut self, credential: Digest16) {
        if let Some(n) = self.in_flight.get_mut(&credential) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&credential);
            }
        }
    }

    fn failed(&mut self, free: u32, now: Instant, policy: &Policy) {
        let most = free + beyond_at_cap(policy);
        self.failures = (self.failures(now, policy) + 1).min(most);
        self.last_failure = now;
        self.last = self.last.max(now);
    }

    fn forgotten(&self, now: Instant, policy: &Policy) -> bool {
        self.in_flight.is_empty() && self.failures(now, policy) == 0
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

/// Failures beyond the free ones at which the delay reaches its cap; more are not
/// counted, so that forgiving starts at once when the failures stop.
fn beyond_at_cap(policy: &Policy) -> u32 {
    (1..32)
        .find(|n| delay(*n, policy) >= policy.max_delay)
        .unwrap_or(32)
}

/// Not `Debug`: the salt stays out of any log.
pub struct Throttle {
    policy: Policy,
    /// Keys the credential digests, so that they say nothing outside this process.
    salt: [u8; 32],
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Policy::default())
    }
}

/// How a password check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    /// kimchid gave no verdict on the password (unreachable, refused the caller).
    NoVerdict,
}

/// A password check under way; dropped without [`Attempt::settle`] (the client hung
/// up), it counts as a failure.
struct Attempt<'a> {
    throttle: &'a Throttle,
    credential: Digest16,
    /// Each key with its `last` before this attempt, put back when this attempt was
    /// no failure and nothing came after it.
    keys: [(Key, Instant); 2],
    at: Instant,
    settled: bool,
}

impl Throttle {
    fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            salt: rand::random(),
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
        let attempt = self.begin(peer, user, password)?;
        let outcome = kimchid.login(user, password, request_id).await;
        attempt.settle(&outcome);
        outcome
    }

    /// Counts a password check of `user` from `peer` as under way, or says how long
    /// to wait ([`Error::Throttled`]).
    fn begin(&self, peer: IpAddr, user: &str, password: &str) -> Result<Attempt<'_>, Error> {
        self.begin_at(peer, user, password, Instant::now())
            .map_err(|retry_after| Error::Throttled { retry_after })
    }

    fn begin_at(
        &self,
        peer: IpAddr,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let source = Source::of(peer);
        let keys = [Key::Address(source), Key::User(source, digest(&[user]))];
        let credential = digest(&[&hex::encode(self.salt), user, password]);
        let policy = &self.policy;
        let mut entries = self.entries.lock().expect("throttle lock poisoned");
        let mut wait = Duration::ZERO;
        for key in keys {
            let Some(entry) = entries.get(&key) else {
                continue;
            };
            if entry.forgotten(now, policy) {
                entries.remove(&key);
                continue;
            }
            // Another check of the very same credential adds no guess: it waits for
            // the same answer in kimchid.
            if entry.in_flight.contains_key(&credential) {
                continue;
            }
            if let Some(until) = entry.blocked_until(key.free(policy), now, policy) {
                wait = wait.max(until.saturating_duration_since(now));
            }
            if matches!(key, Key::Address(_)) && entry.in_flight.len() >= policy.max_in_flight {
                wait = wait.max(policy.first_delay);
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        self.make_room(&mut entries, now);
        let keys = keys.map(|key| {
            let entry = entries.entry(key).or_insert_with(|| Entry::new(now));
            let previous = entry.last;
            entry.start(credential);
            entry.last = now;
            (key, previous)
        });
        Ok(Attempt {
            throttle: self,
            credential,
            keys,
            at: now,
            settled: false,
        })
    }

    /// Room for the two counters of a new attempt: forgotten ones go, then the least
    /// recently used without checks under way.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, now: Instant) {
        let policy = &self.policy;
        if entries.len() + 2 <= policy.capacity {
            return;
        }
        entries.retain(|_, e| !e.forgotten(now, policy));
        while entries.len() + 2 > policy.capacity {
            let oldest = entries
                .iter()
                .filter(|(_, e)| e.in_flight.is_empty())
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else {
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

/// The first 128 bits of the SHA-256 of `parts`, each prefixed by its length.
fn digest(parts: &[&str]) -> Digest16 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize()[..16].try_into().expect("16 bytes")
}

impl Attempt<'_> {
    /// Records how the check ended: a refused password is a failure, a success
    /// clears the user's counter at this address, anything else is not counted.
    fn settle<T>(self, outcome: &Result<T, Error>) {
        let outcome = match outcome {
            Ok(_) => Outcome::Accepted,
            Err(Error::Kimchid(kimchi_dbus::Error::AuthenticationFailed(_))) => Outcome::Refused,
            Err(_) => Outcome::NoVerdict,
        };
        self.settle_at(outcome, Instant::now());
    }

    fn settle_at(mut self, outcome: Outcome, now: Instant) {
        self.finish(outcome, now);
    }

    fn finish(&mut self, outcome: Outcome, now: Instant) {
        self.settled = true;
        let policy = &self.throttle.policy;
        let mut entries = self
            .throttle
            .entries
            .lock()
            .expect("throttle lock poisoned");
        for (key, previous) in self.keys {
            // Evicted meanwhile (only under a flood of new addresses): start anew.
            let entry = entries.entry(key).or_insert_with(|| Entry::new(now));
            entry.end(self.credential);
            match outcome {
                Outcome::Refused => entry.failed(key.free(policy), now, policy),
                Outcome::Accepted | Outcome::NoVerdict => {
                    if outcome == Outcome::Accepted && matches!(key, Key::User(..)) {
                        entry.failures = 0;
                    }
                    if entry.last == self.at {
                        entry.last = previous;
                    }
                }
            }
            if entry.forgotten(now, policy) {
                entries.remove(&key);
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.finish(Outcome::Refused, Instant::now());
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
            max_in_flight: 3,
            forgive_every: Duration::from_secs(100),
            capacity: 64,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// `n` refused attempts at `at`, one after the other; panics if one is throttled.
    fn fail(t: &Throttle, peer: IpAddr, user: &str, at: Instant, n: u32) {
        for i in 0..n {
            let attempt = t
                .begin_at(peer, user, "pw", at)
                .unwrap_or_else(|w| panic!("attempt {i} throttled for {w:?}"));
            attempt.settle_at(Outcome::Refused, at);
        }
    }

    fn succeed(t: &Throttle, peer: IpAddr, user: &str, at: Instant) {
        let attempt = t
            .begin_at(peer, user, "pw", at)
            .unwrap_or_else(|w| panic!("throttled for {w:?}"));
        attempt.settle_at(Outcome::Accepted, at);
    }

    #[test]
    fn delays_start_after_the_free_failures_double_and_are_capped() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 2);
        let free = t
            .begin_at(A, "alice", "pw", now)
            .expect("two failures are free");
        free.settle_at(Outcome::NoVerdict, now);
        // The third failure makes the next attempt wait 1 s.
        fail(&t, A, "alice", now, 1);
        assert_eq!(t.begin_at(A, "alice", "pw", now).err(), Some(secs(1)));
        let mut at = now;
        for expected in [2, 4, 8, 8, 8] {
            at += secs(8);
            fail(&t, A, "alice", at, 1);
            assert_eq!(t.begin_at(A, "alice", "pw", at).err(), Some(secs(expected)));
        }
        // Part of the way through the wait, the rest of it is asked.
        assert_eq!(
            t.begin_at(A, "alice", "pw", at + secs(3)).err(),
            Some(secs(5))
        );
        assert!(t.begin_at(A, "alice", "pw", at + secs(8)).is_ok());
    }

    #[test]
    fn a_concurrent_burst_gets_the_in_flight_bound_then_one_attempt_per_delay() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        // 50 guesses started at once, none answered yet.
        let mut started: Vec<_> = (0..50)
            .map(|i| t.begin_at(A, "alice", &format!("guess{i}"), now))
            .collect();
        let refused = started.split_off(3);
        assert!(started.iter().all(Result::is_ok));
        assert!(refused.iter().all(|r| r.as_ref().err() == Some(&secs(1))));
        for attempt in started.into_iter().flatten() {
            attempt.settle_at(Outcome::Refused, now);
        }
        assert_eq!(t.begin_at(A, "alice", "pw", now).err(), Some(secs(1)));
        // When the delay is over, a new burst gets one attempt through: the ones under
        // way count as failures to come.
        let later = now + secs(1);
        let burst: Vec<_> = (0..10)
            .map(|i| t.begin_at(A, "alice", &format!("again{i}"), later))
            .collect();
        assert_eq!(burst.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(burst[1].as_ref().err(), Some(&secs(2)));
    }

    #[test]
    fn checks_under_way_of_a_clean_record_are_not_counted_as_failures() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        // More than the free failures under way at once, within the in-flight bound.
        let calls: Vec<_> = (0..3)
            .map(|i| {
                t.begin_at(A, "alice", &format!("pw{i}"), now)
                    .unwrap_or_else(|w| panic!("call {i} throttled for {w:?}"))
            })
            .collect();
        for call in calls {
            call.settle_at(Outcome::Accepted, now);
        }
        assert_eq!(t.len(), 0, "nothing left to remember");
    }

    #[test]
    fn concurrent_checks_of_one_credential_are_one_check() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        // A script's concurrent Basic calls: beyond the in-flight bound, and even when
        // the user and the address have failures on record.
        fail(&t, A, "alice", now, 2);
        let calls: Vec<_> = (0..20)
            .map(|i| {
                t.begin_at(A, "alice", "right", now)
                    .unwrap_or_else(|w| panic!("call {i} throttled for {w:?}"))
            })
            .collect();
        // A different password meanwhile is a guess: two failures and one under way
        // for alice make three, beyond the two free.
        assert_eq!(t.begin_at(A, "alice", "other", now).err(), Some(secs(1)));
        for call in calls {
            call.settle_at(Outcome::Accepted, now);
        }
        assert!(t.begin_at(A, "alice", "other", now).is_ok());
    }

    #[test]
    fn a_credential_is_held_only_as_a_salted_digest_and_only_while_checked() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        let attempt = t.begin_at(A, "alice", "secret-password", now).unwrap();
        let held: Vec<Digest16> = t
            .entries
            .lock()
            .unwrap()
            .values()
            .flat_map(|e| e.in_flight.keys().copied())
            .collect();
        assert_eq!(held.len(), 2, "one per counter");
        let unsalted = digest(&["alice", "secret-password"]);
        let other_process = Throttle::new(policy());
        let elsewhere = digest(&[&hex::encode(other_process.salt), "alice", "secret-password"]);
        assert!(held.iter().all(|d| *d != unsalted && *d != elsewhere));
        attempt.settle_at(Outcome::Accepted, now);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn cycling_user_names_is_throttled_per_address() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for i in 0..5 {
            fail(&t, A, &format!("user{i}"), now, 1);
        }
        assert_eq!(t.begin_at(A, "user99", "pw", now).err(), Some(secs(1)));
        // Another address is not concerned.
        assert!(t.begin_at(B, "user99", "pw", now).is_ok());
    }

    #[test]
    fn failures_for_a_user_elsewhere_do_not_throttle_that_user_here() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 3);
        assert!(t.begin_at(A, "alice", "pw", now).is_err());
        succeed(&t, B, "alice", now);
    }

    #[test]
    fn success_clears_the_users_counter_but_not_the_addresss_failures() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 2);
        succeed(&t, A, "alice", now);
        // Two more failures for alice are free again…
        fail(&t, A, "alice", now, 2);
        // …while the address has counted all four: one more starts its delay.
        fail(&t, A, "bob", now, 1);
        assert_eq!(t.begin_at(A, "carol", "pw", now).err(), Some(secs(1)));
    }

    #[test]
    fn a_success_does_not_make_others_wait_longer() {
        let t = Throttle::new(policy());
        let start = Instant::now();
        for i in 0..5 {
            fail(&t, A, &format!("user{i}"), start, 1);
        }
        assert_eq!(t.begin_at(A, "alice", "pw", start).err(), Some(secs(1)));
        // alice logs in once the wait is over; the address's clock is not restarted.
        let later = start + secs(1);
        succeed(&t, A, "alice", later);
        assert!(t.begin_at(A, "bob", "pw", later).is_ok());
    }

    #[test]
    fn no_verdict_is_not_counted() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..10 {
            let attempt = t.begin_at(A, "alice", "pw", now).unwrap();
            attempt.settle_at(Outcome::NoVerdict, now);
        }
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn outcomes_are_read_from_kimchids_answer() {
        let t = Throttle::new(policy());
        let refused = Err::<(), _>(Error::Kimchid(kimchi_dbus::Error::AuthenticationFailed(
            "no".into(),
        )));
        let unreachable = Err::<(), _>(Error::BadReply("x".into()));
        for _ in 0..3 {
            t.begin(A, "alice", "pw").unwrap().settle(&unreachable);
        }
        assert!(t.begin(A, "alice", "pw").is_ok(), "no verdict, no failure");
        for _ in 0..3 {
            t.begin(B, "alice", "pw").unwrap().settle(&refused);
        }
        assert!(t.begin(B, "alice", "pw").is_err(), "three refusals");
        t.begin(A, "bob", "pw").unwrap().settle(&Ok(()));
    }

    #[test]
    fn an_abandoned_attempt_counts_as_a_failure() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            drop(t.begin_at(A, "alice", "pw", now).unwrap());
        }
        let wait = t.begin_at(A, "alice", "pw", now).err().expect("throttled");
        assert!(wait >= secs(1), "{wait:?}");
    }

    #[test]
    fn failures_are_forgiven_one_per_quiet_while() {
        let t = Throttle::new(policy());
        let now = Instant::now();
        fail(&t, A, "alice", now, 3);
        let later = now + secs(100);
        // One of three forgiven: the next failure starts the delay again.
        fail(&t, A, "alice", later, 1);
        assert_eq!(t.begin_at(A, "alice", "pw", later).err(), Some(secs(1)));
        // All forgiven after four quiet whiles (the address had four): nothing is kept.
        let quiet = later + secs(400);
        let attempt = t.begin_at(A, "alice", "pw", quiet).unwrap();
        attempt.settle_at(Outcome::NoVerdict, quiet);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_counter_stops_growing_once_its_delay_is_at_the_cap() {
        let t = Throttle::new(policy());
        let mut at = Instant::now();
        for _ in 0..20 {
            fail(&t, A, "alice", at, 1);
            at += secs(8);
        }
        // Four quiet whiles forgive four of the six failures kept (not of twenty): one
        // more failure is only the first beyond the free ones again.
        let later = at + secs(400);
        fail(&t, A, "alice", later, 1);
        assert_eq!(t.begin_at(A, "alice", "pw", later).err(), Some(secs(1)));
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
        // alice's three failures are gone: one more is still free.
        let later = start + secs(11);
        fail(&t, A, "alice", later, 1);
        assert!(t.begin_at(A, "alice", "pw", later).is_ok(), "evicted");
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
    fn throttled_is_429_with_the_wait() {
        let t = Throttle::new(policy());
        fail(&t, A, "alice", Instant::now(), 3);
        let err = t.begin(A, "alice", "pw").err().expect("throttled");
        assert_eq!(err.status().as_u16(), 429);
        assert!(matches!(err, Error::Throttled { retry_after } if retry_after <= secs(1)));
    }

    #[test]
    fn the_defaults_are_documented_values() {
        let p = Policy::default();
        assert_eq!((p.user_free, p.address_free, p.max_in_flight), (5, 20, 16));
        assert_eq!((p.first_delay, p.max_delay), (secs(1), secs(60)));
        assert_eq!(p.forgive_every, secs(60));
        assert_eq!(beyond_at_cap(&p), 7);
        let delays: Vec<u64> = (1..=8).map(|n| delay(n, &p).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(delay(u32::MAX, &p), secs(60));
    }
}
