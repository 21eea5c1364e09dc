//! Revisioned key-value store, shaped like etcd's v3 API.
//!
//! Every write (create, update, delete) bumps one global [`Revision`] by
//! exactly one and records exactly one [`Event`] in the store's history, so
//! the history is a gap-free sequence `compacted+1 ..= current`. Each key
//! carries the revision that created it and the revision of its last change;
//! writes may be made conditional on the latter (optimistic concurrency, what
//! Kubernetes calls `resourceVersion`).
//!
//! [`Store::watch`] replays history after a given revision and then streams
//! live events, in revision order, with no gaps and no duplicates. A watcher
//! that falls behind the live fan-out is caught up from history; if that
//! history has been compacted away it gets [`StoreError::Compacted`] and must
//! re-list, never a silently shortened stream.
//!
//! Layout:
//! - [`memory`]: [`MemStore`], everything in memory (tests, ephemeral runs);
//! - [`redb`]: [`RedbStore`], the durable embedded default, one file;
//! - `watch`: the fan-out and history catch-up logic both share;
//! - [`compaction`]: the background retention policy.

pub mod compaction;
pub mod memory;
pub mod redb;
mod watch;

#[cfg(test)]
mod conformance;

pub use self::redb::{RedbConfig, RedbStore};
pub use compaction::{CompactionPolicy, spawn_compactor};
pub use memory::MemStore;

/// A point in the store's history.
pub type Revision = i64;

/// The revision of a fresh, empty store; its first write gets the next one.
///
/// As in etcd, it is 1, not 0: every snapshot a store hands out (from `get`,
/// `list`, `current_revision`) is then at least 1, so a client that lists and
/// then watches from the listed revision never passes 0, which
/// [`Store::watch`] reads as "from now" (and would miss writes in between).
/// History starts compacted at this revision: there is nothing before it.
pub const INITIAL_REVISION: Revision = 1;

/// One key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The stored bytes (opaque to the store).
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One write, as seen by watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For `Put`, the new key-value. For `Delete`, the last value the key had,
    /// with `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The key-value before this write; `None` for a create.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the write this event records.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Errors from a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key asked for.
        key: String,
    },
    /// A conditional write's expected mod revision did not match.
    #[error("key {key:?} was modified: expected mod revision {expected}, found {actual}")]
    Conflict {
        /// The key written.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The key's actual mod revision.
        actual: Revision,
    },
    /// The requested history has been compacted away.
    #[error("revision {requested} has been compacted (history kept after {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compaction point: history at or below it is gone.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The store could not be opened.
    #[error("cannot open store at {path}")]
    Open {
        /// The file or directory being opened.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The store is shut down (its handle was dropped or its writer stopped).
    #[error("store is closed")]
    Closed,
    /// The storage backend failed.
    #[error("store backend failed while {context}")]
    Backend {
        /// What the store was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Stored data could not be decoded (corruption or a format mismatch).
    #[error("stored data is corrupt: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn backend(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            context,
            source: Box::new(source),
        }
    }
}

/// A stream of watch events; ends after an `Err` or when the store closes.
pub type WatchStream = futures::stream::BoxStream<'static, Result<Event, StoreError>>;

/// A revisioned key-value store. Object-safe: use it as `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value (if any) and the store's current revision,
    /// read from one consistent snapshot.
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision), StoreError>;

    /// All keys starting with `prefix`, sorted by key, and the revision of
    /// the snapshot they were read from.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if present.
    /// Returns the revision of the write.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Replaces `key`'s value. Fails with [`StoreError::NotFound`] if absent,
    /// or [`StoreError::Conflict`] if `expected_mod_revision` is given and
    /// differs from the key's mod revision. Returns the revision of the write.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`, with the same conditions as [`Store::update`]. Returns
    /// the deleted key-value (as it was before the delete) and the revision of
    /// the delete.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError>;

    /// Streams events for keys starting with `prefix` whose revision is
    /// greater than `from_revision` (0 or less: only writes after this call),
    /// in revision order. To see everything after a `get`/`list`, pass the
    /// revision it returned. Fails with [`StoreError::Compacted`] if
    /// `from_revision` is below the compaction point and with
    /// [`StoreError::FutureRevision`] if it is above the current revision.
    /// The stream yields `Err(Compacted)` and ends if it falls so far behind
    /// that the history it needs is compacted.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// Drops history at or below `revision`. Compacting at or below the
    /// current compaction point is a no-op; above the current revision fails
    /// with [`StoreError::FutureRevision`]. Current key-values are kept.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The store's current revision (that of the last write).
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The compaction point: history at or below it is gone
    /// ([`INITIAL_REVISION`] on a store never compacted).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}
