//! The DaemonSet controller, after Kubernetes' daemon controller: one pod
//! per eligible node. A node is eligible when it matches the template's
//! `nodeSelector` and required node affinity and the pod (with the
//! tolerations every daemon pod gets) tolerates its `NoSchedule` /
//! `NoExecute` taints. Pods are pinned with required node affinity on
//! `metadata.name` (the scheduler places them, as in Kubernetes since
//! 1.12); extra and failed daemon pods are deleted, pods on nodes that
//! are no longer eligible too. Template changes roll out with
//! `RollingUpdate` (`maxUnavailable`, default 1; `maxSurge` is not
//! implemented and treated as 0) or wait for manual deletion (`OnDelete`);
//! pods carry `controller-revision-hash` (the template hash — there are no
//! ControllerRevision objects here).
//!
//! [`plan`] is pure; [`run`] drives it with kube-runtime.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::deployment::{pod_template_hash, resolve_int_or_percent};
use super::expectations::Expectations;
use super::owner::{controller_of, controller_reference};
use super::podstate::{available_at, is_active, is_available, is_ready};
use super::template::{generate_name_prefix, pod_from_template};
use super::{SYNC_RETRY, cache_synced, runtime};
use crate::scheduler::filter::{first_untolerated_taint, node_selector_matches};
use crate::scheduler::info::NodeFacts;
use crate::selector::{Selector, SelectorError};

/// Label with the template revision a daemon pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Why a DaemonSet cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The selector or the template's node selector does not parse.
    #[error("invalid selector")]
    Selector(#[from] SelectorError),
    /// The selector is empty.
    #[error("empty selector")]
    EmptySelector,
    /// The object has no uid.
    #[error("object has no uid")]
    NoUid,
    /// `maxUnavailable` is not an integer or percentage.
    #[error("invalid maxUnavailable")]
    MaxUnavailable,
}

/// What the controller should do for one DaemonSet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DsPlan {
    /// Nodes that need a daemon pod.
    pub create: Vec<String>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: DaemonSetStatus,
    /// When a ready pod becomes available (`minReadySeconds`).
    pub recheck_at: Option<Timestamp>,
}

/// The tolerations Kubernetes adds to every daemon pod
/// (`AddOrUpdateDaemonPodTolerations`): daemons stay on unreachable and
/// not-ready nodes, and run on cordoned or pressured ones.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        value: None,
        toleration_seconds: None,
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The template's tolerations plus [`daemon_tolerations`] not already there.
fn tolerations_of(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.as_ref();
    let mut tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    for t in daemon_tolerations(spec.and_then(|s| s.host_network).unwrap_or(false)) {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    tolerations
}

/// Whether a daemon pod of `template` should run on `node` (Kubernetes'
/// `NodeShouldRunDaemonPod`): node selector, required affinity, taints.
///
/// # Errors
/// An unparseable `nodeSelector`.
pub fn should_run(template: &PodTemplateSpec, node: &NodeFacts) -> Result<bool, SelectorError> {
    let spec = template.spec.as_ref();
    if let Some(map) = spec
        .and_then(|s| s.node_selector.as_ref())
        .filter(|m| !m.is_empty())
        && !Selector::from_map(map)?.matches(&node.labels)
    {
        return Ok(false);
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if required.is_some_and(|r| !node_selector_matches(r, node)) {
        return Ok(false);
    }
    Ok(first_untolerated_taint(&node.taints, &tolerations_of(template)).is_none())
}

/// The daemon pod template for `node`: pinned by required node affinity
/// on `metadata.name` (replacing the template's required terms, which the
/// node already satisfies), daemon tolerations added, revision label set.
pub fn template_for_node(
    template: &PodTemplateSpec,
    node: &str,
    revision: &str,
) -> PodTemplateSpec {
    let mut t = template.clone();
    t.metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(REVISION_HASH_LABEL.to_owned(), revision.to_owned());
    let tolerations = tolerations_of(template);
    let spec = t.spec.get_or_insert_default();
    spec.tolerations = Some(tolerations);
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
            match_expressions: None,
        }],
    };
    spec.affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    t
}

