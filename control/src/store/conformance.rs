//! Behaviour every [`Store`] must have, run against each implementation.
//!
//! Each check takes a fresh store; `store_conformance!` instantiates them
//! all as tests for one backend. Stores are built with a tiny watch buffer so
//! that the lagging-watcher paths (catch-up from history) are exercised.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{
    Event, EventKind, INITIAL_REVISION, KeyValue, Revision, Store, StoreError, WatchStream,
};

/// A fresh store's revision.
const B: Revision = INITIAL_REVISION;

/// Watch buffer the conformance stores use: small, so watchers lag.
pub(crate) const SMALL_WATCH_BUFFER: usize = 8;

const WAIT: Duration = Duration::from_secs(20);

async fn next(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

async fn take(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next(stream).await);
    }
    events
}

/// Asserts nothing more arrives for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn summary(events: &[Event]) -> Vec<(Revision, String, bool)> {
    events
        .iter()
        .map(|e| (e.revision(), e.kv.key.clone(), e.kind == EventKind::Put))
        .collect()
}

pub(crate) async fn create_get_update_delete(store: Arc<dyn Store>) {
    // A fresh store is at INITIAL_REVISION; the first write is the next.
    assert_eq!(store.current_revision().await.unwrap(), B);
    assert_eq!(store.get("/a").await.unwrap(), (None, B));

    let r1 = store.create("/a", b"one".to_vec()).await.unwrap();
    assert_eq!(r1, B + 1);
    let (got, rev) = store.get("/a").await.unwrap();
    assert_eq!(rev, B + 1);
    assert_eq!(
        got,
        Some(KeyValue {
            key: "/a".into(),
            value: b"one".to_vec(),
            create_revision: B + 1,
            mod_revision: B + 1,
        })
    );

    let r2 = store.create("/b", b"bee".to_vec()).await.unwrap();
    assert_eq!(r2, B + 2);
    let r3 = store.update("/a", b"two".to_vec(), None).await.unwrap();
    assert_eq!(r3, B + 3);
    let (got, rev) = store.get("/a").await.unwrap();
    assert_eq!(rev, B + 3);
    let got = got.expect("updated key");
    assert_eq!(got.value, b"two");
    assert_eq!((got.create_revision, got.mod_revision), (B + 1, B + 3));

    let (deleted, r4) = store.delete("/a", Some(B + 3)).await.unwrap();
    assert_eq!(r4, B + 4);
    assert_eq!(deleted.value, b"two");
    assert_eq!(
        (deleted.create_revision, deleted.mod_revision),
        (B + 1, B + 3)
    );
    assert_eq!(store.get("/a").await.unwrap(), (None, B + 4));

    // Re-creating starts a new life: a new create revision.
    let r5 = store.create("/a", b"again".to_vec()).await.unwrap();
    let got = store.get("/a").await.unwrap().0.expect("re-created");
    assert_eq!((got.create_revision, got.mod_revision), (r5, r5));
    assert_eq!(store.current_revision().await.unwrap(), B + 5);
}

pub(crate) async fn refused_writes(store: Arc<dyn Store>) {
    let r1 = store.create("/k", b"v".to_vec()).await.unwrap();
    assert!(matches!(
        store.create("/k", b"w".to_vec()).await,
        Err(StoreError::AlreadyExists { key }) if key == "/k"
    ));
    assert!(matches!(
        store.update("/missing", b"w".to_vec(), None).await,
        Err(StoreError::NotFound { key }) if key == "/missing"
    ));
    assert!(matches!(
        store.update("/missing", b"w".to_vec(), Some(1)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/missing", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update("/k", b"w".to_vec(), Some(r1 + 7)).await,
        Err(StoreError::Conflict { key, expected, actual }) if key == "/k" && expected == r1 + 7 && actual == r1
    ));
    assert!(matches!(
        store.delete("/k", Some(r1 - 1)).await,
        Err(StoreError::Conflict { expected, actual, .. }) if expected == r1 - 1 && actual == r1
    ));
    // Refused writes neither change data nor bump the revision.
    assert_eq!(store.current_revision().await.unwrap(), r1);
    let got = store.get("/k").await.unwrap().0.expect("still there");
    assert_eq!(got.value, b"v");

    // The matching revision succeeds; the stale one then conflicts.
    let r2 = store.update("/k", b"w".to_vec(), Some(r1)).await.unwrap();
    assert_eq!(r2, r1 + 1);
    assert!(matches!(
        store.update("/k", b"x".to_vec(), Some(r1)).await,
        Err(StoreError::Conflict { actual, .. }) if actual == r2
    ));
    store.delete("/k", Some(r2)).await.unwrap();
}

pub(crate) async fn list_prefix_sorted(store: Arc<dyn Store>) {
    for key in [
        "/pods/ns/b",
        "/pods/ns/a",
        "/pods/nsx/c",
        "/pods/ns/c",
        "/svc/ns/a",
        "/pods/n",
    ] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let (items, rev) = store.list("/pods/ns/").await.unwrap();
    assert_eq!(rev, B + 6);
    let keys: Vec<_> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pods/ns/a", "/pods/ns/b", "/pods/ns/c"]);
    assert!(items.iter().all(|kv| kv.value == kv.key.as_bytes()));

    let (all, _) = store.list("").await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "sorted");
    let (none, rev) = store.list("/nodes/").await.unwrap();
    assert!(none.is_empty());
    assert_eq!(rev, B + 6);
}

