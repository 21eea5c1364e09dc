//! [`RedbStore`]: the durable embedded store, one redb file under the data
//! directory.
//!
//! Layout (tables in one file, every write in one redb transaction):
//! - `kv`: key → (value, create_revision, mod_revision), the live keys;
//! - `history`: revision → event, the gap-free log `compacted+1 ..= revision`;
//! - `meta`: `revision`, `compacted` and the on-disk `format`.
//!
//! Writes go to one dedicated writer thread. It takes whatever requests are
//! queued (up to [`RedbConfig::max_batch`]), applies them in order inside one
//! write transaction, commits with [`Durability::Immediate`] (fsync before
//! `commit` returns), and only then publishes the events to watchers and
//! answers the callers. So an acknowledged write survives `kill -9` and power
//! loss, concurrent writers share one fsync (group commit), and the revision
//! order is the commit order.
//!
//! Reads open redb MVCC read transactions on the blocking thread pool: they
//! see the last committed snapshot and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::watch::{self, Fanout, HistoryPage, HistorySource};
use super::{
    Event, EventKind, INITIAL_REVISION, KeyValue, Revision, Store, StoreError, WatchStream,
};

/// key → (value, create_revision, mod_revision)
const KV: TableDefinition<&str, (&[u8], i64, i64)> = TableDefinition::new("kv");
/// revision → (kind, key, value, create_revision, prev (value, create, mod)).
/// The event's mod_revision is the table key. A delete stores an empty value:
/// its value is the previous one.
type HistoryValue<'a> = (u8, &'a str, &'a [u8], i64, Option<(&'a [u8], i64, i64)>);
const HISTORY: TableDefinition<i64, HistoryValue<'static>> = TableDefinition::new("history");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_FORMAT: &str = "format";
const FORMAT_VERSION: i64 = 1;

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "store.redb";

/// Tuning for [`RedbStore`].
#[derive(Clone, Debug)]
pub struct RedbConfig {
    /// Events the live watch fan-out buffers per watcher before a slow
    /// watcher has to catch up from the history table.
    pub watch_buffer: usize,
    /// Most write requests committed in one transaction (one fsync).
    pub max_batch: usize,
}

impl Default for RedbConfig {
    fn default() -> Self {
        RedbConfig {
            watch_buffer: super::memory::DEFAULT_WATCH_BUFFER,
            max_batch: 256,
        }
    }
}

/// The durable [`Store`]. Cloning gives another handle to the same store; the
/// file is closed when the last handle is dropped (open watch streams do not
/// keep it open: they end).
#[derive(Clone, Debug)]
pub struct RedbStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    db: Arc<Database>,
    fanout: Arc<Fanout>,
    path: PathBuf,
    /// `Option` only so that `Drop` can close the channel before joining.
    writer_tx: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel stops the writer after its current batch;
        // joining makes sure the file is released when the store is gone,
        // so it can be reopened at once.
        self.writer_tx.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "store writer thread panicked");
        }
    }
}

#[derive(Debug)]
enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

#[derive(Debug)]
enum WriteOutcome {
    Written(Event),
    Compacted,
}

#[derive(Debug)]
struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

