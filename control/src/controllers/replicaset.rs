//! The ReplicaSet controller: keeps `spec.replicas` active Pods matching
//! the selector, as Kubernetes' `ReplicaSetController` does.
//!
//! [`plan`] is the pure core: it claims pods (adopting matching orphans,
//! releasing owned pods whose labels stopped matching), compares the
//! active ones with `spec.replicas`, picks which to delete on scale-down
//! ([`deletion_order`](super::podstate::deletion_order), Kubernetes'
//! `ActivePods` order) and computes the status.
//!
//! [`run`] drives it: a kube-runtime `Controller` over ReplicaSets, fed
//! also by a Pod watcher whose events map to the pod's controlling
//! ReplicaSet and — for orphans — to every ReplicaSet whose selector
//! matches it (so adoption happens without waiting for a resync). Writes
//! go through the API; [`Expectations`] keep a reconcile from acting on a
//! pod cache that does not yet show its previous creates and deletes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::expectations::Expectations;
use super::owner::{controller_of, controller_reference, with_owner, without_owner};
use super::podstate::{available_at, deletion_order, is_active, is_available, is_ready};
use super::template::{generate_name_prefix, pod_from_template};
use super::{SYNC_RETRY, cache_synced, runtime};
use crate::selector::{Selector, SelectorError};

/// Most pods created or deleted in one reconcile (Kubernetes'
/// `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Retry after an API error.
const ERROR_RETRY: Duration = Duration::from_secs(2);
/// Look again this soon while expectations are unmet (pod events normally
/// come first).
const EXPECTATIONS_RETRY: Duration = Duration::from_secs(1);

/// Why a ReplicaSet cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `spec.selector` does not parse.
    #[error("invalid selector")]
    Selector(#[from] SelectorError),
    /// `spec.selector` is empty: it would claim every pod in the
    /// namespace (the API server's validation rejects it).
    #[error("empty selector")]
    EmptySelector,
    /// The object has no uid (was not read from the API).
    #[error("object has no uid")]
    NoUid,
}

/// What the controller should do for one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RsPlan {
    /// Pods to create from the template.
    pub create: usize,
    /// Names of pods to delete (scale-down), cheapest first.
    pub delete: Vec<String>,
    /// Names of orphan pods to adopt (add our controller reference).
    pub adopt: Vec<String>,
    /// Names of owned pods to release (remove our reference).
    pub release: Vec<String>,
    /// The status to report (from the pods as they are now).
    pub status: ReplicaSetStatus,
    /// When a ready pod becomes available (`minReadySeconds`), so status
    /// must be recomputed.
    pub recheck_at: Option<Timestamp>,
}

/// The ReplicaSet's selector, refusing empty ones.
///
/// # Errors
/// [`PlanError::Selector`] or [`PlanError::EmptySelector`].
pub fn rs_selector(rs: &ReplicaSet) -> Result<Selector, PlanError> {
    let selector = Selector::from_label_selector(&rs.spec.selector)?;
    if selector.is_empty() {
        return Err(PlanError::EmptySelector);
    }
    Ok(selector)
}

/// Whether `labels` carry every label of the template (Kubernetes'
/// `fullyLabeledReplicas`).
fn fully_labeled(rs: &ReplicaSet, pod: &Pod) -> bool {
    let Some(template_labels) = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
    else {
        return true;
    };
    let labels = pod.metadata.labels.as_ref();
    template_labels
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Plans one ReplicaSet against the pods of the cluster (other namespaces
/// are ignored) at time `now`.
///
/// # Errors
/// [`PlanError`] for an unusable selector or an unstored object.
pub fn plan<'a>(
    rs: &ReplicaSet,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
) -> Result<RsPlan, PlanError> {
    let uid = rs.metadata.uid.as_deref().ok_or(PlanError::NoUid)?;
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    let selector = rs_selector(rs)?;
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut out = RsPlan::default();
    let mut claimed: Vec<&Pod> = Vec::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref().unwrap_or_default() != namespace {
            continue;
        }
        let matches = selector.matches_opt(pod.metadata.labels.as_ref());
        let name = pod.metadata.name.clone().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    claimed.push(pod);
                } else if !deleting {
                    out.release.push(name);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && pod.metadata.deletion_timestamp.is_none() {
                    out.adopt.push(name);
                    claimed.push(pod);
                }
            }
        }
    }
    let terminating = claimed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count();
    let mut active: Vec<&Pod> = claimed.into_iter().filter(|p| is_active(p)).collect();
    let want = usize::try_from(rs.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if !deleting {
        if active.len() < want {
            out.create = (want - active.len()).min(BURST_REPLICAS);
        } else if active.len() > want {
            let mut ordered = active.clone();
            ordered.sort_by(|a, b| deletion_order(a, b));
            out.delete = ordered
                .iter()
                .take((active.len() - want).min(BURST_REPLICAS))
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
        }
    }
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    active.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    out.status = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| fully_labeled(rs, p))),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: Some(i32::try_from(terminating).unwrap_or(i32::MAX)),
    };
    out.recheck_at = active
        .iter()
        .filter_map(|p| available_at(p, min_ready, now))
        .min();
    Ok(out)
}