pub(crate) async fn revisions_are_monotonic(store: Arc<dyn Store>) {
    let mut last = store.current_revision().await.unwrap();
    for i in 0..20 {
        let key = format!("/k{}", i % 5);
        let rev = if i < 5 {
            store.create(&key, vec![i]).await.unwrap()
        } else if i % 7 == 0 {
            let (_, rev) = store.delete(&key, None).await.unwrap();
            store.create(&key, vec![i]).await.unwrap();
            assert_eq!(store.current_revision().await.unwrap(), rev + 1);
            rev + 1
        } else {
            store.update(&key, vec![i], None).await.unwrap()
        };
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    }
}

pub(crate) async fn watch_from_past_revision(store: Arc<dyn Store>) {
    store.create("/w/a", b"1".to_vec()).await.unwrap(); // B + 1
    store.create("/w/b", b"2".to_vec()).await.unwrap(); // B + 2
    store.create("/other", b"x".to_vec()).await.unwrap(); // B + 3
    store
        .update("/w/a", b"3".to_vec(), Some(B + 1))
        .await
        .unwrap(); // B + 4
    store.delete("/w/b", None).await.unwrap(); // B + 5

    let mut watch = store.watch("/w/", B + 1).await.unwrap();
    let replay = take(&mut watch, 3).await;
    assert_eq!(
        summary(&replay),
        [
            (B + 2, "/w/b".to_owned(), true),
            (B + 4, "/w/a".to_owned(), true),
            (B + 5, "/w/b".to_owned(), false),
        ]
    );
    assert_eq!(replay[0].prev, None);
    // Update: new value with the old as prev.
    assert_eq!(replay[1].kv.value, b"3");
    assert_eq!(replay[1].kv.create_revision, B + 1);
    assert_eq!(
        replay[1].prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"1"[..])
    );
    // Delete: last value, mod revision of the delete, prev as it was.
    assert_eq!(replay[2].kv.value, b"2");
    assert_eq!(replay[2].kv.create_revision, B + 2);
    assert_eq!(replay[2].prev.as_ref().map(|p| p.mod_revision), Some(B + 2));
    assert_quiet(&mut watch).await;

    // Then live events follow without a gap.
    store.create("/w/c", b"6".to_vec()).await.unwrap();
    store.create("/other2", b"7".to_vec()).await.unwrap();
    store.update("/w/c", b"8".to_vec(), None).await.unwrap();
    let live = take(&mut watch, 2).await;
    assert_eq!(
        summary(&live),
        [
            (B + 6, "/w/c".to_owned(), true),
            (B + 8, "/w/c".to_owned(), true)
        ]
    );
    assert_quiet(&mut watch).await;

    // Watching from the current revision replays nothing.
    let mut at_head = store.watch("", B + 8).await.unwrap();
    assert_quiet(&mut at_head).await;
    store.create("/z", vec![]).await.unwrap();
    assert_eq!(next(&mut at_head).await.revision(), B + 9);
}

pub(crate) async fn watch_from_zero_sees_only_new(store: Arc<dyn Store>) {
    store.create("/a", b"old".to_vec()).await.unwrap();
    store.update("/a", b"older".to_vec(), None).await.unwrap();
    let mut watch = store.watch("", 0).await.unwrap();
    assert_quiet(&mut watch).await;
    let rev = store.update("/a", b"new".to_vec(), None).await.unwrap();
    let event = next(&mut watch).await;
    assert_eq!(event.revision(), rev);
    assert_eq!(event.kv.value, b"new");
    assert_quiet(&mut watch).await;
}

