//! The node lifecycle controller, after Kubernetes' node lifecycle
//! controller and taint manager:
//!
//! - a node that has not heartbeated for [`NodeLifecycleConfig::grace`]
//!   gets every condition set to `Unknown` ("Kubelet stopped posting node
//!   status."). A heartbeat is either the `Ready` condition's
//!   `lastHeartbeatTime` (node status updates) or the `renewTime` of the
//!   node's Lease in `kube-node-lease`, whichever is newer, as in
//!   Kubernetes;
//! - `Ready=Unknown` taints the node `node.kubernetes.io/unreachable:NoExecute`,
//!   `Ready=False` taints it `node.kubernetes.io/not-ready:NoExecute`;
//!   `Ready=True` removes both;
//! - pods on a node that is not Ready are marked `Ready=False`, so
//!   endpoint slices stop sending them traffic right away;
//! - `NoExecute` taints evict (delete) pods, as the taint manager does:
//!   a pod tolerating the taint with `tolerationSeconds` goes that long
//!   after the taint's `timeAdded`, one tolerating it without a limit
//!   stays; a pod with no matching toleration of *our* two taints goes
//!   after [`NodeLifecycleConfig::eviction_timeout`] (the 300 s Kubernetes'
//!   `DefaultTolerationSeconds` admission would have given it), and of
//!   any other `NoExecute` taint at once. Owners then recreate them
//!   elsewhere;
//! - pods bound to a node that no longer exists are deleted once they
//!   are older than the grace period (Kubernetes' pod GC).
//!
//! [`decide_node`] and [`decide_pods`] are pure, with the clock passed in.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::podstate::is_active;
use super::{SYNC_RETRY, cache_synced, runtime};
use crate::scheduler::filter::tolerates;

/// Taint of a node whose status is unknown (silent).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node that reports `Ready=False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Message set on conditions of a silent node (Kubernetes' wording).
pub const MESSAGE_STOPPED: &str = "Kubelet stopped posting node status.";
/// Namespace of the nodes' heartbeat Leases (one per node, same name).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Message for a node that never posted a Ready condition.
pub const MESSAGE_NEVER: &str = "Kubelet never posted node status.";

/// Node lifecycle timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// Silence after which a node's conditions become Unknown
    /// (Kubernetes' `--node-monitor-grace-period`, 40 s).
    pub grace: Duration,
    /// How long pods without an explicit toleration stay on an
    /// unreachable or not-ready node (Kubernetes' default
    /// `tolerationSeconds`, 300 s).
    pub eviction_timeout: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
        }
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// A node's readiness as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `Ready=True`.
    Ready,
    /// `Ready=False` (the agent says so).
    NotReady,
    /// `Ready=Unknown` or no condition (silent).
    Unknown,
}

/// What to change on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDecision {
    /// New `status.conditions` when the node went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// New `spec.taints` when they change.
    pub taints: Option<Vec<Taint>>,
    /// Readiness after the change.
    pub readiness: Readiness,
    /// The taints in force after the change (for [`decide_pods`]).
    pub effective_taints: Vec<Taint>,
    /// When the node goes silent if no heartbeat comes.
    pub recheck_at: Option<Timestamp>,
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's last sign of life: the newest of its Ready condition's
/// `lastHeartbeatTime` and its Lease's `renewTime`; the node's creation
/// time if neither exists.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let status = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    status
        .max(renewed)
        .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Decides on one node at `now`, given its Lease if it has one.
