//! The EndpointSlice controller's runner: kube-runtime watchers feed
//! reflector caches of Services, Pods, Nodes and our EndpointSlices; a
//! `Controller` keyed by Service (a queue that never reconciles one Service
//! twice at once) calls [`reconcile`], which computes
//! [`desired_slices`](super::desired_slices), [`diff`](super::diff)s them
//! against the slices that exist and applies the changes through the API.
//!
//! What makes a Service reconcile:
//! - the Service itself changing;
//! - a Pod event, mapped to the Services in its namespace whose selector
//!   matches the Pod now *or* whose slices still list the Pod (so a Pod
//!   whose labels stop matching, or that is deleted, leaves its old slices);
//!   every Pod re-list (after a watch gap) reconciles all Services;
//! - a change to one of our slices by someone else (repaired);
//! - a Node zone label change (reconciles all: zones are per endpoint).
//!
//! The Pod cache is written before the trigger leaves the reflector, so the
//! reconcile a Pod event causes already sees that event. No debounce is
//! configured: a Pod change reaches the slices in one reconcile.
//!
//! Slices of deleted Services are removed by this controller too (on the
//! delete event, and in a sweep after each Service re-list) rather than
//! waiting for a garbage collector.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::desired::{DesiredError, desired_slices, endpoint_pod_name, service_selector};
use super::diff::diff;
use super::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL};
use crate::selector::Selector;

/// Retry delay after a write lost a race (409): the next attempt reads the
/// fresh state, so it can come soon.
const RETRY_CONFLICT: Duration = Duration::from_millis(100);
/// Retry delay after other failures.
const RETRY_ERROR: Duration = Duration::from_secs(2);