pub(crate) async fn watch_rejects_bad_revisions(store: Arc<dyn Store>) {
    store.create("/a", vec![]).await.unwrap();
    assert!(matches!(
        store.watch("", B + 5).await,
        Err(StoreError::FutureRevision { requested, current }) if requested == B + 5 && current == B + 1
    ));
    assert!(matches!(
        store.compact(B + 2).await,
        Err(StoreError::FutureRevision { requested, current }) if requested == B + 2 && current == B + 1
    ));
}

pub(crate) async fn compaction(store: Arc<dyn Store>) {
    for i in 0..6u8 {
        store.create(&format!("/c/{i}"), vec![i]).await.unwrap();
    }
    assert_eq!(store.compacted_revision().await.unwrap(), B);
    store.compact(B + 4).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), B + 4);
    // Compacting lower again is a no-op.
    store.compact(B + 2).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), B + 4);

    assert!(matches!(
        store.watch("", B + 3).await,
        Err(StoreError::Compacted { requested, compacted }) if requested == B + 3 && compacted == B + 4
    ));
    // From the compaction point itself, everything after is still there.
    let mut watch = store.watch("", B + 4).await.unwrap();
    let events = take(&mut watch, 2).await;
    assert_eq!(
        events.iter().map(Event::revision).collect::<Vec<_>>(),
        [B + 5, B + 6]
    );

    // Data is untouched, and the revision does not move.
    let (items, rev) = store.list("/c/").await.unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(rev, B + 6);
    assert_eq!(store.current_revision().await.unwrap(), B + 6);
    assert_eq!(store.create("/c/next", vec![]).await.unwrap(), B + 7);
    assert_eq!(next(&mut watch).await.revision(), B + 7);
}

/// A watcher that falls behind the live buffer is caught up from history,
/// with nothing lost or repeated.
pub(crate) async fn lagging_watcher_catches_up(store: Arc<dyn Store>) {
    let mut watch = store.watch("/lag/", 0).await.unwrap();
    let n = SMALL_WATCH_BUFFER * 40;
    for i in 0..n {
        let key = format!("/lag/{}", i % 7);
        if store.get(&key).await.unwrap().0.is_some() {
            store
                .update(&key, i.to_string().into_bytes(), None)
                .await
                .unwrap();
        } else {
            store
                .create(&key, i.to_string().into_bytes())
                .await
                .unwrap();
        }
        if i % 10 == 0 {
            store.create(&format!("/other/{i}"), vec![]).await.unwrap();
        }
    }
    let events = take(&mut watch, n).await;
    let values: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(e.kv.value.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(values, expected);
    assert!(events.windows(2).all(|w| w[0].revision() < w[1].revision()));
    assert_quiet(&mut watch).await;
}

/// A watcher so far behind that its history is compacted gets `Compacted`
/// rather than a stream with a hole in it.
pub(crate) async fn lagging_watcher_past_compaction_errors(store: Arc<dyn Store>) {
    let mut watch = store.watch("", 0).await.unwrap();
    let n = SMALL_WATCH_BUFFER * 10;
    for i in 0..n {
        store.create(&format!("/k/{i}"), vec![]).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    store.compact(current - 2).await.unwrap();
    let mut seen = Vec::new();
    let error = loop {
        match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(Ok(event))) => seen.push(event.revision()),
            Ok(Some(Err(error))) => break error,
            Ok(None) => panic!("watch ended without an error after {seen:?}"),
            Err(_) => panic!("watch stalled after {seen:?}"),
        }
    };
    assert!(
        matches!(error, StoreError::Compacted { compacted, .. } if compacted == current - 2),
        "{error:?}"
    );
    // What it did deliver before the error was a gap-free prefix.
    let expected: Vec<Revision> = (B + 1..=B + Revision::try_from(seen.len()).unwrap()).collect();
    assert_eq!(seen, expected);
    assert!(watch.next().await.is_none(), "stream ends after the error");
}