pub fn decide_node(
    node: &Node,
    lease: Option<&Lease>,
    now: Timestamp,
    cfg: &NodeLifecycleConfig,
) -> NodeDecision {
    let ready = ready_condition(node);
    let heartbeat = last_heartbeat(node, lease).unwrap_or(now);
    let deadline = heartbeat + signed(cfg.grace);
    let silent = deadline <= now;
    let mut conditions = None;
    let mut readiness = match ready.map(|c| c.status.as_str()) {
        Some("True") => Readiness::Ready,
        Some("False") => Readiness::NotReady,
        _ => Readiness::Unknown,
    };
    if silent {
        let existing = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = false;
        let mut updated: Vec<NodeCondition> = existing
            .into_iter()
            .map(|mut c| {
                if c.status != "Unknown" {
                    c.status = "Unknown".to_owned();
                    c.reason = Some("NodeStatusUnknown".to_owned());
                    c.message = Some(MESSAGE_STOPPED.to_owned());
                    c.last_transition_time = Some(Time(now));
                    changed = true;
                }
                c
            })
            .collect();
        if ready.is_none() {
            updated.push(NodeCondition {
                type_: "Ready".to_owned(),
                status: "Unknown".to_owned(),
                reason: Some("NodeStatusNeverUpdated".to_owned()),
                message: Some(MESSAGE_NEVER.to_owned()),
                last_transition_time: Some(Time(now)),
                last_heartbeat_time: None,
            });
            changed = true;
        }
        if changed {
            conditions = Some(updated);
        }
        readiness = Readiness::Unknown;
    }

    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted_key = match readiness {
        Readiness::Ready => None,
        Readiness::NotReady => Some(TAINT_NOT_READY),
        Readiness::Unknown => Some(TAINT_UNREACHABLE),
    };
    let mut effective: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours =
                (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY) && t.effect == "NoExecute";
            !ours || Some(t.key.as_str()) == wanted_key
        })
        .cloned()
        .collect();
    if let Some(key) = wanted_key
        && !effective
            .iter()
            .any(|t| t.key == key && t.effect == "NoExecute")
    {
        effective.push(Taint {
            key: key.to_owned(),
            value: None,
            effect: "NoExecute".to_owned(),
            time_added: Some(Time(now)),
        });
    }
    NodeDecision {
        conditions,
        taints: (effective != current).then(|| effective.clone()),
        readiness,
        effective_taints: effective,
        recheck_at: (!silent).then_some(deadline),
    }
}

/// What to do with the pods of one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodDecision {
    /// Pods (names) whose `Ready` condition must become False.
    pub mark_not_ready: Vec<String>,
    /// Pods (names) to delete now.
    pub evict: Vec<String>,
    /// When the next pod is due for eviction.
    pub recheck_at: Option<Timestamp>,
}

/// When a pod must leave a node with these taints (`None`: it may stay):
/// the earliest over the node's `NoExecute` taints.
pub fn eviction_time(
    pod: &Pod,
    taints: &[Taint],
    now: Timestamp,
    cfg: &NodeLifecycleConfig,
) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .filter_map(|taint| {
            let added = taint.time_added.as_ref().map_or(now, |t| t.0);
            let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
            if matching.is_empty() {
                let ours = taint.key == TAINT_UNREACHABLE || taint.key == TAINT_NOT_READY;
                return Some(if ours {
                    added + signed(cfg.eviction_timeout)
                } else {
                    now.min(added)
                });
            }
            // Several matching tolerations: the most permissive wins; no
            // limit at all means the pod stays.
            if matching.iter().any(|t| t.toleration_seconds.is_none()) {
                return None;
            }
            let secs = matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .max()
                .unwrap_or(0)
                .max(0);
            Some(added + SignedDuration::from_secs(secs))
        })
        .min()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Decides on the active pods bound to one node, given the node decision.
pub fn decide_pods<'a>(
    decision: &NodeDecision,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
    cfg: &NodeLifecycleConfig,
) -> PodDecision {
    let mut out = PodDecision::default();
    for pod in pods.into_iter().filter(|p| is_active(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match eviction_time(pod, &decision.effective_taints, now, cfg) {
            Some(at) if at <= now => {
                out.evict.push(name);
                continue;
            }
            Some(at) => out.recheck_at = Some(out.recheck_at.map_or(at, |r: Timestamp| r.min(at))),
            None => {}
        }
        if decision.readiness != Readiness::Ready && pod_ready(pod) {
            out.mark_not_ready.push(name);
        }
    }
    out
}

/// Pods bound to nodes that do not exist, older than the grace period
/// (younger ones may be bound to a node our cache has not seen yet).
pub fn orphaned_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    node_exists: impl Fn(&str) -> bool,
    now: Timestamp,
    cfg: &NodeLifecycleConfig,
) -> Vec<&'a Pod> {
    pods.into_iter()
        .filter(|p| {
            let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
            else {
                return false;
            };
            let created = p.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
            !node_exists(node) && created + signed(cfg.grace) <= now
        })
        .collect()
}