/// Errors of the EndpointSlice controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list of a resource the controller
    /// watches (checked once at start so a misconfiguration fails fast).
    #[error("endpointslice controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Service cannot be turned into slices.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// A cache did not finish its first list in time.
    #[error("endpointslice controller: {cache} cache not synced after {timeout:?}")]
    CacheNotSynced {
        /// Which cache.
        cache: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// Listing a Service's slices failed.
    #[error("listing endpoint slices of service {namespace}/{service}")]
    List {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        service: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Creating, replacing or deleting a slice failed.
    #[error("{action} endpoint slice {namespace}/{name}")]
    Write {
        /// "create", "replace" or "delete".
        action: &'static str,
        /// The slice's namespace.
        namespace: String,
        /// The slice's name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Whether the failure was a lost race with another writer (retry soon).
    fn is_conflict(&self) -> bool {
        match self {
            Error::Write {
                source: kube::Error::Api(status),
                ..
            } => status.is_conflict() || status.is_already_exists(),
            _ => false,
        }
    }
}

/// What [`reconcile`] reads: the API client and the shared caches.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

impl Context {
    /// A context over caches fed elsewhere (e.g. shared with other
    /// controllers). [`run`] builds its own.
    pub fn new(client: Client, pods: Store<Pod>, nodes: Store<Node>) -> Self {
        Self {
            client,
            pods,
            nodes,
        }
    }
}

/// Runs the EndpointSlice controller against the API server `client`
/// talks to, until `shutdown` resolves; in-flight reconciles then finish.
///
/// # Errors
/// [`Error::Preflight`] when the API server does not serve Services, Pods,
/// Nodes or EndpointSlices. Reconcile failures are logged and retried, not
/// returned.
#[tracing::instrument(name = "endpointslice_controller", skip_all)]
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    preflight(&client).await?;

    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let (slice_reader, slice_writer) = reflector::store::<EndpointSlice>();
    let (cleanup_tx, cleanup_rx) = mpsc::unbounded_channel::<Cleanup>();

    // Services: the controller's own objects. Deletions and re-lists are
    // tapped to clean up slices of Services that are gone.
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(svc_writer)
    .inspect(move |event| {
        let request = match event {
            Ok(Event::Delete(svc)) => Some(Cleanup::Deleted(Arc::new(svc.clone()))),
            Ok(Event::InitDone) => Some(Cleanup::Sweep),
            _ => None,
        };
        if let Some(request) = request {
            // The receiver only goes away at shutdown.
            let _ = cleanup_tx.send(request);
        }
    })
    .applied_objects();

    let pod_triggers = {
        let services = svc_reader.clone();
        let slices = slice_reader.clone();
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(pod_writer)
            .filter_map(move |event| {
                let refs = match event {
                    Ok(Event::Apply(pod) | Event::Delete(pod)) => {
                        services_for_pod(&pod, &services.state(), &slices.state())
                    }
                    Ok(Event::InitDone) => services
                        .state()
                        .iter()
                        .map(|s| ObjectRef::from_obj(&**s))
                        .collect(),
                    Ok(Event::Init | Event::InitApply(_)) => Vec::new(),
                    Err(error) => {
                        warn!(%error, "pod watch failed; retrying");
                        Vec::new()
                    }
                };
                future::ready(Some(stream::iter(refs)))
            })
            .flatten()
    };

    let slice_triggers = {
        let managed = Selector::from_map(&BTreeMap::from([(
            MANAGED_BY_LABEL.to_owned(),
            MANAGED_BY.to_owned(),
        )]))
        .map(|s| s.to_string())
        .unwrap_or_default();
        watcher::watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&managed),
        )
        .default_backoff()
        .reflect(slice_writer)
        .filter_map(|event| {
            let owner = match event {
                Ok(Event::Apply(slice) | Event::Delete(slice)) => slice_service(&slice),
                Ok(_) => None,
                Err(error) => {
                    warn!(%error, "endpoint slice watch failed; retrying");
                    None
                }
            };
            future::ready(owner)
        })
    };

    let zone_changes = {
        let nodes = node_reader.clone();
        let mut known: HashMap<String, String> = HashMap::new();
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer)
            .filter_map(move |event| {
                let changed = match event {
                    Ok(Event::Apply(node)) => {
                        let zone = node_zone(&node);
                        match zone {
                            Some(z) => known.insert(node.name_any(), z.clone()) != Some(z),
                            None => known.remove(&node.name_any()).is_some(),
                        }
                    }
                    Ok(Event::Delete(node)) => known.remove(&node.name_any()).is_some(),
                    Ok(Event::InitDone) => {
                        let now: HashMap<String, String> = nodes
                            .state()
                            .iter()
                            .filter_map(|n| Some((n.name_any(), node_zone(n)?)))
                            .collect();
                        std::mem::replace(&mut known, now) != known
                    }
                    Ok(Event::Init | Event::InitApply(_)) => false,
                    Err(error) => {
                        warn!(%error, "node watch failed; retrying");
                        false
                    }
                };
                future::ready(changed.then_some(()))
            })
    };

    let context = Arc::new(Context::new(client.clone(), pod_reader, node_reader));
    info!("endpointslice controller starting");
    let controller = Controller::for_stream(services, svc_reader.clone())
        .reconcile_on(pod_triggers)
        .reconcile_on(slice_triggers)
        .reconcile_all_on(zone_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => debug!(service = %obj, "endpoint slices reconciled"),
                // Reconcile failures were logged by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(%error, "endpointslice controller queue error"),
            }
            future::ready(())
        });
    // The cleanup loop ends when the controller (owner of the sender) does.
    future::join(controller, cleanup(client, svc_reader, cleanup_rx)).await;
    info!("endpointslice controller stopped");
    Ok(())
}

/// Lists each watched resource once so that a missing API fails `run`.
async fn preflight(client: &Client) -> Result<(), Error> {
    let one = ListParams::default().limit(1);
    let check = |resource: &'static str| move |source| Error::Preflight { resource, source };
    Api::<Service>::all(client.clone())
        .list(&one)
        .await
        .map_err(check("services"))?;
    Api::<Pod>::all(client.clone())
        .list(&one)
        .await
        .map_err(check("pods"))?;
    Api::<Node>::all(client.clone())
        .list(&one)
        .await
        .map_err(check("nodes"))?;
    Api::<EndpointSlice>::all(client.clone())
        .list(&one)
        .await
        .map_err(check("endpointslices"))?;
    Ok(())
}