impl RedbStore {
    /// Opens (creating if needed) the store in `dir` with default tuning.
    /// Blocking: call it at startup or inside `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, RedbConfig::default())
    }

    /// Opens (creating if needed) the store file [`FILE_NAME`] in `dir`.
    /// Fails with [`StoreError::Open`] if the directory or file cannot be
    /// created or opened (for example, another process holds it) and with
    /// [`StoreError::Corrupt`] if it holds an unknown format.
    pub fn open_with(dir: &Path, config: RedbConfig) -> Result<Self, StoreError> {
        let open_error =
            |path: &Path, source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
                path: path.to_owned(),
                source,
            };
        std::fs::create_dir_all(dir).map_err(|e| open_error(dir, Box::new(e)))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| open_error(&path, Box::new(e)))?;
        let revision = init_tables(&db).map_err(|e| match e {
            InitError::Redb(e) => open_error(&path, Box::new(e)),
            InitError::Format(found) => StoreError::Corrupt {
                detail: format!(
                    "{} has format {found}, this build reads {FORMAT_VERSION}",
                    path.display()
                ),
            },
        })?;
        let db = Arc::new(db);
        let fanout = Arc::new(Fanout::new(config.watch_buffer));
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer = {
            let db = Arc::clone(&db);
            let fanout = Arc::clone(&fanout);
            let max_batch = config.max_batch.max(1);
            thread::Builder::new()
                .name("skiff-store-writer".to_owned())
                .spawn(move || run_writer(&db, &fanout, &writer_rx, revision, max_batch))
                .map_err(|e| open_error(&path, Box::new(e)))?
        };
        tracing::info!(path = %path.display(), revision, "store opened");
        Ok(RedbStore {
            shared: Arc::new(Shared {
                db,
                fanout,
                path,
                writer_tx: Some(writer_tx),
                writer: Some(writer),
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let tx = self.shared.writer_tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(WriteRequest { op, reply })
            .map_err(|_| StoreError::Closed)?;
        // If this future is dropped now the write still happens, as with etcd.
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_write(&self, op: WriteOp) -> Result<Event, StoreError> {
        match self.submit(op).await? {
            WriteOutcome::Written(event) => Ok(event),
            WriteOutcome::Compacted => Err(StoreError::Corrupt {
                detail: "writer answered a write with a compaction".to_owned(),
            }),
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        read_blocking(&self.shared.db, f).await
    }
}

async fn read_blocking<T: Send + 'static>(
    db: &Arc<Database>,
    f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StoreError::backend("running a read on the blocking pool", e))?
}

enum InitError {
    Redb(redb::Error),
    Format(i64),
}

impl<E: Into<redb::Error>> From<E> for InitError {
    fn from(e: E) -> Self {
        InitError::Redb(e.into())
    }
}

/// Creates the tables on first open, checks the format and returns the
/// persisted revision.
fn init_tables(db: &Database) -> Result<Revision, InitError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let revision;
    {
        txn.open_table(KV)?;
        txn.open_table(HISTORY)?;
        let mut meta = txn.open_table(META)?;
        let format = meta.get(META_FORMAT)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)?;
                meta.insert(META_REVISION, INITIAL_REVISION)?;
                meta.insert(META_COMPACTED, INITIAL_REVISION)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => return Err(InitError::Format(other)),
        }
        revision = meta
            .get(META_REVISION)?
            .map_or(INITIAL_REVISION, |v| v.value());
    }
    txn.commit()?;
    Ok(revision)
}

fn redb_err<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::backend(context, e.into())
}

fn read_meta(
    txn: &redb::ReadTransaction,
) -> Result<(redb::ReadOnlyTable<&'static str, i64>, Revision, Revision), StoreError> {
    let meta = txn
        .open_table(META)
        .map_err(redb_err("opening the meta table"))?;
    let revision = meta
        .get(META_REVISION)
        .map_err(redb_err("reading the revision"))?
        .map_or(INITIAL_REVISION, |v| v.value());
    let compacted = meta
        .get(META_COMPACTED)
        .map_err(redb_err("reading the compaction point"))?
        .map_or(INITIAL_REVISION, |v| v.value());
    Ok((meta, revision, compacted))
}

fn kv_from(key: &str, (value, create_revision, mod_revision): (&[u8], i64, i64)) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