/// The pod's conditions with `Ready` (and `ContainersReady`) False.
pub fn not_ready_conditions(pod: &Pod, now: Timestamp) -> Vec<PodCondition> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in conditions
        .iter_mut()
        .filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
    {
        if c.status != "False" {
            c.status = "False".to_owned();
            c.reason = Some("NodeNotReady".to_owned());
            c.message = Some("the node is not ready".to_owned());
            c.last_transition_time = Some(Time(now));
        }
    }
    conditions
}

// --------------------------------------------------------------- runner

/// Errors of the node lifecycle controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list at start.
    #[error("node lifecycle controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An API write failed.
    #[error("{action} ({object})")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Which object.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// What [`reconcile`] works with.
pub struct Context {
    client: Client,
    config: NodeLifecycleConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// `None` when the API server serves no Leases.
    leases: Option<Store<Lease>>,
}

/// Runs the node lifecycle controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when Nodes or Pods cannot be listed at start.
pub async fn run(
    client: Client,
    config: NodeLifecycleConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let pre = |resource| move |source| Error::Preflight { resource, source };
    runtime::can_list::<Node>(&client)
        .await
        .map_err(pre("nodes"))?;
    runtime::can_list::<Pod>(&client)
        .await
        .map_err(pre("pods"))?;
    // Pods trigger their node (new pods on a tainted node, readiness).
    let (pod_reader, pods) = runtime::cache::<Pod>(&client);
    let one = ListParams::default().limit(1);
    let lease_api = Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let serves_leases = lease_api.list(&one).await.is_ok();
    if !serves_leases {
        warn!("the API server serves no node Leases; node status is the only heartbeat");
    }
    let (lease_reader, lease_writer) = reflector::store::<Lease>();
    // Lease renewals move a node's deadline; they trigger no write unless
    // the node's state changes. Without Leases the stream is empty.
    let leases = if serves_leases {
        watcher::watcher(lease_api, watcher::Config::default())
            .default_backoff()
            .reflect(lease_writer)
            .touched_objects()
            .boxed()
    } else {
        futures::stream::empty::<Result<Lease, watcher::Error>>().boxed()
    };
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let context = Arc::new(Context {
        client,
        config,
        pods: pod_reader,
        nodes: controller.store(),
        leases: serves_leases.then_some(lease_reader),
    });
    info!("node lifecycle controller starting");
    controller
        .watches_stream(leases, |lease: Lease| {
            lease.metadata.name.map(|n| ObjectRef::<Node>::new(&n))
        })
        .watches_stream(pods, |pod: Pod| {
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .map(|n| ObjectRef::<Node>::new(&n))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((node, _)) => debug!(node = %node, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A pod bound to a node that is gone: its node ref is not
                // in the store. Orphans are collected on node reconciles.
                Err(kube::runtime::controller::Error::ObjectNotFound(..)) => {}
                Err(error) => warn!(%error, "node lifecycle queue error"),
            }
            future::ready(())
        })
        .await;
    info!("node lifecycle controller stopped");
    Ok(())
}