/// The Services a Pod event concerns: those in its namespace whose selector
/// matches the Pod now, and those whose slices list it (it may have left).
fn services_for_pod(
    pod: &Pod,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Vec<ObjectRef<Service>> {
    let (Some(namespace), Some(pod_name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for svc in services {
        if svc.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        // An invalid selector matches nothing; reconcile reports it.
        if let Ok(Some(selector)) = service_selector(svc)
            && selector.matches_opt(pod.metadata.labels.as_ref())
            && let Some(name) = svc.metadata.name.as_deref()
        {
            names.insert(name);
        }
    }
    for slice in slices {
        if slice.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let lists_pod = slice
            .endpoints
            .iter()
            .flatten()
            .any(|ep| endpoint_pod_name(ep) == Some(pod_name));
        if lists_pod && let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            names.insert(service.as_str());
        }
    }
    names
        .into_iter()
        .map(|name| ObjectRef::new(name).within(namespace))
        .collect()
}

/// The Service a slice of ours belongs to.
fn slice_service(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let namespace = slice.metadata.namespace.as_deref()?;
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(service).within(namespace))
}

fn node_zone(node: &Node) -> Option<String> {
    node.labels().get(ZONE_LABEL).cloned()
}

/// Brings one Service's slices to the desired state. Idempotent; reads the
/// Service's current slices from the API (not a cache) so that its own
/// recent writes are never invisible to it.
///
/// # Errors
/// Caches not synced, the Service not convertible, or an API call failed.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = svc.metadata.name.clone().ok_or(DesiredError::MissingName)?;
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| DesiredError::MissingNamespace { name: name.clone() })?;
    // Never block a reconcile on a cache: kube-runtime 5's readiness wait
    // wakes only its most recent waiter, so several reconciles waiting at
    // once (Services that exist at start) could stall until the timeout.
    if !crate::controllers::cache_synced(&ctx.pods) || !crate::controllers::cache_synced(&ctx.nodes)
    {
        return Ok(Action::requeue(crate::controllers::SYNC_RETRY));
    }

    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let ours = Selector::from_map(&BTreeMap::from([
        (SERVICE_NAME_LABEL.to_owned(), name.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]))
    .map_err(|source| DesiredError::InvalidSelector {
        namespace: namespace.clone(),
        name: name.clone(),
        source: Box::new(source),
    })?;
    let existing = api
        .list(&ListParams::default().labels(&ours.to_string()))
        .await
        .map_err(|source| Error::List {
            namespace: namespace.clone(),
            service: name.clone(),
            source,
        })?
        .items;

    let pods = ctx.pods.state();
    let nodes = ctx.nodes.state();
    let desired = desired_slices(
        &svc,
        pods.iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|p| &**p),
        nodes.iter().map(|n| &**n),
        &existing,
    )?;
    let changes = diff(&existing, desired);
    if changes.is_empty() {
        return Ok(Action::await_change());
    }
    debug!(
        namespace = %namespace,
        service = %name,
        create = changes.create.len(),
        update = changes.update.len(),
        delete = changes.delete.len(),
        "applying endpoint slice changes"
    );
    let write_err = |action: &'static str, slice: &EndpointSlice| {
        let name = slice.name_any();
        let namespace = namespace.clone();
        move |source| Error::Write {
            action,
            namespace,
            name,
            source,
        }
    };
    // Creates and updates before deletes, so that endpoints moving between
    // slices are never absent from all of them.
    for slice in &changes.create {
        api.create(&PostParams::default(), slice)
            .await
            .map_err(write_err("create", slice))?;
    }
    for slice in &changes.update {
        api.replace(&slice.name_any(), &PostParams::default(), slice)
            .await
            .map_err(write_err("replace", slice))?;
    }
    for slice in &changes.delete {
        match api
            .delete(&slice.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => return Err(write_err("delete", slice)(source)),
        }
    }
    Ok(Action::await_change())
}

/// Logs a failed reconcile and schedules a retry: soon after a lost race,
/// later otherwise.
fn error_policy(svc: Arc<Service>, error: &Error, _ctx: Arc<Context>) -> Action {
    let retry = if error.is_conflict() {
        RETRY_CONFLICT
    } else {
        RETRY_ERROR
    };
    warn!(
        namespace = svc.metadata.namespace.as_deref().unwrap_or_default(),
        service = svc.metadata.name.as_deref().unwrap_or_default(),
        error = %error,
        error_source = ?std::error::Error::source(error).map(ToString::to_string),
        retry_ms = retry.as_millis(),
        "endpoint slice reconcile failed"
    );
    Action::requeue(retry)
}

/// Work for the cleanup loop.
enum Cleanup {
    /// This Service was deleted: remove the slices it controlled.
    Deleted(Arc<Service>),
    /// The Service cache was (re)listed: remove our slices whose Service is gone.
    Sweep,
}

