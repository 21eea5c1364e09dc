//! Watch streams: store events → Kubernetes watch events, one JSON object
//! per line: `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`.
//!
//! Selectors are applied to both sides of a change, as the Kubernetes watch
//! cache does: an object that stops matching is sent as DELETED (its last
//! matching state, at the new resourceVersion), one that starts matching as
//! ADDED. A resourceVersion older than the store's compaction point gets an
//! ERROR event with a 410 `Expired` Status, which tells clients (kube-rs's
//! watcher, client-go's reflector) to re-list.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::error::ApiError;
use super::meta;
use super::query::ObjectFilter;
use super::table::{self, TableRequest};
use crate::kinds::KindInfo;
use crate::store::{Event, EventKind, KeyValue, Revision, Store, StoreError};

/// Annotation on the bookmark that ends the initial events of a
/// `sendInitialEvents=true` watch.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// Watch events buffered per stream before the producer waits for the
/// client.
const STREAM_BUFFER: usize = 256;

/// Watch event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object now matches (created, or started matching).
    Added,
    /// A matching object changed.
    Modified,
    /// The object was deleted or stopped matching.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// Decodes a stored value into the API object at `revision`.
///
/// # Errors
/// The stored bytes are not JSON.
pub fn object_at(value: &[u8], revision: Revision) -> Result<Value, serde_json::Error> {
    let mut object: Value = serde_json::from_slice(value)?;
    meta::set_resource_version(&mut object, revision);
    Ok(object)
}

/// The API object of a key-value, at its mod revision.
///
/// # Errors
/// The stored bytes are not JSON.
pub fn object_of(kv: &KeyValue) -> Result<Value, serde_json::Error> {
    object_at(&kv.value, kv.mod_revision)
}

