//! The Job controller (batch/v1, `NonIndexed` completion mode), after
//! Kubernetes' job controller: run pods until `completions` succeed, at
//! most `parallelism` at a time; fail the Job after more than
//! `backoffLimit` failed pods or past `activeDeadlineSeconds`; recreate
//! failed pods after an exponential back-off (10 s, 20 s, ... capped at
//! 6 min); `suspend` stops every pod. Status: `active`, `ready`,
//! `succeeded`, `failed`, `terminating`, `startTime`, `completionTime`,
//! and the `Complete` / `Failed` / `Suspended` conditions.
//!
//! Not done: `Indexed` completion mode, `podFailurePolicy`,
//! `successPolicy`, `backoffLimitPerIndex`, `ttlSecondsAfterFinished`,
//! and the pod finalizers Kubernetes uses to count pods that are removed
//! before they were seen finished (here counts never go down: the status
//! is a floor).
//!
//! [`plan`] is pure; [`run`] drives it with kube-runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::expectations::Expectations;
use super::owner::{controller_of, controller_reference, with_owner};
use super::podstate::{deletion_order, is_active, is_ready};
use super::template::{generate_name_prefix, pod_from_template};
use super::{SYNC_RETRY, cache_synced, runtime};
use crate::selector::{Selector, SelectorError};

/// First retry delay after a failed pod (Kubernetes' `DefaultJobPodFailureBackOff`).
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest retry delay (Kubernetes' `MaxJobPodFailureBackOff`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Why a Job cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The Job has no spec.
    #[error("job has no spec")]
    NoSpec,
    /// `spec.selector` does not parse.
    #[error("invalid selector")]
    Selector(#[from] SelectorError),
    /// The object has no uid.
    #[error("object has no uid")]
    NoUid,
    /// `completionMode: Indexed` is not implemented.
    #[error("completion mode {0:?} is not supported")]
    UnsupportedCompletionMode(String),
}

/// What the controller should do for one Job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPlan {
    /// Pods to create.
    pub create: usize,
    /// Names of active pods to delete (job finished, suspended or over
    /// parallelism).
    pub delete: Vec<String>,
    /// Orphan pods to adopt (names).
    pub adopt: Vec<String>,
    /// The status to write.
    pub status: JobStatus,
    /// When to look again without an event (back-off, deadline).
    pub recheck_at: Option<Timestamp>,
}

fn condition_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {}
        Some(c) => {
            c.status = status.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            c.last_transition_time = Some(Time(now));
            c.last_probe_time = Some(Time(now));
        }
        None => conditions.push(JobCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_transition_time: Some(Time(now)),
            last_probe_time: Some(Time(now)),
        }),
    }
}

/// When a failed pod finished: its containers' latest `finishedAt`, else
/// its creation time.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max();
    finished.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The delay before replacing a pod after `failures` failures:
/// 10 s · 2^(failures-1), at most 6 minutes; none before the first.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// Plans one Job against its namespace's pods at `now`.
///
/// # Errors
/// [`PlanError`] for a malformed or unsupported Job.
#[expect(
    clippy::too_many_lines,
    reason = "the job sync steps read best in one place"
)]
pub fn plan<'a>(
    job: &Job,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
) -> Result<JobPlan, PlanError> {
    let spec = job.spec.as_ref().ok_or(PlanError::NoSpec)?;
    let uid = job.metadata.uid.as_deref().ok_or(PlanError::NoUid)?;
    if let Some(mode) = spec
        .completion_mode
        .as_deref()
        .filter(|m| *m != "NonIndexed")
    {
        return Err(PlanError::UnsupportedCompletionMode(mode.to_owned()));
    }
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    // An absent selector (not generated) selects by ownership only.
    let selector = spec
        .selector
        .as_ref()
        .map(Selector::from_label_selector)
        .transpose()?;
    let old = job.status.clone().unwrap_or_default();
    let mut out = JobPlan::default();

    let mut mine: Vec<&Pod> = Vec::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref().unwrap_or_default() != namespace {
            continue;
        }
        let matches = selector
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.matches_opt(pod.metadata.labels.as_ref()));
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => mine.push(pod),
            None if matches && pod.metadata.deletion_timestamp.is_none() => {
                out.adopt
                    .push(pod.metadata.name.clone().unwrap_or_default());
                mine.push(pod);
            }
            _ => {}
        }
    }
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let mut active: Vec<&Pod> = mine.iter().copied().filter(|p| is_active(p)).collect();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let succeeded = count(mine.iter().filter(|p| phase(p) == "Succeeded").count())
        .max(old.succeeded.unwrap_or(0));
    let failed_pods: Vec<&&Pod> = mine.iter().filter(|p| phase(p) == "Failed").collect();
    let failed = count(failed_pods.len()).max(old.failed.unwrap_or(0));
    let terminating = count(
        mine.iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(phase(p).as_str(), "Succeeded" | "Failed")
            })
            .count(),
    );

    let mut conditions = old.conditions.clone().unwrap_or_default();
    let finished = condition_true(&old, "Complete") || condition_true(&old, "Failed");
    let suspended = spec.suspend.unwrap_or(false);
    let start_time = old
        .start_time
        .clone()
        .or_else(|| (!suspended).then_some(Time(now)));
    let mut completion_time = old.completion_time.clone();
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);

    let mut stop_all = finished;
    if !finished {
        let deadline = spec
            .active_deadline_seconds
            .zip(start_time.as_ref())
            .map(|(secs, start)| start.0 + SignedDuration::from_secs(secs));
        let complete = match spec.completions {
            Some(c) => succeeded >= c,
            // Work queue: done once one pod succeeded and none runs.
            None => succeeded >= 1 && active.is_empty(),
        };
        if complete {
            set_condition(
                &mut conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
            completion_time = Some(Time(now));
            stop_all = true;
        } else if failed > spec.backoff_limit.unwrap_or(6) {
            set_condition(
                &mut conditions,
                "Failed",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            );
            stop_all = true;
        } else if deadline.is_some_and(|d| d <= now) && !suspended {
            set_condition(
                &mut conditions,
                "Failed",
                "True",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                now,
            );
            stop_all = true;
        } else if let Some(d) = deadline.filter(|_| !suspended) {
            out.recheck_at = Some(d);
        }
    }

    active.sort_by(|a, b| deletion_order(a, b));
    if stop_all || suspended {
        out.delete = active
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        if suspended && !finished {
            set_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
        }
    } else {
        if conditions
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True")
        {
            set_condition(
                &mut conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
        }
        let remaining = match spec.completions {
            Some(c) => usize::try_from((c - succeeded).max(0)).unwrap_or(0),
            // Work queue: no new pods once one succeeded.
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let want = parallelism.min(remaining);
        if active.len() > want {
            out.delete = active[..active.len() - want]
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
        } else if active.len() < want {
            let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
            let wait_until = last_failure.map(|t| {
                t + SignedDuration::try_from(backoff(failed)).unwrap_or(SignedDuration::MAX)
            });
            match wait_until.filter(|t| *t > now) {
                Some(t) => out.recheck_at = Some(out.recheck_at.map_or(t, |r| r.min(t))),
                None => out.create = want - active.len(),
            }
        }
    }
    out.status = JobStatus {
        active: Some(count(active.len())),
        ready: Some(count(active.iter().filter(|p| is_ready(p)).count())),
        succeeded: Some(succeeded),
        failed: Some(failed),
        terminating: Some(terminating),
        start_time,
        completion_time,
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..Default::default()
    };
    Ok(out)
}

// --------------------------------------------------------------- runner

/// Errors of the Job controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list at start.
    #[error("job controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An API write failed.
    #[error("{action} for job {namespace}/{name}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Job name.
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

/// Runs the Job controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when Jobs or Pods cannot be listed at start.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let one = ListParams::default().limit(1);
    Api::<Job>::all(client.clone())
        .list(&one)
        .await
        .map_err(|source| Error::Preflight {
            resource: "jobs",
            source,
        })?;
    Api::<Pod>::all(client.clone())
        .list(&one)
        .await
        .map_err(|source| Error::Preflight {
            resource: "pods",
            source,
        })?;
    let (pod_reader, pods) = runtime::cache::<Pod>(&client);
    let context = Arc::new(Context {
        client: client.clone(),
        pods: pod_reader,
        expectations: Expectations::new(),
    });
    let results = Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .watches_stream(pods, |pod: Pod| runtime::controlling::<Job>(&pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context);
    runtime::drive("job", results).await;
    Ok(())
}

/// Reconciles one Job.
///
/// # Errors
/// API failures (retried). Plan errors are
/// logged and wait for a change.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !cache_synced(&ctx.pods) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
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
    let now = Timestamp::now();
    let plan = match plan(&job, pods.iter().map(|p| &**p), now) {
        Ok(p) => p,
        Err(error) => {
            warn!(%namespace, job = %name, error = %error, "cannot plan job; waiting for a change");
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
    let by_name: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, &**p)))
        .collect();
    if let Some(reference) = controller_reference(&*job) {
        for pod_name in &plan.adopt {
            let Some(pod) = by_name.get(pod_name.as_str()) else {
                continue;
            };
            let patch = serde_json::json!({"metadata": {"resourceVersion": pod.metadata.resource_version, "ownerReferences": with_owner(&pod.metadata, reference.clone())}});
            match api
                .patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(source) => return Err(err("adopting pod")(source)),
            }
        }
        if plan.create > 0 {
            let pod = pod_from_template(
                &job.spec
                    .as_ref()
                    .map(|s| s.template.clone())
                    .unwrap_or_default(),
                &namespace,
                &generate_name_prefix(&name),
                reference,
            );
            let post = PostParams::default();
            let results = future::join_all((0..plan.create).map(|_| api.create(&post, &pod))).await;
            let created: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().map(ResourceExt::name_any))
                .collect();
            info!(%namespace, job = %name, count = created.len(), "created pods");
            ctx.expectations.expect(&uid, created, [], Instant::now());
            if let Some(Err(source)) = results.into_iter().find(Result::is_err) {
                return Err(err("creating pod")(source));
            }
        }
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
        match api.delete(pod_name, &dp).await {
            Ok(_) => {
                if let Some(u) = pod.metadata.uid.clone() {
                    ctx.expectations.expect(&uid, [], [u], Instant::now());
                }
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(source) => return Err(err("deleting pod")(source)),
        }
    }
    if job.status.as_ref() != Some(&plan.status) {
        let patch = serde_json::json!({ "status": plan.status });
        runtime::ignore_not_found(
            Api::<Job>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(err("updating status"))?;
    }
    Ok(runtime::requeue_at(plan.recheck_at, now))
}