/// Many concurrent writers: the revisions are exactly 1..=n, and two
/// watchers (one slow) see the same complete sequence.
pub(crate) async fn concurrent_writers_gap_free(store: Arc<dyn Store>) {
    let mut fast = store.watch("", 0).await.unwrap();
    let mut slow = store.watch("", 0).await.unwrap();
    let tasks = 8;
    let per_task = 40;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..per_task {
                let key = format!("/t{t}/{i}");
                revisions.push(store.create(&key, vec![t, i]).await.unwrap());
                // Contended conditional updates on one shared key.
                loop {
                    let (kv, _) = store.get("/shared").await.unwrap();
                    let result = match kv {
                        None => store.create("/shared", vec![t]).await.map(|r| vec![r]),
                        Some(kv) => store
                            .update("/shared", vec![t, i], Some(kv.mod_revision))
                            .await
                            .map(|r| vec![r]),
                    };
                    match result {
                        Ok(r) => {
                            revisions.extend(r);
                            break;
                        }
                        Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            revisions
        }));
    }
    let fast_events = take(&mut fast, usize::from(tasks) * usize::from(per_task) * 2).await;
    let mut acked = HashSet::new();
    for handle in handles {
        for rev in handle.await.unwrap() {
            assert!(acked.insert(rev), "revision {rev} acknowledged twice");
        }
    }
    let n = Revision::try_from(acked.len()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), B + n);
    assert_eq!(acked, (B + 1..=B + n).collect::<HashSet<_>>());
    // Only now read the slow watcher: it has lagged far behind its buffer.
    let slow_events = take(&mut slow, acked.len()).await;
    let fast_revs: Vec<_> = fast_events.iter().map(Event::revision).collect();
    assert_eq!(fast_revs, (B + 1..=B + n).collect::<Vec<_>>());
    assert_eq!(fast_events, slow_events);
    assert_quiet(&mut fast).await;
    assert_quiet(&mut slow).await;
}

/// Watches opened while writes are in flight, from a past revision or from
/// now, each see a gap-free sequence starting right after their start.
pub(crate) async fn watch_opened_during_writes(store: Arc<dyn Store>) {
    let writes: Revision = 200;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..writes {
                store.create(&format!("/busy/{i}"), vec![]).await.unwrap();
                // Let the watches open between writes even on a fast store.
                tokio::task::yield_now().await;
            }
        })
    };
    let mut watches = Vec::new();
    for round in 0..10 {
        let before = store.current_revision().await.unwrap();
        let from = if round % 2 == 0 { before } else { 0 };
        watches.push((round, before, store.watch("/busy/", from).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    // A last write every watch must reach, however late it opened.
    let end = store.create("/busy/end", vec![]).await.unwrap();
    assert_eq!(end, B + writes + 1);
    for (round, before, mut stream) in watches {
        let mut last = None;
        while last != Some(end) {
            let rev = next(&mut stream).await.revision();
            match last {
                // A watch from a revision starts right after it; one from
                // now starts somewhere after the revision seen before it.
                None if round % 2 == 0 => assert_eq!(rev, before + 1, "round {round}"),
                None => assert!(rev > before, "round {round}: {rev} <= {before}"),
                Some(last) => assert_eq!(rev, last + 1, "round {round}"),
            }
            last = Some(rev);
        }
        assert_quiet(&mut stream).await;
    }
}

/// A watch does not keep a dropped store alive; its stream ends.
pub(crate) async fn watch_ends_when_store_dropped(store: Arc<dyn Store>) {
    let mut watch = store.watch("", 0).await.unwrap();
    store.create("/a", vec![]).await.unwrap();
    assert_eq!(next(&mut watch).await.revision(), B + 1);
    drop(store);
    let end = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("stream should end");
    assert!(end.is_none(), "{end:?}");
}

/// Instantiates every conformance check as a test. `$make` evaluates to
/// `(Arc<dyn Store>, guard)`; the guard lives for the test.
macro_rules! store_conformance {
    ($make:expr) => {
        store_conformance!(@tests $make;
            create_get_update_delete,
            refused_writes,
            list_prefix_sorted,
            revisions_are_monotonic,
            watch_from_past_revision,
            watch_from_zero_sees_only_new,
            watch_rejects_bad_revisions,
            compaction,
            lagging_watcher_catches_up,
            lagging_watcher_past_compaction_errors,
            concurrent_writers_gap_free,
            watch_opened_during_writes,
            watch_ends_when_store_dropped,
        );
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}

mod memory {
    use super::*;
    use crate::store::MemStore;

    fn make() -> (Arc<dyn Store>, ()) {
        (
            Arc::new(MemStore::with_watch_buffer(SMALL_WATCH_BUFFER)),
            (),
        )
    }

    store_conformance!(make());
}

mod redb {
    use super::*;
    use crate::store::{RedbConfig, RedbStore};

    fn make() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RedbConfig {
            watch_buffer: SMALL_WATCH_BUFFER,
            ..RedbConfig::default()
        };
        let store = RedbStore::open_with(dir.path(), config).expect("open store");
        (Arc::new(store), dir)
    }

    store_conformance!(make());
}