/// Reconciles one node: silence → Unknown, taints, pod readiness,
/// evictions; and collects pods of deleted nodes.
///
/// # Errors
/// API failures (retried).
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !cache_synced(&ctx.pods) || !ctx.leases.as_ref().is_none_or(cache_synced) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let now = Timestamp::now();
    let name = node.name_any();
    let cfg = &ctx.config;
    let lease = ctx
        .leases
        .as_ref()
        .and_then(|l| l.get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE)));
    let decision = decide_node(&node, lease.as_deref(), now, cfg);
    let node_api = Api::<Node>::all(ctx.client.clone());
    let err = |action: &'static str, object: String| {
        move |source| Error::Write {
            action,
            object,
            source,
        }
    };
    let mut resource_version = node.metadata.resource_version.clone();
    if let Some(conditions) = &decision.conditions {
        warn!(node = %name, "node stopped heartbeating; marking its status Unknown");
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {"conditions": conditions},
        });
        match node_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => resource_version = updated.metadata.resource_version,
            // A heartbeat raced us: look again with fresh data.
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(source) => return Err(err("marking node status unknown", name.clone())(source)),
        }
    }
    if let Some(taints) = &decision.taints {
        info!(node = %name, readiness = ?decision.readiness, "updating node taints");
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": resource_version},
            "spec": {"taints": taints},
        });
        match node_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(source) => return Err(err("tainting node", name.clone())(source)),
        }
    }

    let all_pods = ctx.pods.state();
    let on_node: Vec<&Pod> = all_pods
        .iter()
        .map(|p| &**p)
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        .collect();
    let pods = decide_pods(&decision, on_node.iter().copied(), now, cfg);
    let by_name: BTreeMap<&str, &Pod> = on_node
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, *p)))
        .collect();
    for pod_name in &pods.mark_not_ready {
        let Some(pod) = by_name.get(pod_name.as_str()) else {
            continue;
        };
        let namespace = pod.namespace().unwrap_or_default();
        let patch = serde_json::json!({"status": {"conditions": not_ready_conditions(pod, now)}});
        runtime::ignore_not_found(
            Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(err(
            "marking pod not ready",
            format!("{namespace}/{pod_name}"),
        ))?;
        debug!(node = %name, %namespace, pod = %pod_name, "pod marked not ready");
    }
    for pod_name in &pods.evict {
        let Some(pod) = by_name.get(pod_name.as_str()) else {
            continue;
        };
        let namespace = pod.namespace().unwrap_or_default();
        info!(node = %name, %namespace, pod = %pod_name, "evicting pod from unhealthy node");
        delete_pod(&ctx.client, pod, Deletion::Graceful)
            .await
            .map_err(err("evicting pod", format!("{namespace}/{pod_name}")))?;
    }
    // Pods of deleted nodes (any node's reconcile collects them).
    let nodes = ctx.nodes.state();
    let exists = |n: &str| {
        nodes
            .iter()
            .any(|node| node.metadata.name.as_deref() == Some(n))
    };
    for pod in orphaned_pods(all_pods.iter().map(|p| &**p), exists, now, cfg) {
        info!(namespace = ?pod.metadata.namespace, pod = ?pod.metadata.name, node = ?pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), "deleting pod of a deleted node");
        // Nothing will ever confirm a graceful deletion on a node that is
        // gone: force it, as Kubernetes' pod GC does.
        delete_pod(&ctx.client, pod, Deletion::Force)
            .await
            .map_err(err("deleting orphaned pod", pod.name_any()))?;
    }

    let next = [decision.recheck_at, pods.recheck_at]
        .into_iter()
        .flatten()
        .min();
    let wait = next.map_or(cfg.grace, |t| {
        Duration::try_from(t.duration_since(now)).unwrap_or_default()
    });
    // Wake a little after the deadline; never spin.
    Ok(Action::requeue(
        wait.max(Duration::from_millis(100)) + Duration::from_millis(50),
    ))
}

/// How [`delete_pod`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    /// With the pod's grace period: its node's agent stops it and confirms.
    Graceful,
    /// At once (grace 0): for pods whose node no longer exists.
    Force,
}

async fn delete_pod(client: &Client, pod: &Pod, how: Deletion) -> Result<(), kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        grace_period_seconds: (how == Deletion::Force).then_some(0),
        ..Default::default()
    };
    runtime::ignore_not_found(
        Api::<Pod>::namespaced(client.clone(), &namespace)
            .delete(&pod.name_any(), &dp)
            .await,
    )
    .map(|_| ())
}