async fn cleanup(
    client: Client,
    services: Store<Service>,
    mut requests: mpsc::UnboundedReceiver<Cleanup>,
) {
    while let Some(request) = requests.recv().await {
        match request {
            Cleanup::Deleted(svc) => {
                let Some(namespace) = svc.metadata.namespace.as_deref() else {
                    continue;
                };
                let name = svc.name_any();
                let uid = svc.metadata.uid.as_deref();
                let still_gone = || {
                    services
                        .get(&ObjectRef::new(&name).within(namespace))
                        .is_none()
                };
                delete_managed(
                    &Api::namespaced(client.clone(), namespace),
                    &client,
                    |slice| {
                        slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
                            && controller_uid(slice) == uid
                            && still_gone()
                    },
                )
                .await;
            }
            Cleanup::Sweep => {
                delete_managed(&Api::all(client.clone()), &client, |slice| {
                    slice_service(slice).is_some_and(|svc| services.get(&svc).is_none())
                })
                .await;
            }
        }
    }
}

/// Deletes the slices of ours visible through `scope` that `doomed` picks.
/// Failures are logged: the next delete event or sweep tries again.
async fn delete_managed(
    scope: &Api<EndpointSlice>,
    client: &Client,
    doomed: impl Fn(&EndpointSlice) -> bool,
) {
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let slices = match scope.list(&ListParams::default().labels(&managed)).await {
        Ok(list) => list.items,
        Err(error) => {
            warn!(%error, "listing endpoint slices for cleanup failed");
            return;
        }
    };
    for slice in slices.iter().filter(|s| doomed(s)) {
        let (Some(namespace), Some(name)) = (slice.namespace(), slice.metadata.name.as_deref())
        else {
            continue;
        };
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(
                namespace = %namespace,
                slice = name,
                "deleted endpoint slice of deleted service"
            ),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => warn!(
                namespace = %namespace,
                slice = name,
                %error,
                "deleting orphaned endpoint slice failed"
            ),
        }
    }
}

/// The uid of the slice's controller owner reference, if any.
fn controller_uid(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

#[cfg(test)]
mod tests {
    use super::super::desired::desired_slices;
    use super::super::desired::tests::{pod, port, service};
    use super::*;

    #[test]
    fn pod_maps_to_matching_and_previous_services() {
        let web = Arc::new(service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, None)],
        ));
        let db = Arc::new(service(
            "db",
            &[("app", "db")],
            vec![port("pg", 5432, None)],
        ));
        let mut other_ns = service("web2", &[("app", "web")], vec![]);
        other_ns.metadata.namespace = Some("other".into());
        let services = vec![web.clone(), db, Arc::new(other_ns)];

        let p = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        let refs = services_for_pod(&p, &services, &[]);
        assert_eq!(refs, vec![ObjectRef::new("web").within("default")]);

        // The pod moved to app=db, but web's slice still lists it: both.
        let web_slices: Vec<Arc<EndpointSlice>> = desired_slices(&web, [&p], [], &[])
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut moved = p.clone();
        moved.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));
        let refs = services_for_pod(&moved, &services, &web_slices);
        assert_eq!(
            refs,
            vec![
                ObjectRef::new("db").within("default"),
                ObjectRef::new("web").within("default")
            ]
        );

        // A pod nobody selects or lists triggers nothing.
        let lonely = pod("z", &[("app", "none")], Some("10.0.0.9"), true);
        assert!(services_for_pod(&lonely, &services, &web_slices).is_empty());
    }

    #[test]
    fn slice_maps_to_its_service_and_owner_uid() {
        let web = service("web", &[("app", "web")], vec![]);
        let slices = desired_slices(&web, [], [], &[]).unwrap();
        assert_eq!(
            slice_service(&slices[0]),
            Some(ObjectRef::new("web").within("default"))
        );
        assert_eq!(controller_uid(&slices[0]), Some("uid-web"));
    }

    #[test]
    fn conflicts_retry_fast() {
        let conflict = Error::Write {
            action: "replace",
            namespace: "default".into(),
            name: "web-x".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code: 409,
                reason: "Conflict".into(),
                ..kube::core::Status::default()
            })),
        };
        assert!(conflict.is_conflict());
        let other = Error::CacheNotSynced {
            cache: "pod",
            timeout: Duration::from_secs(30),
        };
        assert!(!other.is_conflict());
    }
}