/// The node a daemon pod is meant for: `spec.nodeName`, else its pinning
/// affinity term.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The template revision of a DaemonSet.
pub fn revision(ds: &DaemonSet) -> String {
    pod_template_hash(
        &ds.spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    )
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// Plans one DaemonSet against the nodes and its namespace's pods at `now`.
///
/// # Errors
/// [`PlanError`] for an unusable selector or strategy.
#[expect(
    clippy::too_many_lines,
    reason = "the daemon sync steps read best in one place"
)]
pub fn plan<'a>(
    ds: &DaemonSet,
    nodes: impl IntoIterator<Item = &'a NodeFacts>,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
) -> Result<DsPlan, PlanError> {
    let uid = ds.metadata.uid.as_deref().ok_or(PlanError::NoUid)?;
    let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
    let selector = Selector::from_label_selector(&ds.spec.selector)?;
    if selector.is_empty() {
        return Err(PlanError::EmptySelector);
    }
    let current = revision(ds);
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let mut out = DsPlan::default();

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref().unwrap_or_default() != namespace
            || controller_of(&pod.metadata).is_none_or(|r| r.uid != uid)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if let Some(node) = target_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }

    let (mut desired, mut scheduled, mut misscheduled, mut ready, mut available, mut updated) =
        (0, 0, 0, 0, 0, 0);
    // Nodes whose daemon pod is old, with whether it is available.
    let mut old: Vec<(&Pod, bool)> = Vec::new();
    let mut unavailable = 0;
    let mut seen_nodes: Vec<String> = Vec::new();
    for node in nodes {
        seen_nodes.push(node.name.clone());
        let mut pods: Vec<&Pod> = by_node.get(&node.name).cloned().unwrap_or_default();
        let runs = should_run(&ds.spec.template, node)?;
        if !runs {
            if !pods.is_empty() {
                misscheduled += 1;
                out.delete.extend(
                    pods.iter()
                        .map(|p| p.metadata.name.clone().unwrap_or_default()),
                );
            }
            continue;
        }
        desired += 1;
        // Failed daemon pods are deleted and replaced.
        let (failed, live): (Vec<&Pod>, Vec<&Pod>) = pods.drain(..).partition(|p| !is_active(p));
        out.delete.extend(
            failed
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default()),
        );
        let mut live = live;
        if live.is_empty() {
            if failed.is_empty() {
                out.create.push(node.name.clone());
            }
            unavailable += 1;
            continue;
        }
        scheduled += 1;
        // Keep the oldest; more than one pod on a node is a mistake.
        live.sort_by(|a, b| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        out.delete.extend(
            live[1..]
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default()),
        );
        let pod = live[0];
        let is_avail = is_available(pod, min_ready, now);
        if is_ready(pod) {
            ready += 1;
        }
        if is_avail {
            available += 1;
        } else {
            unavailable += 1;
            if let Some(at) = available_at(pod, min_ready, now) {
                out.recheck_at = Some(out.recheck_at.map_or(at, |r: Timestamp| r.min(at)));
            }
        }
        if revision_of(pod) == Some(current.as_str()) {
            updated += 1;
        } else {
            old.push((pod, is_avail));
        }
    }
    // Pods pinned to nodes that no longer exist.
    for (node, pods) in &by_node {
        if !seen_nodes.contains(node) {
            misscheduled += 1;
            out.delete.extend(
                pods.iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default()),
            );
        }
    }

    // Rolling update: replace old pods, never with more than
    // maxUnavailable daemon pods unavailable at once.
    let strategy = ds.spec.update_strategy.as_ref();
    if strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
    {
        let max_unavailable = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        let max_unavailable =
            resolve_int_or_percent(&max_unavailable, desired, true, "maxUnavailable")
                .map_err(|_| PlanError::MaxUnavailable)?
                .max(1);
        // Unavailable old pods cost nothing to replace; do them first.
        old.sort_by_key(|(_, avail)| *avail);
        let mut budget = max_unavailable - unavailable;
        for (pod, avail) in old {
            if avail {
                if budget <= 0 {
                    break;
                }
                budget -= 1;
            }
            out.delete
                .push(pod.metadata.name.clone().unwrap_or_default());
        }
    }
    out.delete.sort();
    out.delete.dedup();
    out.status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: scheduled,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    Ok(out)
}

