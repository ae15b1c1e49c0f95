//! What the authority remembers between calls, so a protected call costs no bus round
//! trip when nothing changed: each caller's uid per unique bus name (fixed for the
//! connection's life; forgotten when the name goes away) and polkit's recent "yes"
//! answers, keyed by everything polkit judged (subject, action, details, flags). A
//! decision lives for seconds at most and every decision is forgotten at once when
//! polkit says its rules or actions changed, or when its subject leaves the bus.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a "yes" stands without asking polkit again: short, because what polkit
/// judges beyond its rules (the subject's session being active, say) can change
/// without a signal.
pub const DECISION_LIFETIME: Duration = Duration::from_secs(5);
/// Bound on remembered decisions and callers; beyond it everything is forgotten (a
/// flood of distinct callers or objects costs polkit calls, never memory).
const CAPACITY: usize = 4096;

/// One question put to polkit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    pub subject: String,
    pub action: &'static str,
    pub details: BTreeMap<String, String>,
    pub flags: u32,
}

/// Taken before asking polkit and handed back with its answer: an answer is
/// remembered only if nothing was forgotten in between (it may predate a rule change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

#[derive(Default)]
pub struct Remembered {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    epoch: u64,
    uids: HashMap<String, u32>,
    granted: HashMap<Question, Instant>,
    /// When expired decisions are next dropped: questions naming objects (a template
    /// created and deleted) are rarely asked twice, so expiry alone would keep them.
    next_sweep: Option<Instant>,
}

impl Remembered {
    pub fn uid(&self, sender: &str) -> Option<u32> {
        self.lock().uids.get(sender).copied()
    }

    pub fn remember_uid(&self, sender: &str, uid: u32) {
        let mut state = self.lock();
        if state.uids.len() >= CAPACITY {
            state.uids.clear();
        }
        state.uids.insert(sender.to_owned(), uid);
    }

    /// Whether polkit said yes to this very question less than
    /// [`DECISION_LIFETIME`] ago.
    pub fn granted(&self, question: &Question) -> bool {
        self.granted_at(question, Instant::now())
    }

    fn granted_at(&self, question: &Question, now: Instant) -> bool {
        let mut state = self.lock();
        match state.granted.get(question) {
            Some(at) if now.duration_since(*at) < DECISION_LIFETIME => true,
            Some(_) => {
                state.granted.remove(question);
                false
            }
            None => false,
        }
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.lock().epoch)
    }

    /// Remembers polkit's yes, asked at `epoch`, unless something was forgotten since.
    pub fn remember_grant(&self, epoch: Epoch, question: Question) {
        self.remember_grant_at(epoch, question, Instant::now());
    }

    fn remember_grant_at(&self, epoch: Epoch, question: Question, now: Instant) {
        let mut state = self.lock();
        if state.epoch != epoch.0 {
            return;
        }
        if state.granted.len() >= CAPACITY || state.next_sweep.is_none_or(|at| now >= at) {
            state
                .granted
                .retain(|_, at| now.duration_since(*at) < DECISION_LIFETIME);
            state.next_sweep = Some(now + DECISION_LIFETIME);
            if state.granted.len() >= CAPACITY {
                state.granted.clear();
            }
        }
        state.granted.insert(question, now);
    }

    /// polkit's rules or actions changed (its `Changed` signal), or polkitd itself was
    /// replaced: no earlier answer stands.
    pub fn forget_decisions(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.granted.clear();
    }

    /// `name` left the bus: its uid and every decision about it go.
    pub fn forget_caller(&self, name: &str) {
        let mut state = self.lock();
        state.epoch += 1;
        state.uids.remove(name);
        state.granted.retain(|q, _| q.subject != name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("authority cache lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(subject: &str, action: &'static str, details: &[(&str, &str)]) -> Question {
        Question {
            subject: subject.into(),
            action,
            details: details
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: 0,
        }
    }

    fn grant(cache: &Remembered, q: &Question) {
        cache.remember_grant(cache.epoch(), q.clone());
    }

    #[test]
    fn a_grant_answers_only_the_same_question() {
        let cache = Remembered::default();
        let q = question(":1.5", "org.kimchi.read", &[("kimchi.web.user", "alice")]);
        grant(&cache, &q);
        assert!(cache.granted(&q));
        for other in [
            question(":1.6", "org.kimchi.read", &[("kimchi.web.user", "alice")]),
            question(
                ":1.5",
                "org.kimchi.vm.manage",
                &[("kimchi.web.user", "alice")],
            ),
            question(":1.5", "org.kimchi.read", &[("kimchi.web.user", "bob")]),
            question(":1.5", "org.kimchi.read", &[]),
            Question {
                flags: 1,
                ..q.clone()
            },
        ] {
            assert!(!cache.granted(&other), "{other:?}");
        }
    }

    #[test]
    fn a_grant_expires() {
        let cache = Remembered::default();
        let q = question(":1.5", "org.kimchi.read", &[]);
        let start = Instant::now();
        cache.remember_grant_at(cache.epoch(), q.clone(), start);
        assert!(cache.granted_at(&q, start + DECISION_LIFETIME - Duration::from_millis(1)));
        assert!(!cache.granted_at(&q, start + DECISION_LIFETIME));
        assert!(!cache.granted_at(&q, start));
    }

    #[test]
    fn a_polkit_change_forgets_every_decision_and_answers_in_flight() {
        let cache = Remembered::default();
        let q = question(":1.5", "org.kimchi.read", &[]);
        grant(&cache, &q);
        let asked = cache.epoch();
        cache.forget_decisions();
        assert!(!cache.granted(&q));
        cache.remember_grant(asked, q.clone());
        assert!(
            !cache.granted(&q),
            "an answer given before the change is dropped"
        );
        grant(&cache, &q);
        assert!(cache.granted(&q));
    }

    #[test]
    fn a_caller_leaving_forgets_its_uid_and_decisions_only() {
        let cache = Remembered::default();
        let gone = question(":1.5", "org.kimchi.read", &[]);
        let stays = question(":1.6", "org.kimchi.read", &[]);
        grant(&cache, &gone);
        grant(&cache, &stays);
        cache.remember_uid(":1.5", 990);
        cache.remember_uid(":1.6", 0);
        cache.forget_caller(":1.5");
        assert_eq!(cache.uid(":1.5"), None);
        assert!(!cache.granted(&gone));
        assert_eq!(cache.uid(":1.6"), Some(0));
        assert!(cache.granted(&stays));
    }

    #[test]
    fn expired_decisions_are_dropped_even_if_never_asked_again() {
        let cache = Remembered::default();
        let start = Instant::now();
        for i in 0..10 {
            let q = question(
                ":1.5",
                "org.kimchi.template.manage",
                &[("n", &i.to_string())],
            );
            cache.remember_grant_at(cache.epoch(), q, start);
        }
        let later = start + DECISION_LIFETIME * 2;
        cache.remember_grant_at(
            cache.epoch(),
            question(":1.5", "org.kimchi.read", &[]),
            later,
        );
        assert_eq!(cache.lock().granted.len(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let cache = Remembered::default();
        for i in 0..CAPACITY + 10 {
            let q = question(&format!(":1.{i}"), "org.kimchi.read", &[]);
            cache.remember_grant(cache.epoch(), q);
            cache.remember_uid(&format!(":1.{i}"), 0);
        }
        let state = cache.lock();
        assert!(state.granted.len() <= CAPACITY);
        assert!(state.uids.len() <= CAPACITY);
    }
}
