//! [`MemStore`]: the whole store in memory. For tests and throwaway runs;
//! nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::watch::{self, Fanout, HistoryPage, HistorySource};
use super::{
    Event, EventKind, INITIAL_REVISION, KeyValue, Revision, Store, StoreError, WatchStream,
};

/// Default number of events the live fan-out buffers per watcher before a
/// slow watcher has to catch up from history.
pub const DEFAULT_WATCH_BUFFER: usize = 4096;

/// An in-memory [`Store`]. Cloning gives another handle to the same store.
#[derive(Clone, Debug)]
pub struct MemStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    fanout: Fanout,
}

#[derive(Debug)]
struct Inner {
    revision: Revision,
    compacted: Revision,
    kv: BTreeMap<String, KeyValue>,
    /// Events for revisions `compacted + 1 ..= revision`, in order.
    history: VecDeque<Event>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at [`INITIAL_REVISION`].
    pub fn new() -> Self {
        Self::with_watch_buffer(DEFAULT_WATCH_BUFFER)
    }

    /// An empty store whose live watch fan-out buffers `watch_buffer` events
    /// per watcher (smaller means slow watchers fall back to history sooner).
    pub fn with_watch_buffer(watch_buffer: usize) -> Self {
        MemStore {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    revision: INITIAL_REVISION,
                    compacted: INITIAL_REVISION,
                    kv: BTreeMap::new(),
                    history: VecDeque::new(),
                }),
                fanout: Fanout::new(watch_buffer),
            }),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections validate before they mutate and do not panic in
        // between, so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a write and publishes it, holding the lock so events are
    /// published in revision order.
    fn commit(&self, inner: &mut Inner, event: Event) -> Revision {
        let revision = event.revision();
        debug_assert_eq!(revision, inner.revision + 1);
        inner.revision = revision;
        match event.kind {
            EventKind::Put => {
                inner.kv.insert(event.kv.key.clone(), event.kv.clone());
            }
            EventKind::Delete => {
                inner.kv.remove(&event.kv.key);
            }
        }
        inner.history.push_back(event.clone());
        self.fanout.publish(event);
        revision
    }
}

fn check_expected(
    key: &str,
    current: &KeyValue,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current.mod_revision => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual: current.mod_revision,
        }),
        _ => Ok(()),
    }
}

impl HistorySource for Shared {
    async fn read_history(
        &self,
        prefix: &str,
        after: Revision,
        max_scan: usize,
    ) -> Result<HistoryPage, StoreError> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: inner.compacted,
            });
        }
        if after > inner.revision {
            return Err(StoreError::FutureRevision {
                requested: after,
                current: inner.revision,
            });
        }
        let max_scan = Revision::try_from(max_scan).unwrap_or(Revision::MAX);
        let through = after.saturating_add(max_scan).min(inner.revision);
        // history[i] holds revision compacted + 1 + i.
        let start = usize::try_from(after - inner.compacted).unwrap_or(usize::MAX);
        let end = usize::try_from(through - inner.compacted).unwrap_or(usize::MAX);
        let events = inner
            .history
            .range(start..end)
            .filter(|event| event.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(HistoryPage {
            events,
            through,
            current: inner.revision,
        })
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision), StoreError> {
        let inner = self.shared.lock();
        Ok((inner.kv.get(key).cloned(), inner.revision))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let inner = self.shared.lock();
        let items = inner
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((items, inner.revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let mut inner = self.shared.lock();
        if inner.kv.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = inner.revision + 1;
        let event = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        };
        Ok(self.shared.commit(&mut inner, event))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let mut inner = self.shared.lock();
        let prev = inner
            .kv
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_owned(),
            })?;
        check_expected(key, &prev, expected_mod_revision)?;
        let revision = inner.revision + 1;
        let event = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value,
                create_revision: prev.create_revision,
                mod_revision: revision,
            },
            prev: Some(prev),
        };
        Ok(self.shared.commit(&mut inner, event))
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let mut inner = self.shared.lock();
        let prev = inner
            .kv
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_owned(),
            })?;
        check_expected(key, &prev, expected_mod_revision)?;
        let revision = inner.revision + 1;
        let event = Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                mod_revision: revision,
                ..prev.clone()
            },
            prev: Some(prev.clone()),
        };
        Ok((prev, self.shared.commit(&mut inner, event)))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::open(&self.shared, &self.shared.fanout, prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut inner = self.shared.lock();
        if revision > inner.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: inner.revision,
            });
        }
        if revision <= inner.compacted {
            return Ok(());
        }
        let drop = usize::try_from(revision - inner.compacted).unwrap_or(usize::MAX);
        inner.history.drain(..drop);
        inner.compacted = revision;
        tracing::debug!(revision, "memory store compacted");
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.lock().compacted)
    }
}