// --------------------------------------------------------------- runner

/// Errors of the DaemonSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list at start.
    #[error("daemonset controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An API write failed.
    #[error("{action} for daemon set {namespace}/{name}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// DaemonSet name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// What [`reconcile`] works with.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expectations: Expectations,
}

/// Runs the DaemonSet controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when DaemonSets, Pods or Nodes cannot be listed.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let pre = |resource| move |source| Error::Preflight { resource, source };
    runtime::can_list::<DaemonSet>(&client)
        .await
        .map_err(pre("daemonsets"))?;
    runtime::can_list::<Pod>(&client)
        .await
        .map_err(pre("pods"))?;
    runtime::can_list::<Node>(&client)
        .await
        .map_err(pre("nodes"))?;
    let (pod_reader, pods) = runtime::cache::<Pod>(&client);
    let (node_reader, node_writer) = reflector::store::<Node>();
    // Node changes that matter for eligibility (not heartbeats) re-run
    // every DaemonSet.
    let known: Arc<Mutex<HashMap<String, NodeFacts>>> = Arc::default();
    let node_changes =
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer)
            .filter_map(move |event| {
                let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
                let changed = match event {
                    Ok(Event::Apply(node)) => {
                        let facts = NodeFacts::from_node(&node);
                        known.insert(facts.name.clone(), facts.clone()).as_ref() != Some(&facts)
                    }
                    Ok(Event::Delete(node)) => known.remove(&node.name_any()).is_some(),
                    Ok(Event::InitDone) => true,
                    Ok(_) => false,
                    Err(error) => {
                        warn!(%error, "node watch failed; retrying");
                        false
                    }
                };
                future::ready(changed.then_some(()))
            });
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pod_reader,
        nodes: node_reader,
        expectations: Expectations::new(),
    });
    let results = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default())
        .watches_stream(pods, |pod: Pod| runtime::controlling::<DaemonSet>(&pod))
        .reconcile_all_on(node_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context);
    runtime::drive("daemonset", results).await;
    Ok(())
}

