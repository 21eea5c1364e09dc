//! The proxy loop: list+watch Services and EndpointSlices through the
//! Kubernetes API (kube-runtime reflectors, the same client that works
//! against a real Kubernetes API server), turn them into a
//! [`DesiredState`], and hand the newest state to the dataplane.
//!
//! The dataplane runs on its own OS thread (its syncs are blocking
//! syscalls); the async side only ever sends the latest state through a
//! `watch` channel, so bursts of API events collapse into one sync.
//! Nothing is synced before both initial lists arrived: an empty first sync
//! would wipe the state a restarted eBPF dataplane just adopted.
//!
//! After the first full build, each watch event names the Service it
//! touches (a Service itself, or the one an EndpointSlice's
//! `kubernetes.io/service-name` label points at) and only those Services'
//! entries are rebuilt ([`DesiredState::refresh_services`]); the resync
//! period rebuilds everything.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::dataplane::Dataplane;
use crate::model::{DesiredState, ServicePortKey};

/// Plain-data configuration of the proxy loop.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    pub node_ips: Vec<Ipv4Addr>,
    pub cluster_cidr: Option<Ipv4Network>,
    /// Even without API changes the dataplane is synced this often, so
    /// drift (someone flushed our rules) is repaired.
    pub resync_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the dataplane thread stopped unexpectedly")]
    DataplaneThread,
    #[error("watching {what} failed before the initial list arrived: {source}")]
    InitialList {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs until `shutdown` resolves. Dataplane errors are logged and retried
/// on the next change or resync; they do not stop the loop.
pub async fn run(
    client: Client,
    dataplane: Box<dyn Dataplane>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (eps_store, eps_writer) = reflector::store::<EndpointSlice>();
    let (changed_tx, mut changed_rx) = watch::channel(());

    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let eps_events = reflector::reflector(
        eps_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();

    // Services touched since the last rebuild, as (namespace, name).
    let touched: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let notify = changed_tx.clone();
    let pending = Arc::clone(&touched);
    let watchers = tokio::spawn(async move {
        let mut merged = futures::stream::select(
            svc_events
                .map(|r| r.map(|s| service_of_service(&s)))
                .boxed(),
            eps_events.map(|r| r.map(|s| service_of_slice(&s))).boxed(),
        );
        while let Some(ev) = merged.next().await {
            match ev {
                Ok(service) => {
                    if let Some(service) = service {
                        pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(service);
                    }
                    let _ = notify.send(());
                }
                Err(e) => tracing::warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
    });

    svc_store
        .wait_until_ready()
        .await
        .map_err(|e| ProxyError::InitialList {
            what: "services",
            source: Box::new(e),
        })?;
    eps_store
        .wait_until_ready()
        .await
        .map_err(|e| ProxyError::InitialList {
            what: "endpointslices",
            source: Box::new(e),
        })?;
    tracing::info!(
        services = svc_store.len(),
        endpointslices = eps_store.len(),
        "initial lists received"
    );

    touched
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let pending = Arc::new(Mutex::new(Pending {
        state: Arc::new(desired(&config, &svc_store, &eps_store)),
        changed: None,
    }));
    let (wake_tx, wake_rx) = watch::channel(());
    let for_thread = Arc::clone(&pending);
    let worker = std::thread::Builder::new()
        .name("skiff-dataplane".into())
        .spawn(move || dataplane_thread(dataplane, &for_thread, wake_rx))
        .map_err(|_| ProxyError::DataplaneThread)?;

    let mut resync = tokio::time::interval(config.resync_period);
    resync.tick().await;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            changed = changed_rx.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let services =
                    std::mem::take(&mut *touched.lock().unwrap_or_else(PoisonError::into_inner));
                if services.is_empty() {
                    continue;
                }
                let changed = {
                    let mut next = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    // In place, unless the dataplane thread still syncs
                    // this very state (then it is copied first).
                    let keys = refresh(Arc::make_mut(&mut next.state), &services, &svc_store, &eps_store);
                    let n = keys.len();
                    if let Some(all) = next.changed.as_mut() {
                        all.extend(keys);
                    }
                    n
                };
                tracing::debug!(services = services.len(), ports_changed = changed, "rebuilt touched services");
                if changed > 0 && wake_tx.send(()).is_err() {
                    break Err(ProxyError::DataplaneThread);
                }
            }
            _ = resync.tick() => {
                // A full rebuild, and a sync even if nothing changed: the
                // dataplane re-applies what drifted.
                touched.lock().unwrap_or_else(PoisonError::into_inner).clear();
                {
                    let mut next = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    next.state = Arc::new(desired(&config, &svc_store, &eps_store));
                    next.changed = None;
                }
                if wake_tx.send(()).is_err() {
                    break Err(ProxyError::DataplaneThread);
                }
            }
        }
    };
    watchers.abort();
    drop(wake_tx);
    if worker.join().is_err() {
        return Err(ProxyError::DataplaneThread);
    }
    result
}

/// The Service a Service event touches.
fn service_of_service(s: &Service) -> Option<(String, String)> {
    Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?))
}