fn error_policy(job: Arc<Job>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(job = %job.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testkit::{at, pod_named, set_phase, set_ready, template, web_labels};
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn job(completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("uid-job".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(2),
                selector: Some(LabelSelector {
                    match_labels: Some(web_labels()),
                    ..Default::default()
                }),
                template: template(web_labels(), "pi:1"),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn owned(name: &str, job: &Job) -> Pod {
        let mut p = pod_named(name);
        p.metadata.owner_references = Some(vec![controller_reference(job).expect("ref")]);
        p
    }

    fn failed_at(name: &str, job: &Job, secs: i64) -> Pod {
        let mut p = owned(name, job);
        set_phase(&mut p, "Failed");
        p.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
            name: "c".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    finished_at: Some(at(secs)),
                    exit_code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        p
    }

    fn cond<'a>(p: &'a JobPlan, type_: &str) -> Option<&'a JobCondition> {
        p.status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
    }

    #[test]
    fn starts_parallelism_pods_capped_by_remaining_completions() {
        let j = job(Some(5), 2);
        let p = plan(&j, &[], at(100).0).expect("plan");
        assert_eq!(p.create, 2);
        assert_eq!(p.status.start_time, Some(at(100)));
        let mut done: Vec<Pod> = (0..4).map(|i| owned(&format!("d{i}"), &j)).collect();
        for d in &mut done {
            set_phase(d, "Succeeded");
        }
        let p = plan(&j, &done, at(100).0).expect("plan");
        assert_eq!(p.create, 1, "one completion left");
        assert_eq!(p.status.succeeded, Some(4));
    }

    #[test]
    fn completes_when_enough_pods_succeeded() {
        let j = job(Some(2), 2);
        let mut a = owned("a", &j);
        set_phase(&mut a, "Succeeded");
        let mut b = owned("b", &j);
        set_phase(&mut b, "Succeeded");
        let p = plan(&j, &[a, b], at(50).0).expect("plan");
        assert_eq!(
            cond(&p, "Complete").map(|c| c.status.as_str()),
            Some("True")
        );
        assert_eq!(p.status.completion_time, Some(at(50)));
        assert_eq!(p.create, 0);
        // A finished job does nothing more.
        let mut finished = j.clone();
        finished.status = Some(p.status.clone());
        let again = plan(&finished, &[], at(60).0).expect("plan");
        assert_eq!(again.create, 0);
        assert_eq!(again.status.succeeded, Some(2), "counts never go down");
        assert_eq!(again.status.completion_time, Some(at(50)));
    }

    #[test]
    fn work_queue_job_completes_when_one_succeeded_and_none_runs() {
        let j = job(None, 3);
        assert_eq!(plan(&j, &[], at(0).0).expect("plan").create, 3);
        let mut ok = owned("ok", &j);
        set_phase(&mut ok, "Succeeded");
        let running = owned("running", &j);
        let p = plan(&j, &[ok.clone(), running], at(0).0).expect("plan");
        assert_eq!(p.create, 0, "no new pods after a success");
        assert!(cond(&p, "Complete").is_none(), "one still running");
        let p = plan(&j, &[ok], at(0).0).expect("plan");
        assert!(cond(&p, "Complete").is_some());
    }

    #[test]
    fn failures_back_off_exponentially_then_exceed_the_limit() {
        let j = job(Some(1), 1);
        let one = [failed_at("f1", &j, 100)];
        let p = plan(&j, &one, at(105).0).expect("plan");
        assert_eq!(p.create, 0, "within 10 s back-off");
        assert_eq!(p.recheck_at, Some(at(110).0));
        assert_eq!(plan(&j, &one, at(110).0).expect("plan").create, 1);
        let two = [failed_at("f1", &j, 100), failed_at("f2", &j, 120)];
        let p = plan(&j, &two, at(135).0).expect("plan");
        assert_eq!(
            (p.create, p.recheck_at),
            (0, Some(at(140).0)),
            "20 s after the second failure"
        );
        let three = [
            failed_at("f1", &j, 100),
            failed_at("f2", &j, 120),
            failed_at("f3", &j, 150),
        ];
        let p = plan(&j, &three, at(500).0).expect("plan");
        let failed = cond(&p, "Failed").expect("failed");
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(p.create, 0);
        assert_eq!(p.status.failed, Some(3));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn deadline_fails_the_job_and_stops_pods() {
        let mut j = job(Some(1), 1);
        if let Some(s) = j.spec.as_mut() {
            s.active_deadline_seconds = Some(30);
        }
        j.status = Some(JobStatus {
            start_time: Some(at(100)),
            ..Default::default()
        });
        let pods = [owned("slow", &j)];
        let p = plan(&j, &pods, at(120).0).expect("plan");
        assert_eq!(p.recheck_at, Some(at(130).0));
        assert!(p.delete.is_empty());
        let p = plan(&j, &pods, at(130).0).expect("plan");
        assert_eq!(
            cond(&p, "Failed").and_then(|c| c.reason.as_deref()),
            Some("DeadlineExceeded")
        );
        assert_eq!(p.delete, ["slow"]);
    }

    #[test]
    fn suspend_deletes_active_pods_and_resume_restarts() {
        let mut j = job(Some(3), 2);
        if let Some(s) = j.spec.as_mut() {
            s.suspend = Some(true);
        }
        let pods = [owned("a", &j), owned("b", &j)];
        let p = plan(&j, &pods, at(0).0).expect("plan");
        assert_eq!(p.delete.len(), 2);
        assert_eq!(p.create, 0);
        assert_eq!(p.status.start_time, None, "a suspended job has not started");
        assert_eq!(
            cond(&p, "Suspended").map(|c| c.status.as_str()),
            Some("True")
        );
        let mut resumed = j.clone();
        resumed.status = Some(p.status);
        if let Some(s) = resumed.spec.as_mut() {
            s.suspend = Some(false);
        }
        let p = plan(&resumed, &[], at(10).0).expect("plan");
        assert_eq!(p.create, 2);
        assert_eq!(
            cond(&p, "Suspended").map(|c| c.status.as_str()),
            Some("False")
        );
    }

    #[test]
    fn counts_ready_and_terminating_and_adopts_matching_orphans() {
        let j = job(Some(4), 4);
        let mut ready = owned("ready", &j);
        set_ready(&mut ready, 1);
        let mut going = owned("going", &j);
        going.metadata.deletion_timestamp = Some(at(1));
        let orphan = pod_named("orphan");
        let p = plan(&j, &[ready, going, orphan], at(2).0).expect("plan");
        assert_eq!(p.adopt, ["orphan"]);
        assert_eq!(p.status.active, Some(2));
        assert_eq!(p.status.ready, Some(1));
        assert_eq!(p.status.terminating, Some(1));
        assert_eq!(p.create, 2, "terminating pods are replaced");
    }

    #[test]
    fn indexed_jobs_are_refused() {
        let mut j = job(Some(2), 1);
        if let Some(s) = j.spec.as_mut() {
            s.completion_mode = Some("Indexed".into());
        }
        assert_eq!(
            plan(&j, &[], at(0).0),
            Err(PlanError::UnsupportedCompletionMode("Indexed".into()))
        );
    }
}