/// Reconciles one DaemonSet.
///
/// # Errors
/// API failures (retried). Plan errors are logged
/// and wait for a change.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !cache_synced(&ctx.pods) || !cache_synced(&ctx.nodes) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let has_name = |n: &str| pods.iter().any(|p| p.metadata.name.as_deref() == Some(n));
    let has_uid = |u: &str| {
        pods.iter().any(|p| {
            p.metadata.uid.as_deref() == Some(u) && p.metadata.deletion_timestamp.is_none()
        })
    };
    if !ctx
        .expectations
        .satisfied(&uid, has_name, has_uid, Instant::now())
    {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut nodes: Vec<NodeFacts> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| NodeFacts::from_node(n))
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let now = Timestamp::now();
    let plan = match plan(&ds, &nodes, pods.iter().map(|p| &**p), now) {
        Ok(p) => p,
        Err(error) => {
            warn!(%namespace, daemonset = %name, error = %error, "cannot plan daemon set; waiting for a change");
            return Ok(Action::await_change());
        }
    };
    let err = |action: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Write {
            action,
            namespace,
            name,
            source,
        }
    };
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    if let Some(reference) = controller_reference(&*ds) {
        let rev = revision(&ds);
        let post = PostParams::default();
        let results = future::join_all(plan.create.iter().map(|node| {
            let template = template_for_node(&ds.spec.template, node, &rev);
            let pod = pod_from_template(
                &template,
                &namespace,
                &generate_name_prefix(&name),
                reference.clone(),
            );
            let api = api.clone();
            let post = post.clone();
            async move { api.create(&post, &pod).await }
        }))
        .await;
        let created: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(ResourceExt::name_any))
            .collect();
        if !created.is_empty() {
            info!(%namespace, daemonset = %name, count = created.len(), "created daemon pods");
        }
        ctx.expectations.expect(&uid, created, [], Instant::now());
        if let Some(Err(source)) = results.into_iter().find(Result::is_err) {
            return Err(err("creating pod")(source));
        }
    }
    let by_name: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, &**p)))
        .collect();
    for pod_name in &plan.delete {
        let Some(pod) = by_name.get(pod_name.as_str()) else {
            continue;
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(pod_name, &dp).await {
            Ok(_) => {
                if let Some(u) = pod.metadata.uid.clone() {
                    ctx.expectations.expect(&uid, [], [u], Instant::now());
                }
                info!(%namespace, daemonset = %name, pod = %pod_name, "deleted daemon pod");
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(source) => return Err(err("deleting pod")(source)),
        }
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let patch = serde_json::json!({ "status": plan.status });
        runtime::ignore_not_found(
            Api::<DaemonSet>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(err("updating status"))?;
    }
    Ok(runtime::requeue_at(plan.recheck_at, now))
}

fn error_policy(ds: Arc<DaemonSet>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(daemonset = %ds.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testkit::{at, pod_named, set_phase, set_ready, template, web_labels};
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::Taint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn ds(image: &str) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("uid-ds".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(web_labels()),
                    ..Default::default()
                },
                template: template(web_labels(), image),
                ..Default::default()
            },
            status: None,
        }
    }

    fn node(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            ready: true,
            unschedulable: false,
            labels: [("kubernetes.io/hostname".to_owned(), name.to_owned())].into(),
            taints: Vec::new(),
            allocatable: Default::default(),
            allowed_pods: 110,
        }
    }

    fn daemon_pod(d: &DaemonSet, node: &str, name: &str) -> Pod {
        let t = template_for_node(&d.spec.template, node, &revision(d));
        let mut p = pod_from_template(
            &t,
            "default",
            "agent-",
            controller_reference(d).expect("ref"),
        );
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(at(0));
        p.spec.get_or_insert_default().node_name = Some(node.into());
        p
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds("agent:1");
        let mut tainted = node("n3");
        tainted.taints = vec![Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        }];
        let nodes = [node("n1"), node("n2"), tainted];
        let p = plan(&d, &nodes, &[daemon_pod(&d, "n1", "a")], at(0).0).expect("plan");
        assert_eq!(p.create, ["n2"]);
        assert!(p.delete.is_empty());
        assert_eq!(
            (
                p.status.desired_number_scheduled,
                p.status.current_number_scheduled
            ),
            (2, 1)
        );
    }

    #[test]
    fn node_selector_and_daemon_tolerations() {
        let mut d = ds("agent:1");
        d.spec.template.spec.get_or_insert_default().node_selector =
            Some([("role".to_owned(), "edge".to_owned())].into());
        let mut edge = node("edge");
        edge.labels.insert("role".into(), "edge".into());
        // Cordoned and unreachable: daemons still belong there.
        edge.unschedulable = true;
        edge.taints = vec![
            Taint {
                key: "node.kubernetes.io/unreachable".into(),
                effect: "NoExecute".into(),
                value: None,
                time_added: None,
            },
            Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            },
        ];
        assert!(should_run(&d.spec.template, &edge).expect("valid"));
        assert!(!should_run(&d.spec.template, &node("core")).expect("valid"));
    }

    #[test]
    fn pods_are_pinned_by_node_affinity_with_tolerations_and_revision() {
        let d = ds("agent:1");
        let t = template_for_node(&d.spec.template, "n7", "rev1");
        let pod = pod_from_template(
            &t,
            "default",
            "agent-",
            controller_reference(&d).expect("ref"),
        );
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
        assert_eq!(revision_of(&pod), Some("rev1"));
        let facts = node("n7");
        let req = t
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("pinned");
        assert!(node_selector_matches(req, &facts));
        assert!(!node_selector_matches(req, &node("n8")));
        let tolerations = t
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
        );
    }

    #[test]
    fn extra_failed_and_misplaced_pods_are_deleted() {
        let d = ds("agent:1");
        let mut second = daemon_pod(&d, "n1", "b");
        second.metadata.creation_timestamp = Some(at(5));
        let mut failed = daemon_pod(&d, "n2", "f");
        set_phase(&mut failed, "Failed");
        let gone = daemon_pod(&d, "removed-node", "g");
        let pods = [daemon_pod(&d, "n1", "a"), second, failed, gone];
        let p = plan(&d, &[node("n1"), node("n2")], &pods, at(10).0).expect("plan");
        assert_eq!(p.delete, ["b", "f", "g"]);
        assert!(
            p.create.is_empty(),
            "n2 is recreated once its failed pod is gone"
        );
        assert_eq!(p.status.number_misscheduled, 1);
        let p = plan(
            &d,
            &[node("n1"), node("n2")],
            &[daemon_pod(&d, "n1", "a")],
            at(10).0,
        )
        .expect("plan");
        assert_eq!(p.create, ["n2"]);
    }

    #[test]
    fn rolling_update_replaces_at_most_max_unavailable_at_a_time() {
        let old = ds("agent:1");
        let mut pods: Vec<Pod> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| {
                let mut p = daemon_pod(&old, n, &format!("old-{n}"));
                set_ready(&mut p, 0);
                p
            })
            .collect();
        let new = ds("agent:2");
        let nodes = [node("n1"), node("n2"), node("n3")];
        let p = plan(&new, &nodes, &pods, at(10).0).expect("plan");
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1");
        assert_eq!(p.status.updated_number_scheduled, Some(0));
        // The replaced node is unavailable until its new pod is ready.
        pods.retain(|p| p.metadata.name.as_deref().is_none_or(|n| n != "old-n1"));
        let p = plan(&new, &nodes, &pods, at(11).0).expect("plan");
        assert_eq!(p.create, ["n1"]);
        assert!(p.delete.is_empty(), "budget used by the missing pod");
        let mut fresh = daemon_pod(&new, "n1", "new-n1");
        set_ready(&mut fresh, 12);
        pods.push(fresh);
        let p = plan(&new, &nodes, &pods, at(12).0).expect("plan");
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        // maxUnavailable 2 replaces two at once; OnDelete none.
        let mut wide = new.clone();
        wide.spec.update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(2)),
                max_surge: None,
            }),
        });
        assert_eq!(
            plan(&wide, &nodes, &pods, at(12).0)
                .expect("plan")
                .delete
                .len(),
            2
        );
        let mut manual = new.clone();
        manual.spec.update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        assert!(
            plan(&manual, &nodes, &pods, at(12).0)
                .expect("plan")
                .delete
                .is_empty()
        );
    }

    #[test]
    fn unavailable_old_pods_are_replaced_first_and_free() {
        let old = ds("agent:1");
        let mut ready = daemon_pod(&old, "n1", "ready");
        set_ready(&mut ready, 0);
        let not_ready = daemon_pod(&old, "n2", "not-ready");
        let p = plan(
            &ds("agent:2"),
            &[node("n1"), node("n2")],
            &[ready, not_ready],
            at(5).0,
        )
        .expect("plan");
        // n2's pod is unavailable anyway: replacing it uses no budget, but
        // the budget (1) is then already spent by n2 being unavailable.
        assert_eq!(p.delete, ["not-ready"]);
    }

    #[test]
    fn foreign_pods_are_ignored() {
        let d = ds("agent:1");
        let mut stray = pod_named("stray");
        stray.spec.get_or_insert_default().node_name = Some("n1".into());
        let p = plan(&d, &[node("n1")], &[stray], at(0).0).expect("plan");
        assert_eq!(p.create, ["n1"]);
        assert!(p.delete.is_empty());
    }
}
