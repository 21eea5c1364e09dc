//! The feeder: watches Services and EndpointSlices in all namespaces
//! through the API (kube-runtime watcher → reflector stores) and publishes a
//! fresh [`ClusterView`] after every change.
//!
//! Nothing is published until both watches have finished their initial
//! list, so DNS never answers from half a cluster; after that, every event
//! triggers a rebuild from the stores (level-triggered: the view is a pure
//! function of the store contents, never patched incrementally). Events
//! that arrive together are coalesced into one rebuild.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::view::{ClusterView, ViewHandle};

/// Errors that end the feeder.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Both watch streams ended, which they do not do while the client lives.
    #[error("the watch streams ended unexpectedly")]
    StreamsEnded,
}

/// One step of either watch, reduced to what the feeder needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The Service store finished (re)listing.
    ServicesListed,
    /// The EndpointSlice store finished (re)listing.
    SlicesListed,
    /// An object was applied or deleted.
    Changed,
    /// Part of a relist in progress: nothing to publish yet.
    Listing,
    /// The watch failed; it retries by itself with backoff.
    Error,
}

fn classify<K>(event: Result<watcher::Event<K>, watcher::Error>, listed: Change) -> Change {
    match event {
        Ok(watcher::Event::InitDone) => listed,
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Change::Changed,
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Change::Listing,
        Err(error) => {
            warn!(%error, "watch failed; retrying");
            Change::Error
        }
    }
}

/// Builds a view from the stores' current contents.
fn snapshot(services: &Store<Service>, slices: &Store<EndpointSlice>) -> ClusterView {
    let services = services.state();
    let slices = slices.state();
    ClusterView::from_objects(
        services.iter().map(AsRef::as_ref),
        slices.iter().map(AsRef::as_ref),
    )
}

/// Watches Services and EndpointSlices in all namespaces and publishes a
/// new view into `view` after each change, until `shutdown` is cancelled.
///
/// Watch errors are logged and retried with kube's default backoff; the
/// feeder fails only if both streams end.
pub async fn run_feeder(
    client: kube::Client,
    view: ViewHandle,
    shutdown: CancellationToken,
) -> Result<(), FeedError> {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let services = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| classify(e, Change::ServicesListed));
    let slices = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|e| classify(e, Change::SlicesListed));

    feed(
        stream::select(services, slices),
        || snapshot(&svc_store, &slice_store),
        &view,
        shutdown,
    )
    .instrument(info_span!("dns_feeder"))
    .await
}

/// The feeder's loop, apart from kube so it can be tested with any stream.
async fn feed(
    changes: impl Stream<Item = Change>,
    build: impl Fn() -> ClusterView,
    view: &ViewHandle,
    shutdown: CancellationToken,
) -> Result<(), FeedError> {
    let mut changes = std::pin::pin!(changes.ready_chunks(256));
    let (mut services_listed, mut slices_listed) = (false, false);
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => {
                info!("stopping");
                return Ok(());
            }
            batch = changes.next() => batch,
        };
        let Some(batch) = batch else {
            return Err(FeedError::StreamsEnded);
        };
        let mut dirty = false;
        for change in batch {
            match change {
                Change::ServicesListed => {
                    services_listed = true;
                    dirty = true;
                }
                Change::SlicesListed => {
                    slices_listed = true;
                    dirty = true;
                }
                Change::Changed => dirty = true,
                Change::Listing | Change::Error => {}
            }
        }
        if dirty && services_listed && slices_listed {
            let next = build();
            let services = next.service_count();
            let generation = view.publish(next);
            debug!(generation, services, "published view");
        }
        // A short pause lets a burst of events (a rollout) land in one batch.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn publishes_only_after_both_lists_then_on_every_change() {
        let view = ViewHandle::new();
        let builds = AtomicUsize::new(0);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Change>();
        let shutdown = CancellationToken::new();
        let task = {
            let view = view.clone();
            let shutdown = shutdown.clone();
            let builds = &builds;
            async move {
                feed(
                    rx,
                    || {
                        builds.fetch_add(1, Ordering::SeqCst);
                        ClusterView::default()
                    },
                    &view,
                    shutdown,
                )
                .await
            }
        };
        let driver = async {
            let wait = || tokio::time::sleep(Duration::from_millis(50));
            tx.unbounded_send(Change::Listing).expect("send");
            tx.unbounded_send(Change::ServicesListed).expect("send");
            tx.unbounded_send(Change::Changed).expect("send");
            wait().await;
            assert_eq!(view.load().generation(), 0, "slices not listed yet");
            tx.unbounded_send(Change::SlicesListed).expect("send");
            wait().await;
            assert_eq!(view.load().generation(), 1);
            tx.unbounded_send(Change::Error).expect("send");
            wait().await;
            assert_eq!(view.load().generation(), 1, "errors do not publish");
            tx.unbounded_send(Change::Changed).expect("send");
            wait().await;
            assert_eq!(view.load().generation(), 2);
            shutdown.cancel();
        };
        let (result, ()) = tokio::join!(task, driver);
        result.expect("clean stop");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn snapshot_reads_both_stores() {
        use k8s_openapi::api::core::v1::ServiceSpec;
        use k8s_openapi::api::discovery::v1::Endpoint;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

        let mut services = reflector::store::Writer::<Service>::default();
        let mut slices = reflector::store::Writer::<EndpointSlice>::default();
        let svc = Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("db".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("db-1".into()),
                labels: Some(
                    [(crate::view::SERVICE_NAME_LABEL.to_owned(), "db".to_owned())].into(),
                ),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["10.1.0.9".into()],
                ..Endpoint::default()
            }]),
            ports: None,
        };
        services.apply_watcher_event(&watcher::Event::Apply(svc.clone()));
        slices.apply_watcher_event(&watcher::Event::Apply(slice));
        let view = snapshot(&services.as_reader(), &slices.as_reader());
        let db = view.service("ns", "db").expect("service from the store");
        assert_eq!(
            db.endpoints.len(),
            1,
            "joined with the slice from the other store"
        );

        services.apply_watcher_event(&watcher::Event::Delete(svc));
        let view = snapshot(&services.as_reader(), &slices.as_reader());
        assert_eq!(view.service_count(), 0, "deletion is reflected");
    }

    #[tokio::test]
    async fn ending_streams_are_an_error() {
        let view = ViewHandle::new();
        let result = feed(
            stream::iter([Change::ServicesListed]),
            ClusterView::default,
            &view,
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(result, Err(FeedError::StreamsEnded)));
    }
}
