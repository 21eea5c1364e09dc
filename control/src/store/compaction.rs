//! Background history compaction: how much history a store keeps.
//!
//! Watchers that reconnect resume from a revision, so history must outlive
//! short disconnects, but it must not grow without bound. The policy bounds
//! history both by count (`keep_revisions`) and by age (`keep_for`): history
//! is dropped once it falls outside either window. Age is tracked the way the
//! Kubernetes API server does it: every `interval` the compactor samples the
//! current revision, and a revision is older than `keep_for` once a sample
//! taken at least `keep_for` ago had reached it.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{Revision, Store};

/// How much history to keep and how often to compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// How often the compactor runs.
    pub interval: Duration,
    /// Keep at most this many of the latest revisions (`None`: no count bound).
    pub keep_revisions: Option<i64>,
    /// Drop history older than this (`None`: no age bound).
    pub keep_for: Option<Duration>,
}

impl Default for CompactionPolicy {
    /// Every 30 s; keep at most 10 000 revisions and at most 5 minutes.
    fn default() -> Self {
        CompactionPolicy {
            interval: Duration::from_secs(30),
            keep_revisions: Some(10_000),
            keep_for: Some(Duration::from_secs(300)),
        }
    }
}

/// The pure part of the compactor: remembers when revisions were reached and
/// says where to compact.
#[derive(Debug)]
pub struct RetentionTracker {
    policy: CompactionPolicy,
    /// (when, revision current then), oldest first.
    samples: VecDeque<(Instant, Revision)>,
    /// Highest revision known to be older than `keep_for`.
    aged: Revision,
}

impl RetentionTracker {
    /// A tracker with no samples yet.
    pub fn new(policy: CompactionPolicy) -> Self {
        RetentionTracker {
            policy,
            samples: VecDeque::new(),
            aged: 0,
        }
    }

    /// Records that `current` was the revision at `now` and returns the
    /// revision to compact to (0: nothing to drop yet).
    pub fn observe(&mut self, now: Instant, current: Revision) -> Revision {
        self.samples.push_back((now, current));
        let by_count = match self.policy.keep_revisions {
            Some(keep) => current.saturating_sub(keep.max(0)).max(0),
            None => 0,
        };
        let by_age = match self.policy.keep_for {
            Some(keep_for) => {
                // Samples at least keep_for old: everything up to their
                // revision was written before then.
                while let Some(&(at, revision)) = self.samples.front() {
                    if now.saturating_duration_since(at) < keep_for {
                        break;
                    }
                    self.aged = self.aged.max(revision);
                    self.samples.pop_front();
                }
                self.aged
            }
            None => {
                self.samples.clear();
                0
            }
        };
        by_count.max(by_age).min(current)
    }
}

/// Spawns a task that compacts `store` by `policy` every `policy.interval`.
/// The task holds the store weakly and ends once the store is dropped; abort
/// the returned handle to stop it sooner. Failures are logged and retried on
/// the next tick.
pub fn spawn_compactor<S: Store + ?Sized>(
    store: &Arc<S>,
    policy: CompactionPolicy,
) -> tokio::task::JoinHandle<()> {
    let weak: Weak<S> = Arc::downgrade(store);
    let span = tracing::info_span!(
        "store_compactor",
        interval_ms = policy.interval.as_millis() as u64
    );
    tokio::spawn(
        async move {
            let mut tracker = RetentionTracker::new(policy.clone());
            let mut ticker = tokio::time::interval(policy.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else {
                    tracing::debug!("store dropped; compactor exiting");
                    return;
                };
                let current = match store.current_revision().await {
                    Ok(current) => current,
                    Err(error) => {
                        tracing::warn!(%error, "compactor could not read the revision");
                        continue;
                    }
                };
                let target = tracker.observe(Instant::now(), current);
                if target <= 0 {
                    continue;
                }
                match store.compact(target).await {
                    Ok(()) => tracing::debug!(target, current, "history compacted"),
                    Err(error) => tracing::warn!(%error, target, "compaction failed"),
                }
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keep_revisions: Option<i64>, keep_for: Option<u64>) -> CompactionPolicy {
        CompactionPolicy {
            interval: Duration::from_secs(1),
            keep_revisions,
            keep_for: keep_for.map(Duration::from_secs),
        }
    }

    #[test]
    fn count_bound_keeps_last_n() {
        let mut t = RetentionTracker::new(policy(Some(100), None));
        let now = Instant::now();
        assert_eq!(t.observe(now, 50), 0);
        assert_eq!(t.observe(now, 150), 50);
        assert_eq!(t.observe(now, 1000), 900);
    }

    #[test]
    fn age_bound_compacts_to_revision_seen_keep_for_ago() {
        let mut t = RetentionTracker::new(policy(None, Some(300)));
        let t0 = Instant::now();
        assert_eq!(t.observe(t0, 10), 0);
        assert_eq!(t.observe(t0 + Duration::from_secs(100), 20), 0);
        assert_eq!(t.observe(t0 + Duration::from_secs(299), 30), 0);
        // 300 s after the first sample, everything up to 10 is old enough.
        assert_eq!(t.observe(t0 + Duration::from_secs(300), 40), 10);
        assert_eq!(t.observe(t0 + Duration::from_secs(350), 45), 10);
        assert_eq!(t.observe(t0 + Duration::from_secs(400), 50), 20);
        assert_eq!(t.observe(t0 + Duration::from_secs(1000), 60), 50);
    }

    #[test]
    fn both_bounds_take_the_tighter() {
        let mut t = RetentionTracker::new(policy(Some(5), Some(300)));
        let t0 = Instant::now();
        assert_eq!(t.observe(t0, 100), 95);
        // Age bound drops up to 100, count bound only up to 97.
        assert_eq!(t.observe(t0 + Duration::from_secs(300), 102), 100);
    }

    #[tokio::test]
    async fn compactor_task_compacts_and_stops_with_the_store() {
        use crate::store::MemStore;

        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        for i in 0..20u8 {
            store.create(&format!("/k/{i}"), vec![i]).await.unwrap();
        }
        let policy = CompactionPolicy {
            interval: Duration::from_millis(10),
            keep_revisions: Some(5),
            keep_for: None,
        };
        let current = store.current_revision().await.unwrap();
        let task = spawn_compactor(&store, policy);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.compacted_revision().await.unwrap() != current - 5 {
            assert!(
                Instant::now() < deadline,
                "compactor never compacted to {}",
                current - 5
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(
            store.watch("", current - 6).await,
            Err(crate::store::StoreError::Compacted { compacted, .. }) if compacted == current - 5
        ));
        drop(store);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("compactor should exit once the store is dropped")
            .unwrap();
    }

    #[test]
    fn no_bounds_never_compacts() {
        let mut t = RetentionTracker::new(policy(None, None));
        let t0 = Instant::now();
        assert_eq!(t.observe(t0, 100), 0);
        assert_eq!(t.observe(t0 + Duration::from_secs(10_000), 1000), 0);
    }
}
