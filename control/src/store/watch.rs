//! Watch fan-out shared by the store implementations.
//!
//! Writers append each event to the store's history and only then publish it
//! on a broadcast channel, while still holding the store's write order (so the
//! channel carries events in revision order). A watcher subscribes *before*
//! reading history, so every event is either in the history it read or
//! arrives on the channel afterwards (or both: duplicates are dropped by
//! revision). Because every write bumps the revision by exactly one, a
//! watcher can tell a gap from the channel (it lagged and the channel dropped
//! events) and refills the gap from history; if that history is compacted it
//! yields [`StoreError::Compacted`] and ends. No event is lost silently.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{Event, Revision, StoreError, WatchStream};

/// How many revisions a watcher reads from history in one go, so a watcher
/// far behind does not pull its whole backlog into memory at once.
pub(crate) const HISTORY_PAGE: usize = 1024;

/// One page of history read from a consistent snapshot.
#[derive(Debug)]
pub(crate) struct HistoryPage {
    /// Events with revision in `(after, through]` whose key has the prefix,
    /// in revision order.
    pub events: Vec<Event>,
    /// The last revision this page covers.
    pub through: Revision,
    /// The store's current revision in the same snapshot.
    pub current: Revision,
}

/// Read access to a store's history, implemented by each backend.
pub(crate) trait HistorySource: Send + Sync + 'static {
    /// Events with revision in `(after, min(after + max_scan, current)]`
    /// whose key starts with `prefix`. Fails with [`StoreError::Compacted`]
    /// if `after` is below the compaction point and with
    /// [`StoreError::FutureRevision`] if it is above the current revision.
    fn read_history(
        &self,
        prefix: &str,
        after: Revision,
        max_scan: usize,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;

    /// The current revision, from a snapshot taken now.
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;
}

/// The live side of watch: a broadcast of committed events.
#[derive(Debug)]
pub(crate) struct Fanout {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Fanout {
    /// A fan-out whose channel holds `capacity` events per lagging receiver
    /// before it starts dropping (which watchers then refill from history).
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Fanout { tx }
    }

    /// Publishes a committed event. Call in revision order, after the event
    /// is readable from history.
    pub(crate) fn publish(&self, event: Event) {
        // An error only means nobody is watching right now.
        let _ = self.tx.send(Arc::new(event));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Opens a watch: subscribes, validates `from_revision` against a snapshot
/// taken after subscribing, and returns the stream.
pub(crate) async fn open<S: HistorySource>(
    source: &Arc<S>,
    fanout: &Fanout,
    prefix: &str,
    from_revision: Revision,
) -> Result<WatchStream, StoreError> {
    let rx = fanout.subscribe();
    let mut state = WatchState {
        source: Arc::downgrade(source),
        rx,
        prefix: prefix.to_owned(),
        last_seen: 0,
        catch_up_to: 0,
        buffer: VecDeque::new(),
        finished: false,
    };
    if from_revision <= 0 {
        let current = source.current_revision().await?;
        state.last_seen = current;
        state.catch_up_to = current;
    } else {
        // Read the first page now so a compacted or future revision fails the
        // call itself rather than the first item of the stream.
        let page = source
            .read_history(prefix, from_revision, HISTORY_PAGE)
            .await?;
        state.buffer.extend(page.events);
        state.last_seen = page.through;
        state.catch_up_to = page.current;
    }
    tracing::debug!(
        prefix,
        from_revision,
        start = state.last_seen,
        "watch opened"
    );
    Ok(futures::stream::unfold(state, |mut state| async move {
        state.next_event().await.map(|item| (item, state))
    })
    .boxed())
}

struct WatchState<S> {
    /// Weak so that an open watch does not keep a dropped store alive.
    source: Weak<S>,
    rx: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// Every revision at or below this has been delivered or filtered out.
    last_seen: Revision,
    /// History must be read until `last_seen` reaches this.
    catch_up_to: Revision,
    buffer: VecDeque<Event>,
    finished: bool,
}

impl<S: HistorySource> WatchState<S> {
    async fn next_event(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            if self.last_seen < self.catch_up_to {
                let source = match self.source.upgrade() {
                    Some(source) => source,
                    None => {
                        self.finished = true;
                        return None;
                    }
                };
                match source
                    .read_history(&self.prefix, self.last_seen, HISTORY_PAGE)
                    .await
                {
                    Ok(page) => {
                        tracing::trace!(
                            prefix = %self.prefix,
                            after = self.last_seen,
                            through = page.through,
                            events = page.events.len(),
                            "watch caught up from history"
                        );
                        if page.through <= self.last_seen {
                            // The snapshot had nothing newer; the rest will
                            // come from the channel.
                            self.catch_up_to = self.last_seen;
                        } else {
                            self.last_seen = page.through;
                            self.catch_up_to = self.catch_up_to.max(page.current);
                        }
                        self.buffer.extend(page.events);
                        continue;
                    }
                    Err(error) => {
                        self.finished = true;
                        return Some(Err(error));
                    }
                }
            }
            match self.rx.recv().await {
                Ok(event) => {
                    let revision = event.revision();
                    if revision <= self.last_seen {
                        // Already delivered from history.
                        continue;
                    }
                    if revision > self.last_seen + 1 {
                        // A gap: events were dropped for us. History has them
                        // (they were committed before being published).
                        self.catch_up_to = revision;
                        continue;
                    }
                    self.last_seen = revision;
                    if event.kv.key.starts_with(&self.prefix) {
                        return Some(Ok(Arc::unwrap_or_clone(event)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(prefix = %self.prefix, skipped, "watcher lagged; reading history");
                    // Force a history read; it raises catch_up_to to current.
                    self.catch_up_to = self.last_seen + 1;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }
}