fn error_policy(node: Arc<Node>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(node = %node.name_any(), error = %error, "node lifecycle reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testkit::{at, pod_named, set_ready};
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cfg() -> NodeLifecycleConfig {
        NodeLifecycleConfig {
            grace: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
        }
    }

    fn t(secs: i64) -> Timestamp {
        at(secs).0
    }

    fn node(status: &str, heartbeat: i64) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(at(0)),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_heartbeat_time: Some(at(heartbeat)),
                        last_transition_time: Some(at(0)),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        last_heartbeat_time: Some(at(heartbeat)),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn taint_keys(taints: &[Taint]) -> Vec<&str> {
        taints.iter().map(|t| t.key.as_str()).collect()
    }

    #[test]
    fn fresh_heartbeat_changes_nothing_and_rechecks_at_the_deadline() {
        let d = decide_node(&node("True", 100), None, t(120), &cfg());
        assert_eq!(d.conditions, None);
        assert_eq!(d.taints, None);
        assert_eq!(d.readiness, Readiness::Ready);
        assert_eq!(d.recheck_at, Some(t(140)));
    }

    #[test]
    fn silence_past_grace_marks_unknown_and_taints_unreachable() {
        let d = decide_node(&node("True", 100), None, t(140), &cfg());
        let conditions = d.conditions.expect("marked");
        assert!(conditions.iter().all(|c| c.status == "Unknown"));
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_STOPPED));
        assert_eq!(ready.last_transition_time, Some(at(140)));
        assert_eq!(ready.last_heartbeat_time, Some(at(100)), "heartbeat kept");
        let taints = d.taints.expect("tainted");
        assert_eq!(taint_keys(&taints), [TAINT_UNREACHABLE]);
        assert_eq!(taints[0].effect, "NoExecute");
        assert_eq!(taints[0].time_added, Some(at(140)));
        assert_eq!(d.readiness, Readiness::Unknown);
        assert_eq!(d.recheck_at, None);
    }

    #[test]
    fn already_unknown_node_is_not_rewritten() {
        let mut n = node("Unknown", 100);
        n.spec.get_or_insert_default().taints = Some(vec![Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(at(140)),
            value: None,
        }]);
        if let Some(cs) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs[1].status = "Unknown".into();
        }
        let d = decide_node(&n, None, t(500), &cfg());
        assert_eq!(d.conditions, None);
        assert_eq!(d.taints, None);
        assert_eq!(
            d.effective_taints[0].time_added,
            Some(at(140)),
            "timeAdded kept"
        );
    }

    #[test]
    fn not_ready_node_gets_not_ready_taint_and_recovery_removes_it() {
        let d = decide_node(&node("False", 100), None, t(110), &cfg());
        assert_eq!(d.conditions, None, "agent is alive, just not ready");
        assert_eq!(
            taint_keys(&d.taints.clone().expect("tainted")),
            [TAINT_NOT_READY]
        );
        let mut n = node("True", 200);
        n.spec.get_or_insert_default().taints = Some(vec![
            Taint {
                key: "dedicated".into(),
                effect: "NoSchedule".into(),
                value: Some("db".into()),
                time_added: None,
            },
            d.effective_taints[0].clone(),
        ]);
        let recovered = decide_node(&n, None, t(210), &cfg());
        assert_eq!(
            taint_keys(&recovered.taints.expect("untainted")),
            ["dedicated"],
            "other taints kept"
        );
    }

    #[test]
    fn unreachable_replaces_not_ready() {
        let mut n = node("False", 100);
        n.spec.get_or_insert_default().taints = Some(vec![Taint {
            key: TAINT_NOT_READY.into(),
            effect: "NoExecute".into(),
            time_added: Some(at(105)),
            value: None,
        }]);
        let d = decide_node(&n, None, t(200), &cfg());
        assert_eq!(taint_keys(&d.taints.expect("changed")), [TAINT_UNREACHABLE]);
    }

    #[test]
    fn a_renewed_lease_keeps_a_node_alive() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let lease = |renewed: i64| Lease {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(t(renewed))),
                ..Default::default()
            }),
        };
        let n = node("True", 100);
        // Status heartbeat is old, but the lease was renewed at 130.
        let d = decide_node(&n, Some(&lease(130)), t(150), &cfg());
        assert_eq!(d.conditions, None);
        assert_eq!(d.recheck_at, Some(t(170)));
        assert_eq!(last_heartbeat(&n, Some(&lease(130))), Some(t(130)));
        // An older lease does not hide a newer status heartbeat.
        assert_eq!(last_heartbeat(&n, Some(&lease(50))), Some(t(100)));
        // Both stale: silent.
        assert!(
            decide_node(&n, Some(&lease(105)), t(150), &cfg())
                .conditions
                .is_some()
        );
    }

    #[test]
    fn node_that_never_reported_goes_unknown_after_grace_from_creation() {
        let mut n = node("True", 0);
        n.status = None;
        assert_eq!(decide_node(&n, None, t(39), &cfg()).conditions, None);
        let d = decide_node(&n, None, t(40), &cfg());
        let cs = d.conditions.expect("added");
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].message.as_deref(), Some(MESSAGE_NEVER));
    }

    fn tainted_decision(added: i64) -> NodeDecision {
        let mut n = node("Unknown", 0);
        n.spec.get_or_insert_default().taints = Some(vec![Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(at(added)),
            value: None,
        }]);
        decide_node(&n, None, t(added), &cfg())
    }

    fn on_n1(name: &str) -> Pod {
        let mut p = pod_named(name);
        set_ready(&mut p, 1);
        p
    }

    fn tolerate(pod: &mut Pod, key: Option<&str>, seconds: Option<i64>) {
        pod.spec.get_or_insert_default().tolerations = Some(vec![Toleration {
            key: key.map(str::to_owned),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }]);
    }

    #[test]
    fn pods_are_marked_not_ready_then_evicted_after_the_timeout() {
        let d = tainted_decision(100);
        let pods = [on_n1("a")];
        let early = decide_pods(&d, &pods, t(200), &cfg());
        assert_eq!(early.mark_not_ready, ["a"]);
        assert!(early.evict.is_empty());
        assert_eq!(early.recheck_at, Some(t(400)));
        let due = decide_pods(&d, &pods, t(400), &cfg());
        assert_eq!(due.evict, ["a"]);
        assert!(due.mark_not_ready.is_empty());
    }

    #[test]
    fn toleration_seconds_override_the_default_and_unlimited_stays() {
        let d = tainted_decision(100);
        let mut quick = on_n1("quick");
        tolerate(&mut quick, Some(TAINT_UNREACHABLE), Some(10));
        let mut forever = on_n1("forever");
        tolerate(&mut forever, Some(TAINT_UNREACHABLE), None);
        let mut everything = on_n1("everything");
        tolerate(&mut everything, None, None);
        let mut other = on_n1("other");
        tolerate(&mut other, Some("something-else"), Some(1));
        let pods = [quick, forever, everything, other];
        let at_110 = decide_pods(&d, &pods, t(110), &cfg());
        assert_eq!(at_110.evict, ["quick"]);
        assert_eq!(at_110.recheck_at, Some(t(400)), "'other' gets the default");
        let at_400 = decide_pods(&d, &pods, t(400), &cfg());
        assert_eq!(at_400.evict, ["quick", "other"]);
        // Tolerating pods are still marked not ready: they get no traffic.
        assert!(at_110.mark_not_ready.contains(&"forever".to_owned()));
    }

    #[test]
    fn foreign_no_execute_taint_evicts_untolerating_pods_at_once() {
        let mut n = node("True", 100);
        n.spec.get_or_insert_default().taints = Some(vec![Taint {
            key: "maintenance".into(),
            effect: "NoExecute".into(),
            time_added: Some(at(100)),
            value: None,
        }]);
        let d = decide_node(&n, None, t(101), &cfg());
        let mut tolerant = on_n1("tolerant");
        tolerate(&mut tolerant, Some("maintenance"), None);
        let out = decide_pods(&d, &[on_n1("plain"), tolerant], t(101), &cfg());
        assert_eq!(out.evict, ["plain"]);
        assert!(out.mark_not_ready.is_empty(), "node is ready");
    }

    #[test]
    fn finished_pods_are_left_alone() {
        let d = tainted_decision(0);
        let mut done = on_n1("done");
        done.status.get_or_insert_default().phase = Some("Succeeded".into());
        let out = decide_pods(&d, &[done], t(1000), &cfg());
        assert!(out.evict.is_empty() && out.mark_not_ready.is_empty());
    }

    #[test]
    fn pods_of_missing_nodes_are_orphans_after_grace() {
        let mut young = on_n1("young");
        young.metadata.creation_timestamp = Some(at(90));
        let mut old = on_n1("old");
        old.metadata.creation_timestamp = Some(at(10));
        let unbound = pod_named("unbound");
        let mut elsewhere = on_n1("elsewhere");
        elsewhere.spec.get_or_insert_default().node_name = Some("n2".into());
        let pods = [young, old, unbound, elsewhere];
        let orphans = orphaned_pods(&pods, |n| n == "n2", t(100), &cfg());
        assert_eq!(
            orphans
                .iter()
                .map(|p| p.metadata.name.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["old"]
        );
    }

    #[test]
    fn not_ready_conditions_flip_ready_and_containers_ready() {
        let mut p = on_n1("a");
        p.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(PodCondition {
                type_: "ContainersReady".into(),
                status: "True".into(),
                ..Default::default()
            });
        let cs = not_ready_conditions(&p, t(5));
        assert!(
            cs.iter()
                .filter(|c| c.type_ != "PodScheduled")
                .all(|c| c.status == "False")
        );
        assert_eq!(cs.len(), 2);
    }
}
