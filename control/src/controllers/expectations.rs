//! Controller expectations, as Kubernetes' `ControllerExpectations`: after
//! a controller creates or deletes pods it must not act on a pod cache
//! that does not show those writes yet, or it would create (or delete)
//! the same replicas again. Level-based: an expectation is met when the
//! cache *shows* every created pod and *lacks* every deleted one (no event
//! counting), or when it has waited longer than the timeout (a create
//! whose pod was deleted before we saw it would otherwise block forever).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an unmet expectation holds a controller back (Kubernetes: 5
/// minutes; shorter here because the cache is local and fast).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Expected {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Instant,
}

/// Pending writes per controller object (keyed by the owner's uid).
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Expected>>,
    timeout: Option<Duration>,
}

impl Expectations {
    /// Expectations with [`EXPECTATIONS_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_timeout(EXPECTATIONS_TIMEOUT)
    }

    /// Expectations with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Expectations {
            pending: Mutex::new(HashMap::new()),
            timeout: Some(timeout),
        }
    }

    /// Records that `owner` created pods named `created` and deleted pods
    /// with uids `deleted`, at `now`. Adds to what is already pending.
    pub fn expect(
        &self,
        owner: &str,
        created: impl IntoIterator<Item = String>,
        deleted: impl IntoIterator<Item = String>,
        now: Instant,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.entry(owner.to_owned()).or_insert_with(|| Expected {
            created: HashSet::new(),
            deleted: HashSet::new(),
            since: now,
        });
        entry.created.extend(created);
        entry.deleted.extend(deleted);
        entry.since = now;
        if entry.created.is_empty() && entry.deleted.is_empty() {
            pending.remove(owner);
        }
    }

    /// Whether `owner` may act: its pending writes show in the cache,
    /// described by `has_name` (a pod with this name exists) and
    /// `has_uid` (a pod with this uid exists), or they timed out. Met
    /// expectations are dropped.
    pub fn satisfied(
        &self,
        owner: &str,
        has_name: impl Fn(&str) -> bool,
        has_uid: impl Fn(&str) -> bool,
        now: Instant,
    ) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = pending.get_mut(owner) else {
            return true;
        };
        entry.created.retain(|n| !has_name(n));
        entry.deleted.retain(|u| has_uid(u));
        let timed_out = self
            .timeout
            .is_some_and(|t| now.duration_since(entry.since) >= t);
        if (entry.created.is_empty() && entry.deleted.is_empty()) || timed_out {
            pending.remove(owner);
            return true;
        }
        false
    }

    /// Drops whatever `owner` was waiting for (the owner is gone).
    pub fn forget(&self, owner: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_created_pods_appear_and_deleted_disappear() {
        let e = Expectations::new();
        let t0 = Instant::now();
        assert!(
            e.satisfied("rs", |_| false, |_| false, t0),
            "nothing pending"
        );
        e.expect(
            "rs",
            ["a".to_owned(), "b".to_owned()],
            ["uid-x".to_owned()],
            t0,
        );
        assert!(!e.satisfied("rs", |n| n == "a", |_| true, t0));
        assert!(
            !e.satisfied("rs", |n| n == "b", |_| true, t0),
            "a was seen before; still waiting for x"
        );
        assert!(
            e.satisfied("rs", |_| false, |_| false, t0),
            "x gone, a and b seen"
        );
        assert!(
            e.satisfied("rs", |_| false, |_| true, t0),
            "dropped once met"
        );
    }

    #[test]
    fn times_out() {
        let e = Expectations::with_timeout(Duration::from_secs(5));
        let t0 = Instant::now();
        e.expect("rs", ["a".to_owned()], [], t0);
        assert!(!e.satisfied("rs", |_| false, |_| false, t0 + Duration::from_secs(4)));
        assert!(e.satisfied("rs", |_| false, |_| false, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn owners_are_independent_and_forgettable() {
        let e = Expectations::new();
        let t0 = Instant::now();
        e.expect("a", ["p".to_owned()], [], t0);
        assert!(e.satisfied("b", |_| false, |_| false, t0));
        assert!(!e.satisfied("a", |_| false, |_| false, t0));
        e.forget("a");
        assert!(e.satisfied("a", |_| false, |_| false, t0));
        // Expecting nothing records nothing.
        e.expect("c", [], [], t0);
        assert!(e.satisfied("c", |_| false, |_| false, t0));
    }
}