/// Whether two statuses say the same (absent counts equal zero).
pub fn same_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.replicas == b.replicas
        && n(a.fully_labeled_replicas) == n(b.fully_labeled_replicas)
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && a.observed_generation == b.observed_generation
        && n(a.terminating_replicas) == n(b.terminating_replicas)
        && a.conditions.as_deref().unwrap_or_default()
            == b.conditions.as_deref().unwrap_or_default()
}

/// Errors of the ReplicaSet controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list at start.
    #[error("replicaset controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The ReplicaSet cannot be planned.
    #[error("replica set {namespace}/{name}")]
    Plan {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// An API write failed.
    #[error("{action} for replica set {namespace}/{name}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// ReplicaSet name.
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
    expectations: Expectations,
}

impl Context {
    /// A context reading pods from `pods` (a reflector store fed elsewhere).
    pub fn new(client: Client, pods: Store<Pod>) -> Self {
        Context {
            client,
            pods,
            expectations: Expectations::new(),
        }
    }
}

/// The ReplicaSets a pod event concerns: its controller if that is a
/// ReplicaSet; for an orphan, every ReplicaSet in its namespace whose
/// selector matches it.
pub fn replica_sets_for_pod(
    pod: &Pod,
    replica_sets: &[Arc<ReplicaSet>],
) -> Vec<ObjectRef<ReplicaSet>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(namespace)];
        }
        return Vec::new();
    }
    replica_sets
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace))
        .filter(|rs| rs_selector(rs).is_ok_and(|s| s.matches_opt(pod.metadata.labels.as_ref())))
        .map(|rs| ObjectRef::from_obj(&**rs))
        .collect()
}

/// Runs the ReplicaSet controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when ReplicaSets or Pods cannot be listed at start.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let pre = |resource| move |source| Error::Preflight { resource, source };
    runtime::can_list::<ReplicaSet>(&client)
        .await
        .map_err(pre("replicasets"))?;
    runtime::can_list::<Pod>(&client)
        .await
        .map_err(pre("pods"))?;

    let (pod_reader, pods) = runtime::cache::<Pod>(&client);
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let rs_store = controller.store();
    let context = Arc::new(Context::new(client, pod_reader));
    let results = controller
        .watches_stream(pods, move |pod| {
            replica_sets_for_pod(&pod, &rs_store.state())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context);
    runtime::drive("replicaset", results).await;
    Ok(())
}

fn write_err(action: &'static str, rs: &ReplicaSet) -> impl FnOnce(kube::Error) -> Error + use<> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    move |source| Error::Write {
        action,
        namespace,
        name,
        source,
    }
}

