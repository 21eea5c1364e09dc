//! The scheduler's runner: an API client, like kube-scheduler.
//!
//! - A watcher of *all* Pods and one of Nodes feed reflector caches and,
//!   event by event, the [`SchedulerCache`] (bound-pod totals per node).
//! - A kube-runtime `Controller` over the *unscheduled* Pods
//!   (`fieldSelector=spec.nodeName=`; a pod that gets bound leaves that
//!   watch as DELETED) is the scheduling queue: one pod is never handled
//!   twice at once, and failures are retried with backoff.
//! - [`reconcile`] picks a node under the cache lock and *assumes* the
//!   pod there (so concurrent decisions see it), then binds through the
//!   `pods/{name}/binding` subresource. The API server serves it, so we
//!   do not patch `spec.nodeName` (pod validation forbids that change
//!   anyway). A failed binding un-assumes.
//! - A pod no node fits gets `PodScheduled=False`, reason `Unschedulable`,
//!   with the aggregated message, and a Warning `FailedScheduling` Event
//!   (core/v1, best effort, only when that message changes so periodic
//!   retries do not flood the Events); it is retried whenever a Node changes in
//!   a way that matters (not on heartbeats), whenever a bound pod frees
//!   capacity, and otherwise every [`SchedulerConfig::unschedulable_retry`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::{
    Binding, Event as CoreEvent, EventSource, Node, ObjectReference, Pod, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::cache::SchedulerCache;
use crate::controllers::{SYNC_RETRY, cache_synced};

/// The scheduler name this scheduler answers to besides Kubernetes'
/// default (`default-scheduler`, which the API server fills in).
pub const SCHEDULER_NAME: &str = "skiff-scheduler";
/// Kubernetes' default `spec.schedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Reason of the `PodScheduled=False` condition.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// Reason of the Warning Event for a pod no node fits (kube-scheduler's).
pub const REASON_FAILED_SCHEDULING: &str = "FailedScheduling";

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Extra `spec.schedulerName` answered to (besides
    /// [`DEFAULT_SCHEDULER_NAME`] and an absent name).
    pub scheduler_name: String,
    /// Periodic retry of unschedulable pods even when nothing relevant
    /// was seen to change (kube-scheduler flushes its unschedulable queue
    /// the same way).
    pub unschedulable_retry: Duration,
    /// Retry delay after an API error.
    pub error_retry: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: SCHEDULER_NAME.to_owned(),
            unschedulable_retry: Duration::from_secs(60),
            error_retry: Duration::from_secs(2),
        }
    }
}

/// Scheduler errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list of Pods or Nodes at start.
    #[error("scheduler: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Binding a pod failed.
    #[error("binding pod {namespace}/{name} to node {node}")]
    Bind {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// Chosen node.
        node: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Writing the pod's `PodScheduled` condition failed.
    #[error("updating the PodScheduled condition of pod {namespace}/{name}")]
    Status {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// What [`reconcile`] works with.
pub struct Context {
    client: Client,
    config: SchedulerConfig,
    cache: Arc<Mutex<SchedulerCache>>,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

/// Whether this scheduler is responsible for `pod` (`spec.schedulerName`
/// absent, `default-scheduler` or `ours`).
pub fn is_responsible(pod: &Pod, ours: &str) -> bool {
    match pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) {
        None | Some("") | Some(DEFAULT_SCHEDULER_NAME) => true,
        Some(name) => name == ours,
    }
}

/// The pod's conditions with `PodScheduled` set to `status`/`reason`/
/// `message`, or `None` when it already says exactly that (so nothing is
/// written). `lastTransitionTime` moves only when the status flips.
pub fn with_pod_scheduled(
    pod: &Pod,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: Timestamp,
) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let existing = conditions.iter_mut().find(|c| c.type_ == "PodScheduled");
    match existing {
        Some(c)
            if c.status == status
                && c.reason.as_deref() == reason
                && c.message.as_deref() == message =>
        {
            None
        }
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status.to_owned();
            c.reason = reason.map(str::to_owned);
            c.message = message.map(str::to_owned);
            Some(conditions)
        }
        None => {
            conditions.push(PodCondition {
                type_: "PodScheduled".to_owned(),
                status: status.to_owned(),
                reason: reason.map(str::to_owned),
                message: message.map(str::to_owned),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            });
            Some(conditions)
        }
    }
}