fn decode_event(revision: Revision, stored: HistoryValue<'_>) -> Result<Event, StoreError> {
    let (kind, key, value, create_revision, prev) = stored;
    let prev = prev.map(|p| kv_from(key, p));
    let (kind, value) = match (kind, &prev) {
        (KIND_PUT, _) => (EventKind::Put, value.to_vec()),
        (KIND_DELETE, Some(prev)) => (EventKind::Delete, prev.value.clone()),
        (kind, _) => {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "history entry {revision} has kind {kind} (prev present: {})",
                    prev.is_some()
                ),
            });
        }
    };
    Ok(Event {
        kind,
        kv: KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
}

fn read_history_blocking(
    db: &Database,
    prefix: &str,
    after: Revision,
    max_scan: usize,
) -> Result<HistoryPage, StoreError> {
    let txn = db
        .begin_read()
        .map_err(redb_err("starting a history read"))?;
    let (_, current, compacted) = read_meta(&txn)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    if after > current {
        return Err(StoreError::FutureRevision {
            requested: after,
            current,
        });
    }
    let max_scan = Revision::try_from(max_scan).unwrap_or(Revision::MAX);
    let through = after.saturating_add(max_scan).min(current);
    let history = txn
        .open_table(HISTORY)
        .map_err(redb_err("opening the history table"))?;
    let mut events = Vec::new();
    let mut expected = after + 1;
    for entry in history
        .range(after + 1..=through)
        .map_err(redb_err("reading history"))?
    {
        let (revision, stored) = entry.map_err(redb_err("reading history"))?;
        let revision = revision.value();
        if revision != expected {
            return Err(StoreError::Corrupt {
                detail: format!("history jumps from {} to {revision}", expected - 1),
            });
        }
        expected += 1;
        let stored = stored.value();
        if stored.1.starts_with(prefix) {
            events.push(decode_event(revision, stored)?);
        }
    }
    if expected != through + 1 {
        return Err(StoreError::Corrupt {
            detail: format!("history ends at {} before {through}", expected - 1),
        });
    }
    Ok(HistoryPage {
        events,
        through,
        current,
    })
}

impl HistorySource for Shared {
    async fn read_history(
        &self,
        prefix: &str,
        after: Revision,
        max_scan: usize,
    ) -> Result<HistoryPage, StoreError> {
        let prefix = prefix.to_owned();
        read_blocking(&self.db, move |db| {
            read_history_blocking(db, &prefix, after, max_scan)
        })
        .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        read_blocking(&self.db, |db| {
            let txn = db.begin_read().map_err(redb_err("starting a read"))?;
            Ok(read_meta(&txn)?.1)
        })
        .await
    }
}

/// The writer thread: batches queued requests into one transaction each.
fn run_writer(
    db: &Database,
    fanout: &Fanout,
    requests: &mpsc::Receiver<WriteRequest>,
    mut revision: Revision,
    max_batch: usize,
) {
    let span = tracing::info_span!("store_writer");
    let _enter = span.enter();
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        revision = commit_batch(db, fanout, batch, revision);
    }
    tracing::debug!(revision, "store writer stopped");
}

/// Applies `batch` in one transaction; returns the revision after it.
fn commit_batch(
    db: &Database,
    fanout: &Fanout,
    batch: Vec<WriteRequest>,
    revision: Revision,
) -> Revision {
    let (replies, ops): (Vec<_>, Vec<_>) = batch.into_iter().map(|r| (r.reply, r.op)).unzip();
    let applied = begin(db).and_then(|mut txn| {
        let (results, new_revision) = apply_all(&mut txn, &ops, revision)?;
        txn.commit()?;
        Ok((results, new_revision))
    });
    match applied {
        Ok((results, new_revision)) => {
            tracing::trace!(ops = ops.len(), revision = new_revision, "batch committed");
            // Committed: publish in revision order, then answer.
            for (reply, result) in replies.into_iter().zip(results) {
                if let Ok(WriteOutcome::Written(event)) = &result {
                    fanout.publish(event.clone());
                }
                // The caller may have gone away; the write stands anyway.
                let _ = reply.send(result);
            }
            new_revision
        }
        Err(error) => {
            tracing::error!(%error, ops = ops.len(), "store write transaction failed");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend {
                    context: "committing a write",
                    source: Box::new(Arc::clone(&error)),
                }));
            }
            revision
        }
    }
}

fn begin(db: &Database) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    // The default, stated because the crash test depends on it: commit
    // returns only once the data is on disk.
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

type OpResult = Result<WriteOutcome, StoreError>;

/// Applies every op in order; a refused op (conflict, not found, ...) writes
/// nothing and does not disturb the others. A backend error aborts all.
fn apply_all(
    txn: &mut WriteTransaction,
    ops: &[WriteOp],
    mut revision: Revision,
) -> Result<(Vec<OpResult>, Revision), redb::Error> {
    let mut kv = txn.open_table(KV)?;
    let mut history = txn.open_table(HISTORY)?;
    let mut meta = txn.open_table(META)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            WriteOp::Create { key, value } => {
                if kv.get(key.as_str())?.is_some() {
                    Err(StoreError::AlreadyExists { key: key.clone() })
                } else {
                    let event = Event {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: revision + 1,
                            mod_revision: revision + 1,
                        },
                        prev: None,
                    };
                    Ok(write_event(&mut kv, &mut history, event)?)
                }
            }
            WriteOp::Update {
                key,
                value,
                expected,
            } => match current(&kv, key, *expected)? {
                Err(refused) => Err(refused),
                Ok(prev) => {
                    let event = Event {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: prev.create_revision,
                            mod_revision: revision + 1,
                        },
                        prev: Some(prev),
                    };
                    Ok(write_event(&mut kv, &mut history, event)?)
                }
            },
            WriteOp::Delete { key, expected } => match current(&kv, key, *expected)? {
                Err(refused) => Err(refused),
                Ok(prev) => {
                    let event = Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: revision + 1,
                            ..prev.clone()
                        },
                        prev: Some(prev),
                    };
                    Ok(write_event(&mut kv, &mut history, event)?)
                }
            },
            WriteOp::Compact { revision: target } => {
                let compacted = meta
                    .get(META_COMPACTED)?
                    .map_or(INITIAL_REVISION, |v| v.value());
                if *target > revision {
                    Err(StoreError::FutureRevision {
                        requested: *target,
                        current: revision,
                    })
                } else {
                    if *target > compacted {
                        history.retain_in::<i64, _>(..=*target, |_, _| false)?;
                        meta.insert(META_COMPACTED, *target)?;
                        tracing::debug!(revision = *target, "history compacted");
                    }
                    Ok(WriteOutcome::Compacted)
                }
            }
        };
        if let Ok(WriteOutcome::Written(event)) = &result {
            revision = event.revision();
        }
        results.push(result);
    }
    meta.insert(META_REVISION, revision)?;
    Ok((results, revision))
}