/// Reconciles one ReplicaSet: claim, scale, report status.
///
/// # Errors
/// An unplannable object, or an API failure (retried).
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !cache_synced(&ctx.pods) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let has_name = |n: &str| pods.iter().any(|p| p.metadata.name.as_deref() == Some(n));
    let has_uid = |u: &str| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(u));
    if !ctx
        .expectations
        .satisfied(&uid, has_name, has_uid, Instant::now())
    {
        debug!(%namespace, replicaset = %name, "waiting for the pod cache to catch up");
        return Ok(Action::requeue(EXPECTATIONS_RETRY));
    }
    let now = Timestamp::now();
    let plan = plan(&rs, pods.iter().map(|p| &**p), now).map_err(|source| Error::Plan {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let by_name: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, &**p)))
        .collect();

    if let Some(reference) = controller_reference(&*rs) {
        for pod_name in &plan.adopt {
            let Some(pod) = by_name.get(pod_name.as_str()) else {
                continue;
            };
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "ownerReferences": with_owner(&pod.metadata, reference.clone()),
            }});
            runtime::ignore_not_found(
                api.patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )
            .map_err(write_err("adopting pod", &rs))?;
            info!(%namespace, replicaset = %name, pod = %pod_name, "adopted pod");
        }
    }
    for pod_name in &plan.release {
        let Some(pod) = by_name.get(pod_name.as_str()) else {
            continue;
        };
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "ownerReferences": without_owner(&pod.metadata, &uid),
        }});
        runtime::ignore_not_found(
            api.patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(write_err("releasing pod", &rs))?;
        info!(%namespace, replicaset = %name, pod = %pod_name, "released pod");
    }

    let mut create_error: Option<String> = None;
    if plan.create > 0
        && let (Some(template), Some(reference)) =
            (rs.spec.template.as_ref(), controller_reference(&*rs))
    {
        let prefix = generate_name_prefix(&name);
        let pod = pod_from_template(template, &namespace, &prefix, reference);
        let post = PostParams::default();
        // Slow start (Kubernetes): batches of 1, 2, 4, ... so a template
        // the API rejects fails once, not `replicas` times.
        let mut remaining = plan.create;
        let mut batch = 1;
        while remaining > 0 && create_error.is_none() {
            let n = batch.min(remaining);
            let results = future::join_all((0..n).map(|_| api.create(&post, &pod))).await;
            let created: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|p| p.name_any()))
                .collect();
            ctx.expectations
                .expect(&uid, created.iter().cloned(), [], Instant::now());
            if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
                warn!(%namespace, replicaset = %name, %error, "creating pod failed");
                create_error = Some(error.to_string());
            }
            remaining -= n;
            batch *= 2;
        }
        info!(%namespace, replicaset = %name, count = plan.create, "created pods");
    }
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
        runtime::ignore_not_found(api.delete(pod_name, &dp).await)
            .map_err(write_err("deleting pod", &rs))?;
        if let Some(pod_uid) = pod.metadata.uid.clone() {
            ctx.expectations.expect(&uid, [], [pod_uid], Instant::now());
        }
    }
    if !plan.delete.is_empty() {
        info!(%namespace, replicaset = %name, count = plan.delete.len(), "deleted pods");
    }

    let mut status = plan.status;
    status.conditions = Some(replica_failure(
        status.conditions.take().unwrap_or_default(),
        create_error.as_deref(),
        now,
    ));
    let current = rs.status.clone().unwrap_or_default();
    if !same_status(&status, &current) {
        let rs_api = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({ "status": status });
        runtime::ignore_not_found(
            rs_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(write_err("updating status", &rs))?;
    }
    if let Some(error) = create_error {
        debug!(%namespace, replicaset = %name, %error, "retrying after failed create");
        return Ok(Action::requeue(ERROR_RETRY));
    }
    Ok(match plan.recheck_at {
        Some(at) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            Action::requeue(wait + Duration::from_millis(50))
        }
        None => Action::await_change(),
    })
}

/// Sets or clears the `ReplicaFailure` condition after a create attempt.
pub fn replica_failure(
    mut conditions: Vec<ReplicaSetCondition>,
    create_error: Option<&str>,
    now: Timestamp,
) -> Vec<ReplicaSetCondition> {
    match create_error {
        None => conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure")),
        Some(message) => {
            if let Some(c) = conditions
                .iter_mut()
                .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
            {
                c.message = Some(message.to_owned());
            } else {
                conditions.push(ReplicaSetCondition {
                    type_: Some("ReplicaFailure".to_owned()),
                    status: Some("True".to_owned()),
                    reason: Some("FailedCreate".to_owned()),
                    message: Some(message.to_owned()),
                    last_transition_time: Some(Time(now)),
                });
            }
        }
    }
    conditions
}