/// What a watcher with `filter` sees for one store event, if anything.
///
/// # Errors
/// A stored value is not JSON.
pub fn translate(
    event: &Event,
    filter: &ObjectFilter,
) -> Result<Option<(EventType, Value)>, serde_json::Error> {
    let revision = event.revision();
    match event.kind {
        EventKind::Delete => {
            let object = object_at(&event.kv.value, revision)?;
            Ok(filter
                .matches(&object)
                .then_some((EventType::Deleted, object)))
        }
        EventKind::Put => {
            let current = object_at(&event.kv.value, revision)?;
            let now = filter.matches(&current);
            let before = match &event.prev {
                Some(prev) => {
                    let previous = object_at(&prev.value, revision)?;
                    let matched = filter.matches(&previous);
                    Some((previous, matched))
                }
                None => None,
            };
            Ok(match (before, now) {
                (None, true) | (Some((_, false)), true) => Some((EventType::Added, current)),
                (Some((_, true)), true) => Some((EventType::Modified, current)),
                (Some((previous, true)), false) => Some((EventType::Deleted, previous)),
                (None, false) | (Some((_, false)), false) => None,
            })
        }
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// One event line.
pub fn event_line(event_type: EventType, object: &Value) -> Bytes {
    line(&json!({"type": event_type.as_str(), "object": object}))
}

/// A BOOKMARK line at `revision`.
pub fn bookmark_line(kind: &KindInfo, revision: Revision, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    line(&json!({
        "type": "BOOKMARK",
        "object": {"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata},
    }))
}

/// An ERROR line carrying the Status of `error`.
pub fn error_line(error: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": error.status()}))
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Events after this resourceVersion.
    After(Revision),
    /// ADDED for every current object, then live events; with `end_bookmark`
    /// a bookmark annotated [`INITIAL_EVENTS_END`] separates the two.
    Initial {
        /// Send the end-of-initial-events bookmark.
        end_bookmark: bool,
    },
}

/// A watch to serve.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// The kind watched.
    pub kind: Arc<KindInfo>,
    /// Key prefix (namespace or all).
    pub prefix: String,
    /// Selectors.
    pub filter: ObjectFilter,
    /// Start point.
    pub start: Start,
    /// Close the stream after this long.
    pub timeout: Duration,
    /// Send a BOOKMARK this often (`None`: never).
    pub bookmark_every: Option<Duration>,
    /// Send each object as a one-row Table (kubectl `get -w`).
    pub table: Option<TableRequest>,
}

impl WatchSpec {
    /// One event line, the object rendered as the client asked.
    fn line(&self, event_type: EventType, object: &Value) -> Bytes {
        match self.table {
            None => event_line(event_type, object),
            Some(request) => {
                let metadata = json!({
                    "resourceVersion": object
                        .pointer("/metadata/resourceVersion")
                        .cloned()
                        .unwrap_or(Value::Null),
                });
                let rendered = table::render(
                    self.kind.kind,
                    std::slice::from_ref(object),
                    metadata,
                    request,
                    chrono::Utc::now(),
                );
                event_line(event_type, &rendered)
            }
        }
    }
}

/// Starts the watch and returns the streaming response body. The producer
/// task ends when the client goes away, the timeout passes, `shutdown`
/// fires, or the store stream ends.
pub fn stream(
    store: Arc<dyn Store>,
    spec: WatchSpec,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let span = tracing::debug_span!("watch", kind = spec.kind.kind, prefix = spec.prefix.as_str(), start = ?spec.start);
    tokio::spawn(produce(store, spec, tx, shutdown).instrument(span));
    let body =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<Bytes, std::convert::Infallible>);
    Body::from_stream(body)
}

async fn produce(
    store: Arc<dyn Store>,
    spec: WatchSpec,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let from = match spec.start {
        Start::After(revision) => revision,
        Start::Initial { end_bookmark } => match initial_events(store.as_ref(), &spec, &tx).await {
            Ok(revision) => {
                if end_bookmark
                    && tx
                        .send(bookmark_line(&spec.kind, revision, true))
                        .await
                        .is_err()
                {
                    return;
                }
                revision
            }
            Err(error) => {
                let _closed = tx.send(error_line(&error)).await;
                return;
            }
        },
    };
    let mut events = match store.watch(&spec.prefix, from).await {
        Ok(events) => events,
        Err(error) => {
            let _closed = tx.send(error_line(&watch_error(error))).await;
            return;
        }
    };
    tracing::debug!(from, "watch started");
    let mut last = from;
    let mut bookmarks = spec.bookmark_every.map(|every| {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        let bookmark_tick = async {
            match bookmarks.as_mut() {
                Some(ticker) => ticker.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tx.closed() => break,
            () = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => break,
            _ = bookmark_tick => {
                if tx.send(bookmark_line(&spec.kind, last, false)).await.is_err() {
                    break;
                }
            }
            next = events.next() => match next {
                None => break,
                Some(Err(error)) => {
                    let _closed = tx.send(error_line(&watch_error(error))).await;
                    break;
                }
                Some(Ok(event)) => {
                    // Events filtered out still advance the bookmark point:
                    // everything up to here has been considered.
                    last = event.revision();
                    match translate(&event, &spec.filter) {
                        Ok(Some((event_type, object))) => {
                            if tx.send(spec.line(event_type, &object)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(error) => tracing::warn!(%error, key = event.kv.key.as_str(), "undecodable stored object skipped"),
                    }
                }
            }
        }
    }
    tracing::debug!(last, "watch ended");
}

async fn initial_events(
    store: &dyn Store,
    spec: &WatchSpec,
    tx: &mpsc::Sender<Bytes>,
) -> Result<Revision, ApiError> {
    let (kvs, revision) = store.list(&spec.prefix).await?;
    for kv in &kvs {
        match object_of(kv) {
            Ok(object) if spec.filter.matches(&object) => {
                if tx.send(spec.line(EventType::Added, &object)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, key = kv.key.as_str(), "undecodable stored object skipped")
            }
        }
    }
    Ok(revision)
}

fn watch_error(error: StoreError) -> ApiError {
    match error {
        StoreError::FutureRevision { requested, current } => ApiError::Unavailable(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        other => ApiError::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Selector;

    fn kv(value: Value, revision: Revision) -> KeyValue {
        KeyValue {
            key: "/registry/pods/ns/p".into(),
            value: serde_json::to_vec(&value).expect("json"),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    fn pod(app: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": app}}})
    }

    fn filter(selector: &str) -> ObjectFilter {
        ObjectFilter {
            labels: Selector::parse(selector).expect("selector"),
            ..ObjectFilter::default()
        }
    }

    fn put(prev: Option<Value>, now: Value, revision: Revision) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kv(now, revision),
            prev: prev.map(|p| kv(p, revision - 1)),
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let f = filter("app=web");
        let (t, o) = translate(&put(None, pod("web"), 5), &f)
            .expect("json")
            .expect("event");
        assert_eq!(
            (t, o["metadata"]["resourceVersion"].as_str()),
            (EventType::Added, Some("5"))
        );
        let (t, _) = translate(&put(Some(pod("web")), pod("web"), 6), &f)
            .expect("json")
            .expect("event");
        assert_eq!(t, EventType::Modified);
        let (t, o) = translate(&put(Some(pod("web")), pod("db"), 7), &f)
            .expect("json")
            .expect("event");
        assert_eq!(t, EventType::Deleted);
        assert_eq!(o["metadata"]["labels"]["app"], "web", "last matching state");
        assert_eq!(o["metadata"]["resourceVersion"], "7", "at the new revision");
        let (t, _) = translate(&put(Some(pod("db")), pod("web"), 8), &f)
            .expect("json")
            .expect("event");
        assert_eq!(t, EventType::Added);
        assert!(
            translate(&put(Some(pod("db")), pod("db"), 9), &f)
                .expect("json")
                .is_none()
        );
        assert!(
            translate(&put(None, pod("db"), 9), &f)
                .expect("json")
                .is_none()
        );
    }

    #[test]
    fn deletes_pass_the_filter_on_last_state() {
        let f = filter("app=web");
        let delete = |app: &str| Event {
            kind: EventKind::Delete,
            kv: kv(pod(app), 10),
            prev: None,
        };
        let (t, o) = translate(&delete("web"), &f).expect("json").expect("event");
        assert_eq!(
            (t, o["metadata"]["resourceVersion"].as_str()),
            (EventType::Deleted, Some("10"))
        );
        assert!(translate(&delete("db"), &f).expect("json").is_none());
    }

    #[test]
    fn lines_are_newline_delimited_json() {
        let kinds = crate::kinds::Kinds::builtin();
        let pods = kinds.of::<k8s_openapi::api::core::v1::Pod>().expect("pods");
        let b = bookmark_line(pods, 12, true);
        assert!(b.ends_with(b"\n"));
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["kind"], "Pod");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "12");
        assert_eq!(
            v["object"]["metadata"]["annotations"][INITIAL_EVENTS_END],
            "true"
        );
        let e: Value = serde_json::from_slice(&error_line(&ApiError::Expired {
            requested: 1,
            compacted: 5,
        }))
        .expect("json");
        assert_eq!(e["type"], "ERROR");
        assert_eq!(e["object"]["code"], 410);
        assert_eq!(e["object"]["reason"], "Expired");
    }
}