/// The key's current value if it exists and matches `expected`; the inner
/// error is the refusal to report to the caller.
fn current(
    kv: &Table<&str, (&[u8], i64, i64)>,
    key: &str,
    expected: Option<Revision>,
) -> Result<Result<KeyValue, StoreError>, redb::Error> {
    let Some(found) = kv.get(key)? else {
        return Ok(Err(StoreError::NotFound {
            key: key.to_owned(),
        }));
    };
    let prev = kv_from(key, found.value());
    Ok(match expected {
        Some(expected) if expected != prev.mod_revision => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual: prev.mod_revision,
        }),
        _ => Ok(prev),
    })
}

fn write_event(
    kv: &mut Table<&str, (&[u8], i64, i64)>,
    history: &mut Table<i64, HistoryValue<'static>>,
    event: Event,
) -> Result<WriteOutcome, redb::Error> {
    let revision = event.revision();
    let prev = event
        .prev
        .as_ref()
        .map(|p| (p.value.as_slice(), p.create_revision, p.mod_revision));
    match event.kind {
        EventKind::Put => {
            kv.insert(
                event.kv.key.as_str(),
                (
                    event.kv.value.as_slice(),
                    event.kv.create_revision,
                    event.kv.mod_revision,
                ),
            )?;
            history.insert(
                revision,
                (
                    KIND_PUT,
                    event.kv.key.as_str(),
                    event.kv.value.as_slice(),
                    event.kv.create_revision,
                    prev,
                ),
            )?;
        }
        EventKind::Delete => {
            kv.remove(event.kv.key.as_str())?;
            history.insert(
                revision,
                (
                    KIND_DELETE,
                    event.kv.key.as_str(),
                    &[][..],
                    event.kv.create_revision,
                    prev,
                ),
            )?;
        }
    }
    Ok(WriteOutcome::Written(event))
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision), StoreError> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(redb_err("starting a read"))?;
            let (_, revision, _) = read_meta(&txn)?;
            let kv = txn
                .open_table(KV)
                .map_err(redb_err("opening the kv table"))?;
            let found = kv
                .get(key.as_str())
                .map_err(redb_err("reading a key"))?
                .map(|v| kv_from(&key, v.value()));
            Ok((found, revision))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(redb_err("starting a read"))?;
            let (_, revision, _) = read_meta(&txn)?;
            let kv = txn
                .open_table(KV)
                .map_err(redb_err("opening the kv table"))?;
            let mut items = Vec::new();
            for entry in kv
                .range(prefix.as_str()..)
                .map_err(redb_err("listing keys"))?
            {
                let (key, value) = entry.map_err(redb_err("listing keys"))?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                items.push(kv_from(key, value.value()));
            }
            Ok((items, revision))
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let event = self
            .submit_write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?;
        Ok(event.revision())
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let event = self
            .submit_write(WriteOp::Update {
                key: key.to_owned(),
                value,
                expected: expected_mod_revision,
            })
            .await?;
        Ok(event.revision())
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let event = self
            .submit_write(WriteOp::Delete {
                key: key.to_owned(),
                expected: expected_mod_revision,
            })
            .await?;
        let revision = event.revision();
        let prev = event.prev.ok_or_else(|| StoreError::Corrupt {
            detail: "delete event without the deleted value".to_owned(),
        })?;
        Ok((prev, revision))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::open(&self.shared, &self.shared.fanout, prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.submit(WriteOp::Compact { revision }).await? {
            WriteOutcome::Compacted => Ok(()),
            WriteOutcome::Written(_) => Err(StoreError::Corrupt {
                detail: "writer answered a compaction with a write".to_owned(),
            }),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        HistorySource::current_revision(&*self.shared).await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(redb_err("starting a read"))?;
            Ok(read_meta(&txn)?.2)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn reopen_restores_data_revision_and_history() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            store.create("/a", b"1".to_vec()).await.unwrap(); // 2
            store.create("/b", b"2".to_vec()).await.unwrap(); // 3
            store.update("/a", b"3".to_vec(), Some(2)).await.unwrap(); // 4
            store.delete("/b", None).await.unwrap(); // 5
            store.create("/c", b"5".to_vec()).await.unwrap(); // 6
            store.compact(3).await.unwrap();
            // A second open of the same file is refused while this one lives.
            assert!(matches!(
                RedbStore::open(dir.path()),
                Err(StoreError::Open { .. })
            ));
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 6);
        assert_eq!(store.compacted_revision().await.unwrap(), 3);
        let (items, rev) = store.list("/").await.unwrap();
        assert_eq!(rev, 6);
        let got: Vec<_> = items
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_slice(),
                    kv.create_revision,
                    kv.mod_revision,
                )
            })
            .collect();
        assert_eq!(got, [("/a", &b"3"[..], 2, 4), ("/c", &b"5"[..], 6, 6)]);

        assert!(matches!(
            store.watch("", 2).await,
            Err(StoreError::Compacted {
                requested: 2,
                compacted: 3
            })
        ));
        let mut watch = store.watch("", 3).await.unwrap();
        let mut replay = Vec::new();
        for _ in 0..3 {
            replay.push(watch.next().await.unwrap().unwrap());
        }
        assert_eq!(
            replay
                .iter()
                .map(|e| (
                    e.revision(),
                    e.kind,
                    e.kv.key.as_str(),
                    e.kv.value.as_slice()
                ))
                .collect::<Vec<_>>(),
            [
                (4, EventKind::Put, "/a", &b"3"[..]),
                (5, EventKind::Delete, "/b", &b"2"[..]),
                (6, EventKind::Put, "/c", &b"5"[..]),
            ]
        );
        assert_eq!(replay[1].prev.as_ref().map(|p| p.mod_revision), Some(3));
        assert_eq!(store.create("/d", vec![]).await.unwrap(), 7);
        assert_eq!(watch.next().await.unwrap().unwrap().revision(), 7);
    }

    #[test]
    fn unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_FORMAT, 99)
                .unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    const CRASH_DIR_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DIR";
    const CRASH_TASKS: usize = 4;
    const CRASH_KEYS_PER_TASK: usize = 100_000;

    fn crash_value(task: usize, i: usize, updated: bool) -> Vec<u8> {
        format!(
            "task{task}-key{i}-{}",
            if updated { "updated" } else { "created" }
        )
        .into_bytes()
    }

    /// Child mode of `crash_keeps_every_acknowledged_write`: writes keys from
    /// several tasks and prints each acknowledged write as
    /// `ack create|update <key> <revision>` until killed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "child process of crash_keeps_every_acknowledged_write; run by it"]
    async fn crash_child_writer() {
        let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
            // Not a test of its own: `cargo xtask test --kernel` runs every
            // ignored test, and without the parent's directory there is
            // nothing to do.
            eprintln!(
                "{CRASH_DIR_ENV} not set: child mode of crash_keeps_every_acknowledged_write only"
            );
            return;
        };
        let store = RedbStore::open(Path::new(&dir)).unwrap();
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        // libtest has printed "test <name> ... " without a newline: end that
        // line so that every ack starts one.
        writeln!(out.lock().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for task in 0..CRASH_TASKS {
            let store = store.clone();
            let out = Arc::clone(&out);
            tasks.push(tokio::spawn(async move {
                for i in 0..CRASH_KEYS_PER_TASK {
                    let key = format!("/crash/{task}/{i}");
                    let rev = store
                        .create(&key, crash_value(task, i, false))
                        .await
                        .unwrap();
                    {
                        let mut out = out.lock().unwrap();
                        writeln!(out, "ack create {key} {rev}").unwrap();
                        out.flush().unwrap();
                    }
                    if i % 3 == 0 {
                        let rev = store
                            .update(&key, crash_value(task, i, true), Some(rev))
                            .await
                            .unwrap();
                        let mut out = out.lock().unwrap();
                        writeln!(out, "ack update {key} {rev}").unwrap();
                        out.flush().unwrap();
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[derive(Debug, Default)]
    struct Acked {
        created: Option<Revision>,
        updated: Option<Revision>,
    }

    /// Kills a writer process with SIGKILL mid-stream and checks that every
    /// write it acknowledged survived, and that revisions continue above them.
    #[tokio::test]
    async fn crash_keeps_every_acknowledged_write() {
        use std::os::unix::process::ExitStatusExt;

        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::redb::tests::crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // Only whole lines count: a line cut by the kill was never an ack.
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') && lines_tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });

        // Let it get well into its stream, then kill it without warning.
        let kill_after = 400;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        while lines
            .iter()
            .filter(|l: &&String| l.starts_with("ack "))
            .count()
            < kill_after
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(e) => {
                    let _ = child.kill();
                    panic!("child gave {} lines then {e:?}: {lines:?}", lines.len());
                }
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc_sigkill()),
            "child must die by SIGKILL: {status:?}"
        );
        reader.join().unwrap();
        // Acks already in the pipe when it died were acknowledged too.
        lines.extend(lines_rx.try_iter());

        let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
        let mut max_acked = 0;
        for line in lines.iter().filter(|l| l.starts_with("ack ")) {
            let parts: Vec<&str> = line.split(' ').collect();
            let [_, op, key, rev] = parts[..] else {
                panic!("bad ack line {line:?}");
            };
            let rev: Revision = rev.parse().unwrap();
            max_acked = max_acked.max(rev);
            let entry = acked.entry(key.to_owned()).or_default();
            match op {
                "create" => entry.created = Some(rev),
                "update" => entry.updated = Some(rev),
                other => panic!("bad op {other}"),
            }
        }
        assert!(acked.len() >= kill_after / 2, "{} keys acked", acked.len());
        assert!(
            acked.len() < CRASH_TASKS * CRASH_KEYS_PER_TASK,
            "the child finished before the kill; the test proved nothing"
        );

        let store = RedbStore::open(dir.path()).unwrap();
        let current = store.current_revision().await.unwrap();
        assert!(
            current >= max_acked,
            "revision {current} below acknowledged {max_acked}"
        );
        for (key, ack) in &acked {
            let (task, i) = key
                .strip_prefix("/crash/")
                .and_then(|rest| rest.split_once('/'))
                .map(|(t, i)| (t.parse::<usize>().unwrap(), i.parse::<usize>().unwrap()))
                .unwrap();
            let kv = store
                .get(key)
                .await
                .unwrap()
                .0
                .unwrap_or_else(|| panic!("acknowledged key {key} lost ({ack:?})"));
            let created = ack
                .created
                .unwrap_or_else(|| panic!("update without create: {key}"));
            assert_eq!(kv.create_revision, created, "{key}");
            match ack.updated {
                Some(updated) => {
                    assert_eq!(kv.mod_revision, updated, "{key}");
                    assert_eq!(kv.value, crash_value(task, i, true), "{key}");
                }
                // An update may have committed without its ack getting out.
                None if kv.mod_revision == created => {
                    assert_eq!(kv.value, crash_value(task, i, false), "{key}");
                }
                None => assert_eq!(kv.value, crash_value(task, i, true), "{key}"),
            }
        }

        // The history survived too: a replay holds every acked write.
        let mut replay = store.watch("", 1).await.unwrap();
        let mut by_revision = BTreeMap::new();
        for expected in 2..=current {
            let event = replay.next().await.unwrap().unwrap();
            assert_eq!(event.revision(), expected);
            by_revision.insert(expected, event.kv.key);
        }
        for (key, ack) in &acked {
            for rev in ack.created.iter().chain(&ack.updated) {
                if *rev > 1 {
                    assert_eq!(by_revision.get(rev), Some(key), "history at {rev}");
                }
            }
        }

        // And the counter continues above everything acknowledged.
        let next = store.create("/after-crash", vec![]).await.unwrap();
        assert_eq!(next, current + 1);
        assert!(next > max_acked);
    }

    fn libc_sigkill() -> i32 {
        9
    }
}