/// The core/v1 Warning Event kube-scheduler records for a pod no node
/// fits: named `<pod>.<unix nanos in hex>` like client-go's recorder,
/// from `default-scheduler`, about the pod (pure).
pub fn failed_scheduling_event(pod: &Pod, message: &str, now: Timestamp) -> CoreEvent {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = pod.metadata.name.clone().unwrap_or_default();
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(name),
            namespace: Some(namespace),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        type_: Some("Warning".to_owned()),
        reason: Some(REASON_FAILED_SCHEDULING.to_owned()),
        message: Some(message.to_owned()),
        action: Some("Scheduling".to_owned()),
        source: Some(EventSource {
            component: Some(DEFAULT_SCHEDULER_NAME.to_owned()),
            host: None,
        }),
        reporting_component: Some(DEFAULT_SCHEDULER_NAME.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Runs the scheduler with [`SchedulerConfig::default`] until `shutdown`
/// resolves.
///
/// # Errors
/// [`Error::Preflight`] when Pods or Nodes cannot be listed at start.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    run_with(client, SchedulerConfig::default(), shutdown).await
}

/// Runs the scheduler until `shutdown` resolves; in-flight decisions then
/// finish.
///
/// # Errors
/// [`Error::Preflight`] when Pods or Nodes cannot be listed at start.
/// Per-pod failures are logged and retried, not returned.
pub async fn run_with(
    client: Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let one = ListParams::default().limit(1);
    Api::<Pod>::all(client.clone())
        .list(&one)
        .await
        .map_err(|source| Error::Preflight {
            resource: "pods",
            source,
        })?;
    Api::<Node>::all(client.clone())
        .list(&one)
        .await
        .map_err(|source| Error::Preflight {
            resource: "nodes",
            source,
        })?;

    let cache = Arc::new(Mutex::new(SchedulerCache::new()));
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let (node_reader, node_writer) = reflector::store::<Node>();

    // Node events: a relevant change (not a heartbeat) retries everything.
    let node_changes = {
        let cache = cache.clone();
        let pods = pod_reader.clone();
        let nodes = node_reader.clone();
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer)
            .filter_map(move |event| {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                let retry = match event {
                    Ok(Event::Apply(node)) => cache.upsert_node(&node),
                    Ok(Event::Delete(node)) => cache.remove_node(&node.name_any()),
                    Ok(Event::InitDone) => {
                        rebuild(&mut cache, &nodes, &pods);
                        true
                    }
                    Ok(Event::Init | Event::InitApply(_)) => false,
                    Err(error) => {
                        warn!(%error, "node watch failed; retrying");
                        false
                    }
                };
                future::ready(retry.then_some(()))
            })
    };

    // Pod events: keep bound-pod totals; freed capacity retries everything.
    let capacity_freed = {
        let cache = cache.clone();
        let pods = pod_reader.clone();
        let nodes = node_reader.clone();
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(pod_writer)
            .filter_map(move |event| {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                let retry = match event {
                    Ok(Event::Apply(pod)) => cache.update_pod(&pod),
                    Ok(Event::Delete(pod)) => cache.remove_pod(&pod),
                    Ok(Event::InitDone) => {
                        rebuild(&mut cache, &nodes, &pods);
                        true
                    }
                    Ok(Event::Init | Event::InitApply(_)) => false,
                    Err(error) => {
                        warn!(%error, "pod watch failed; retrying");
                        false
                    }
                };
                future::ready(retry.then_some(()))
            })
    };

    let context = Arc::new(Context {
        client: client.clone(),
        config,
        cache,
        pods: pod_reader,
        nodes: node_reader,
    });
    let unscheduled = watcher::Config::default().fields("spec.nodeName=");
    info!("scheduler starting");
    Controller::new(Api::<Pod>::all(client), unscheduled)
        .reconcile_all_on(stream::select(node_changes, capacity_freed))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((pod, _)) => debug!(pod = %pod, "pod handled"),
                Err(
                    kube::runtime::controller::Error::ReconcilerFailed(..)
                    | kube::runtime::controller::Error::ObjectNotFound(..),
                ) => {}
                Err(error) => warn!(%error, "scheduler queue error"),
            }
            future::ready(())
        })
        .await;
    info!("scheduler stopped");
    Ok(())
}

fn rebuild(cache: &mut SchedulerCache, nodes: &Store<Node>, pods: &Store<Pod>) {
    let nodes = nodes.state();
    let pods = pods.state();
    cache.rebuild(nodes.iter().map(|n| &**n), pods.iter().map(|p| &**p));
}