fn error_policy(rs: Arc<ReplicaSet>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(replicaset = %rs.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testkit::{at, pod_named, replica_set, set_phase, set_ready};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, OwnerReference,
    };

    fn owned(name: &str, rs: &ReplicaSet) -> Pod {
        let mut p = pod_named(name);
        p.metadata.owner_references = Some(vec![controller_reference(rs).expect("ref")]);
        p
    }

    fn now() -> Timestamp {
        at(1000).0
    }

    #[test]
    fn creates_missing_replicas() {
        let rs = replica_set("web", 3);
        let pods = [owned("a", &rs)];
        let p = plan(&rs, &pods, now()).expect("plan");
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty() && p.adopt.is_empty() && p.release.is_empty());
        assert_eq!(p.status.replicas, 1);
    }

    #[test]
    fn finished_and_terminating_pods_do_not_count() {
        let rs = replica_set("web", 2);
        let mut done = owned("done", &rs);
        set_phase(&mut done, "Succeeded");
        let mut failed = owned("failed", &rs);
        set_phase(&mut failed, "Failed");
        let mut going = owned("going", &rs);
        going.metadata.deletion_timestamp = Some(at(1));
        let p = plan(&rs, &[done, failed, going, owned("ok", &rs)], now()).expect("plan");
        assert_eq!(p.create, 1);
        assert_eq!(p.status.replicas, 1);
    }

    #[test]
    fn scale_down_deletes_in_active_pods_order() {
        let rs = replica_set("web", 2);
        let mut running_ready_old = owned("ready-old", &rs);
        set_ready(&mut running_ready_old, 10);
        let mut running_ready_new = owned("ready-new", &rs);
        set_ready(&mut running_ready_new, 20);
        let mut running_not_ready = owned("running", &rs);
        running_not_ready.spec.get_or_insert_default().node_name = Some("n1".into());
        set_phase(&mut running_not_ready, "Running");
        let mut pending_bound = owned("pending", &rs);
        pending_bound.spec.get_or_insert_default().node_name = Some("n1".into());
        set_phase(&mut pending_bound, "Pending");
        let unscheduled = owned("unscheduled", &rs);
        let pods = [
            running_ready_old,
            running_ready_new,
            running_not_ready,
            pending_bound,
            unscheduled,
        ];
        let p = plan(&replica_set("web", 2), &pods, now()).expect("plan");
        assert_eq!(p.delete, ["unscheduled", "pending", "running"]);
        assert_eq!(p.create, 0);
        let p = plan(&replica_set("web", 1), &pods, now()).expect("plan");
        assert_eq!(p.delete, ["unscheduled", "pending", "running", "ready-new"]);
    }

    #[test]
    fn adopts_matching_orphans_and_ignores_pods_of_other_controllers() {
        let rs = replica_set("web", 2);
        let orphan = pod_named("orphan");
        let mut theirs = pod_named("theirs");
        theirs.metadata.owner_references = Some(vec![OwnerReference {
            uid: "other".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        let mut unrelated = pod_named("unrelated");
        unrelated.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
        let mut other_ns = pod_named("elsewhere");
        other_ns.metadata.namespace = Some("other".into());
        let mut deleting_orphan = pod_named("deleting");
        deleting_orphan.metadata.deletion_timestamp = Some(at(1));
        let p = plan(
            &rs,
            &[orphan, theirs, unrelated, other_ns, deleting_orphan],
            now(),
        )
        .expect("plan");
        assert_eq!(p.adopt, ["orphan"]);
        assert_eq!(p.create, 1, "the adopted orphan counts as a replica");
        assert_eq!(p.status.replicas, 1);
    }

    #[test]
    fn releases_owned_pods_that_stop_matching() {
        let rs = replica_set("web", 1);
        let mut relabeled = owned("relabeled", &rs);
        relabeled.metadata.labels = Some([("app".to_owned(), "debug".to_owned())].into());
        let p = plan(&rs, &[relabeled], now()).expect("plan");
        assert_eq!(p.release, ["relabeled"]);
        assert_eq!(p.create, 1, "released pod is no longer a replica");
    }

    #[test]
    fn match_expressions_select_too() {
        let mut rs = replica_set("web", 1);
        rs.spec.selector.match_labels = None;
        rs.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "In".into(),
            values: Some(vec!["web".into(), "www".into()]),
        }]);
        let mut www = pod_named("www");
        www.metadata.labels = Some([("app".to_owned(), "www".to_owned())].into());
        let p = plan(&rs, &[www], now()).expect("plan");
        assert_eq!(p.adopt, ["www"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn deleting_replica_set_neither_adopts_nor_scales() {
        let mut rs = replica_set("web", 3);
        rs.metadata.deletion_timestamp = Some(at(1));
        let p = plan(&rs, &[pod_named("orphan")], now()).expect("plan");
        assert_eq!((p.create, p.adopt.len(), p.delete.len()), (0, 0, 0));
    }

    #[test]
    fn empty_selector_and_missing_uid_are_errors() {
        let mut rs = replica_set("web", 1);
        rs.spec.selector = Default::default();
        assert_eq!(plan(&rs, &[], now()), Err(PlanError::EmptySelector));
        let mut rs = replica_set("web", 1);
        rs.metadata.uid = None;
        assert_eq!(plan(&rs, &[], now()), Err(PlanError::NoUid));
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let mut rs = replica_set("web", 4);
        rs.spec.min_ready_seconds = Some(30);
        rs.metadata.generation = Some(7);
        if let Some(m) = rs.spec.template.as_mut().and_then(|t| t.metadata.as_mut()) {
            m.labels
                .get_or_insert_default()
                .insert("tier".into(), "fe".into());
        }
        let mut long_ready = owned("long", &rs);
        set_ready(&mut long_ready, 900);
        long_ready
            .metadata
            .labels
            .get_or_insert_default()
            .insert("tier".into(), "fe".into());
        let mut just_ready = owned("just", &rs);
        set_ready(&mut just_ready, 990);
        let not_ready = owned("not", &rs);
        let p = plan(&rs, &[long_ready, just_ready, not_ready], now()).expect("plan");
        let s = &p.status;
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(
            s.available_replicas,
            Some(1),
            "just_ready is ready for 10 s < 30 s"
        );
        assert_eq!(s.fully_labeled_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(p.recheck_at, Some(at(1020).0));
        assert_eq!(p.create, 1);
    }

    #[test]
    fn burst_limit() {
        let rs = replica_set("web", 2000);
        assert_eq!(plan(&rs, &[], now()).expect("plan").create, BURST_REPLICAS);
    }

    #[test]
    fn orphan_events_map_to_matching_replica_sets() {
        let web = Arc::new(replica_set("web", 1));
        let mut db = replica_set("db", 1);
        db.spec.selector.match_labels = Some([("app".to_owned(), "db".to_owned())].into());
        let db = Arc::new(db);
        let all = [web.clone(), db];
        let refs = replica_sets_for_pod(&pod_named("orphan"), &all);
        assert_eq!(refs, vec![ObjectRef::from_obj(&*web)]);
        // Owned pods map to their owner only.
        let owned_pod = owned("x", &web);
        assert_eq!(
            replica_sets_for_pod(&owned_pod, &all),
            vec![ObjectRef::new("web").within("default")]
        );
    }

    #[test]
    fn status_equality_ignores_absent_zeroes() {
        let a = ReplicaSetStatus {
            replicas: 0,
            ready_replicas: None,
            ..Default::default()
        };
        let b = ReplicaSetStatus {
            replicas: 0,
            ready_replicas: Some(0),
            conditions: Some(vec![]),
            ..Default::default()
        };
        assert!(same_status(&a, &b));
        let c = ReplicaSetStatus {
            ready_replicas: Some(1),
            ..Default::default()
        };
        assert!(!same_status(&a, &c));
    }

    #[test]
    fn replica_failure_condition_set_and_cleared() {
        let t = now();
        let set = replica_failure(vec![], Some("quota"), t);
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].reason.as_deref(), Some("FailedCreate"));
        assert!(replica_failure(set, None, t).is_empty());
    }
}