/// The Service an EndpointSlice event touches (its service-name label).
fn service_of_slice(s: &EndpointSlice) -> Option<(String, String)> {
    let service = s
        .metadata
        .labels
        .as_ref()?
        .get(crate::model::SERVICE_NAME_LABEL)?;
    Some((s.metadata.namespace.clone()?, service.clone()))
}

/// What the dataplane thread syncs next: the newest state, and the
/// service ports changed since the last sync it started (`None`: compare
/// everything, after a full rebuild or a failed sync).
struct Pending {
    state: Arc<DesiredState>,
    changed: Option<BTreeSet<ServicePortKey>>,
}

/// Rebuilds the entries of `services` in `state` from the stores; returns
/// the service ports that changed.
fn refresh(
    state: &mut DesiredState,
    services: &BTreeSet<(String, String)>,
    svcs: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> BTreeSet<ServicePortKey> {
    let objects: Vec<Arc<Service>> = services
        .iter()
        .filter_map(|(ns, name)| svcs.get(&ObjectRef::new(name).within(ns)))
        .collect();
    let all_slices = slices.state();
    state.refresh_services(
        services,
        objects.iter().map(|s| &**s),
        all_slices.iter().map(|s| &**s),
    )
}

fn desired(
    config: &ProxyConfig,
    svcs: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> DesiredState {
    let services: Vec<Service> = svcs.state().iter().map(|s| (**s).clone()).collect();
    let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
    let mut d = DesiredState::from_k8s(
        &config.node_name,
        config.node_ips.clone(),
        &services,
        &slices,
    );
    d.cluster_cidr = config.cluster_cidr;
    d
}

fn dataplane_thread(
    mut dataplane: Box<dyn Dataplane>,
    pending: &Mutex<Pending>,
    mut wake: watch::Receiver<()>,
) {
    let span = tracing::info_span!("dataplane", name = dataplane.name());
    let _enter = span.enter();
    loop {
        // The state and its change list are taken together, so the list
        // always describes exactly the state being synced.
        let (state, changed) = {
            let mut next = pending.lock().unwrap_or_else(PoisonError::into_inner);
            wake.borrow_and_update();
            (
                Arc::clone(&next.state),
                next.changed.replace(BTreeSet::new()),
            )
        };
        let result = match &changed {
            Some(keys) => dataplane.sync_changed(&state, keys),
            None => dataplane.sync(&state),
        };
        match result {
            Ok(report) if report.services_changed > 0 || report.objects_removed > 0 => {
                tracing::info!(
                    services_changed = report.services_changed,
                    written = report.objects_written,
                    removed = report.objects_removed,
                    flows_flushed = report.flows_flushed,
                    micros = report.duration.as_micros() as u64,
                    "synced"
                );
            }
            Ok(report) => {
                tracing::debug!(micros = report.duration.as_micros() as u64, "in sync");
            }
            Err(e) => {
                tracing::error!(error = %e, "dataplane sync failed; will retry");
                // What got applied is unknown: compare everything next time.
                pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .changed = None;
            }
        }
        // Blocks until something newer is pending; ends when the sender is
        // gone.
        if futures::executor::block_on(wake.changed()).is_err() {
            break;
        }
    }
}