/// Places one unscheduled pod: pick a node and bind, or record why not.
///
/// # Errors
/// An API failure binding or writing the status (retried by the
/// controller).
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if bound
        || pod.metadata.deletion_timestamp.is_some()
        || !is_responsible(&pod, &ctx.config.scheduler_name)
    {
        return Ok(Action::await_change());
    }
    if !cache_synced(&ctx.pods) || !cache_synced(&ctx.nodes) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let decision = {
        let mut cache = ctx.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = cache.placement(&pod) {
            // Bound (or being bound) already; this queue entry is stale.
            debug!(%namespace, pod = %name, node, "already placed");
            return Ok(Action::await_change());
        }
        cache.schedule_and_assume(&pod)
    };
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    match decision {
        Ok(node) => {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Node".to_owned()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let result: Result<serde_json::Value, kube::Error> = api
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            match result {
                Ok(_) => {
                    info!(%namespace, pod = %name, %node, "pod bound");
                    // A pod that was unschedulable before: clear the stale
                    // condition (the binding only sets spec.nodeName).
                    if let Some(conditions) = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .filter(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "PodScheduled" && c.status != "True")
                        })
                        .and_then(|_| {
                            with_pod_scheduled(&pod, "True", None, None, Timestamp::now())
                        })
                    {
                        write_conditions(&api, &namespace, &name, conditions).await?;
                    }
                    Ok(Action::await_change())
                }
                Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                    // Deleted, or bound by someone else meanwhile: the pod
                    // watch will tell the cache what really happened.
                    ctx.cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .forget(&pod);
                    debug!(%namespace, pod = %name, code = status.code, "binding refused");
                    Ok(Action::await_change())
                }
                Err(source) => {
                    ctx.cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .forget(&pod);
                    Err(Error::Bind {
                        namespace,
                        name,
                        node,
                        source,
                    })
                }
            }
        }
        Err(unschedulable) => {
            debug!(%namespace, pod = %name, message = %unschedulable.message, "unschedulable");
            if let Some(conditions) = with_pod_scheduled(
                &pod,
                "False",
                Some(REASON_UNSCHEDULABLE),
                Some(&unschedulable.message),
                Timestamp::now(),
            ) {
                info!(%namespace, pod = %name, message = %unschedulable.message, "pod unschedulable");
                write_conditions(&api, &namespace, &name, conditions).await?;
                // Events are advisory: a failed write must not hold up
                // scheduling (client-go's recorder drops them too).
                let event = failed_scheduling_event(&pod, &unschedulable.message, Timestamp::now());
                if let Err(error) = Api::<CoreEvent>::namespaced(ctx.client.clone(), &namespace)
                    .create(&PostParams::default(), &event)
                    .await
                {
                    warn!(%namespace, pod = %name, %error, "recording the FailedScheduling event failed");
                }
            }
            Ok(Action::requeue(ctx.config.unschedulable_retry))
        }
    }
}

async fn write_conditions(
    api: &Api<Pod>,
    namespace: &str,
    name: &str,
    conditions: Vec<PodCondition>,
) -> Result<(), Error> {
    // A merge patch replaces the whole list; the pod is not yet on a node,
    // so no agent writes conditions concurrently.
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Status {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

fn error_policy(pod: Arc<Pod>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(pod = %pod.name_any(), error = %error, "scheduling failed; retrying");
    Action::requeue(ctx.config.error_retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testkit::pod;

    #[test]
    fn responsibility_by_scheduler_name() {
        let mut p = pod("p", "", "");
        assert!(is_responsible(&p, SCHEDULER_NAME));
        for (name, ours) in [
            (DEFAULT_SCHEDULER_NAME, true),
            (SCHEDULER_NAME, true),
            ("other", false),
            ("", true),
        ] {
            p.spec.as_mut().expect("spec").scheduler_name = Some(name.to_owned());
            assert_eq!(is_responsible(&p, SCHEDULER_NAME), ours, "{name}");
        }
    }

    #[test]
    fn pod_scheduled_condition_written_only_on_change() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = Timestamp::from_second(100).expect("time");
        let mut p = pod("p", "", "");
        let first = with_pod_scheduled(&p, "False", Some("Unschedulable"), Some("0/1 nodes"), t0)
            .expect("new");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].last_transition_time, Some(Time(t0)));
        p.status.get_or_insert_default().conditions = Some(first);
        // Same content: nothing to write.
        assert!(
            with_pod_scheduled(&p, "False", Some("Unschedulable"), Some("0/1 nodes"), t1).is_none()
        );
        // New message, same status: transition time kept.
        let second = with_pod_scheduled(&p, "False", Some("Unschedulable"), Some("0/2 nodes"), t1)
            .expect("changed");
        assert_eq!(second[0].message.as_deref(), Some("0/2 nodes"));
        assert_eq!(second[0].last_transition_time, Some(Time(t0)));
        // Flip to True: transition time moves, reason/message cleared.
        p.status.get_or_insert_default().conditions = Some(second);
        let third = with_pod_scheduled(&p, "True", None, None, t1).expect("flipped");
        assert_eq!(third[0].status, "True");
        assert_eq!(third[0].reason, None);
        assert_eq!(third[0].last_transition_time, Some(Time(t1)));
    }

    #[test]
    fn failed_scheduling_event_names_the_pod() {
        let mut p = pod("web-1", "", "");
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("pod-uid".into());
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let e = failed_scheduling_event(&p, "0/3 nodes are available: 3 Insufficient cpu.", now);
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("web-1.{:x}", 1_700_000_000_000_000_000_i128).as_str())
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.involved_object.name.as_deref(), Some("web-1"));
        assert_eq!(e.involved_object.namespace.as_deref(), Some("shop"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("pod-uid"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("FailedScheduling"));
        assert_eq!(
            e.message.as_deref(),
            Some("0/3 nodes are available: 3 Insufficient cpu.")
        );
        assert_eq!(
            e.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("default-scheduler")
        );
        assert_eq!(e.count, Some(1));
        assert!(crate::validation::validate_event(&e).is_empty());
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut p = pod("p", "", "");
        p.status.get_or_insert_default().conditions = Some(vec![PodCondition {
            type_: "Initialized".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        let cs = with_pod_scheduled(
            &p,
            "False",
            Some("Unschedulable"),
            Some("m"),
            Timestamp::UNIX_EPOCH,
        )
        .expect("new");
        assert_eq!(
            cs.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Initialized", "PodScheduled"]
        );
    }
}
