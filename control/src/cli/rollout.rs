//! `skiff rollout status | undo | history`, after kubectl.
//!
//! The decisions are pure and tested here: [`deployment_status`] and
//! [`daemon_set_status`] mirror kubectl's `DeploymentStatusViewer` and
//! `DaemonSetStatusViewer` (same messages, same order of checks);
//! [`plan_rollback`] mirrors kubectl's `DeploymentRollbacker` (which
//! ReplicaSet is "the previous revision", what is copied back). The async
//! functions only read, watch and patch.
//!
//! Rollback needs nothing from the Deployment controller beyond its usual
//! work: putting an old template back into `spec.template` makes that
//! template's ReplicaSet the new one again (see
//! [`crate::controllers::deployment`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;
use tracing::debug;

use super::resolve::expand_short_name;
use super::table::Table;
use super::{CliError, kind_and_names};
use crate::controllers::deployment::{
    REVISION_ANNOTATION, revision_of, templates_equal, without_hash,
};
use crate::controllers::owner::is_controlled_by;

/// The annotation kubectl's `rollout history` shows as CHANGE-CAUSE.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// Deployment annotations a rollback neither copies from the ReplicaSet
/// nor drops (kubectl's `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

fn enc(e: impl std::fmt::Display) -> CliError {
    CliError::Output(e.to_string())
}

// ------------------------------------------------------------ durations

/// Parses a Go duration (`time.ParseDuration`, which kubectl's `--timeout`
/// takes): `0`, `30s`, `5m`, `1h30m`, `1.5h`, `300ms` (pure).
///
/// # Errors
/// [`CliError::Usage`] for anything else, including negative durations.
pub fn parse_go_duration(input: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "invalid duration {input:?} (examples: 30s, 5m, 1h30m, 0 for no limit)"
        ))
    };
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(end);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        seconds += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// A duration as Go prints it: `500ms`, `2s`, `1.5s`, `5m0s`, `1h30m0s`
/// (pure).
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        return if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}µs", d.as_micros())
        };
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let nanos = d.subsec_nanos();
    let secs = if nanos == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

// ------------------------------------------------------------- workloads

/// The kinds `rollout` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    DaemonSet,
}

impl Workload {
    /// The workload a typed kind stands for (`deploy`, `deployments`,
    /// `Deployment`, `deployments.apps`, `ds`, ...), if `rollout` knows it.
    pub fn parse(kind: &str) -> Option<Self> {
        let plural = expand_short_name(kind);
        match plural.strip_suffix(".apps").unwrap_or(&plural) {
            "deployments" | "deployment" => Some(Self::Deployment),
            "daemonsets" | "daemonset" => Some(Self::DaemonSet),
            _ => None,
        }
    }

    /// kubectl's word for it in messages.
    fn label(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::DaemonSet => "daemon set",
        }
    }

    /// `deployment.apps/web`.
    pub fn object_ref(self, name: &str) -> String {
        match self {
            Self::Deployment => format!("deployment.apps/{name}"),
            Self::DaemonSet => format!("daemonset.apps/{name}"),
        }
    }
}

/// The one workload a `rollout` subcommand acts on.
fn single_target(resources: &[String], verb: &str) -> Result<(Workload, String), CliError> {
    let targets = kind_and_names(resources)?;
    let [(kind, name)] = targets.as_slice() else {
        return Err(CliError::Usage(format!(
            "rollout {verb} takes exactly one resource, e.g. deploy/NAME"
        )));
    };
    let workload = Workload::parse(kind).ok_or_else(|| {
        CliError::Usage(format!(
            "rollout {verb} is not implemented for {kind:?} (deployments, daemonsets)"
        ))
    })?;
    Ok((workload, name.clone()))
}

// ----------------------------------------------------------- status (pure)

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Not finished. `message` is kubectl's line; `detail` its last part
    /// (`2 of 3 updated replicas are available`), for timeout errors.
    Waiting { message: String, detail: String },
    /// Finished: `deployment "web" successfully rolled out`.
    Done { message: String },
}

impl RolloutState {
    /// The line to print.
    pub fn message(&self) -> &str {
        match self {
            Self::Waiting { message, .. } | Self::Done { message } => message,
        }
    }

    fn waiting(workload: Workload, name: &str, detail: String) -> Self {
        Self::Waiting {
            message: format!(
                "Waiting for {} \"{name}\" rollout to finish: {detail}...",
                workload.label()
            ),
            detail,
        }
    }

    fn spec_not_observed(workload: Workload) -> Self {
        Self::Waiting {
            message: format!(
                "Waiting for {} spec update to be observed...",
                workload.label()
            ),
            detail: "the controller has not observed the latest spec yet".into(),
        }
    }

    fn done(workload: Workload, name: &str) -> Self {
        Self::Done {
            message: format!("{} \"{name}\" successfully rolled out", workload.label()),
        }
    }
}

/// kubectl's `DeploymentStatusViewer`: the rollout state of `d`, checked
/// against `revision` when given.
///
/// # Errors
/// [`CliError::RevisionMismatch`] when `revision` is not the running one;
/// [`CliError::ProgressDeadlineExceeded`] when the controller gave up.
pub fn deployment_status(d: &Deployment, revision: Option<i64>) -> Result<RolloutState, CliError> {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    if let Some(desired) = revision.filter(|r| *r > 0) {
        let running = revision_of(&d.metadata);
        if running != desired {
            return Err(CliError::RevisionMismatch { desired, running });
        }
    }
    let status = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok(RolloutState::spec_not_observed(Workload::Deployment));
    }
    let timed_out = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        return Err(CliError::ProgressDeadlineExceeded(name.to_owned()));
    }
    let n = |v: Option<i32>| v.unwrap_or(0);
    let updated = n(status.updated_replicas);
    let (replicas, available) = (n(status.replicas), n(status.available_replicas));
    let w = Workload::Deployment;
    Ok(match d.spec.replicas {
        Some(desired) if updated < desired => RolloutState::waiting(
            w,
            name,
            format!("{updated} out of {desired} new replicas have been updated"),
        ),
        _ if replicas > updated => RolloutState::waiting(
            w,
            name,
            format!(
                "{} old replicas are pending termination",
                replicas - updated
            ),
        ),
        _ if available < updated => RolloutState::waiting(
            w,
            name,
            format!("{available} of {updated} updated replicas are available"),
        ),
        _ => RolloutState::done(w, name),
    })
}

/// kubectl's `DaemonSetStatusViewer`.
///
/// # Errors
/// [`CliError::Usage`] for an `OnDelete` DaemonSet (it never rolls by
/// itself).
pub fn daemon_set_status(ds: &DaemonSet) -> Result<RolloutState, CliError> {
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let strategy = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return Err(CliError::Usage(
            "rollout status is only available for RollingUpdate strategy type".into(),
        ));
    }
    let status = ds.status.clone().unwrap_or_default();
    if ds.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok(RolloutState::spec_not_observed(Workload::DaemonSet));
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    let w = Workload::DaemonSet;
    Ok(if updated < desired {
        RolloutState::waiting(
            w,
            name,
            format!("{updated} out of {desired} new pods have been updated"),
        )
    } else if available < desired {
        RolloutState::waiting(
            w,
            name,
            format!("{available} of {desired} updated pods are available"),
        )
    } else {
        RolloutState::done(w, name)
    })
}

// ---------------------------------------------------------- status (async)

/// Options of `skiff rollout status`.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// `deploy/NAME` or `deploy NAME`.
    pub resources: Vec<String>,
    pub namespace: Option<String>,
    /// Keep watching until done (`--watch=false` prints once).
    pub watch: bool,
    /// Give up after this long (`None`: wait forever, like kubectl's `0`).
    pub timeout: Option<Duration>,
    /// Expect this revision to be the one rolling (`--revision`).
    pub revision: Option<i64>,
}

impl Default for StatusOptions {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            namespace: None,
            watch: true,
            timeout: None,
            revision: None,
        }
    }
}

/// Prints the rollout's progress (each new message once) until it is done,
/// watching the object.
///
/// # Errors
/// [`CliError::Timeout`] after `timeout`; the errors of
/// [`deployment_status`] / [`daemon_set_status`]; [`CliError::Deleted`];
/// API errors (404 for a missing object).
pub async fn status(
    client: kube::Client,
    opts: &StatusOptions,
    out: &mut impl Write,
) -> Result<RolloutState, CliError> {
    let (workload, name) = single_target(&opts.resources, "status")?;
    let ns = opts.namespace.as_deref().unwrap_or("default");
    let revision = opts.revision;
    match workload {
        Workload::Deployment => {
            let api = Api::<Deployment>::namespaced(client, ns);
            wait(api, workload, &name, opts, out, |d| {
                deployment_status(d, revision)
            })
            .await
        }
        Workload::DaemonSet => {
            let api = Api::<DaemonSet>::namespaced(client, ns);
            wait(api, workload, &name, opts, out, daemon_set_status).await
        }
    }
}

/// Watches one object until `decide` says done (or once, without
/// `opts.watch`), printing each new message.
async fn wait<K>(
    api: Api<K>,
    workload: Workload,
    name: &str,
    opts: &StatusOptions,
    out: &mut impl Write,
    decide: impl Fn(&K) -> Result<RolloutState, CliError>,
) -> Result<RolloutState, CliError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let deadline = opts
        .timeout
        .filter(|t| !t.is_zero())
        .map(|t| Instant::now() + t);
    let what = format!("{} \"{name}\"", workload.label());
    let mut last: Option<RolloutState> = None;
    let timed_out = |last: &Option<RolloutState>| CliError::Timeout {
        after: format_go_duration(opts.timeout.unwrap_or_default()),
        what: what.clone(),
        last: match last {
            Some(RolloutState::Waiting { detail, .. }) => detail.clone(),
            Some(RolloutState::Done { message }) => message.clone(),
            None => "nothing read yet".into(),
        },
    };
    // One step: decide, print the message if it differs from the last one.
    let mut step = |obj: &K, last: &mut Option<RolloutState>| -> Result<RolloutState, CliError> {
        let state = decide(obj)?;
        if last.as_ref().map(RolloutState::message) != Some(state.message()) {
            writeln!(out, "{}", state.message()).map_err(enc)?;
            out.flush().map_err(enc)?;
        }
        *last = Some(state.clone());
        Ok(state)
    };
    let is_done = |state: &RolloutState| matches!(state, RolloutState::Done { .. });

    let first = match deadline {
        Some(at) => tokio::time::timeout_at(at, api.get(name))
            .await
            .map_err(|_| timed_out(&last))??,
        None => api.get(name).await?,
    };
    let state = step(&first, &mut last)?;
    if is_done(&state) || !opts.watch {
        return Ok(state);
    }

    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher::watcher(api, config).default_backoff();
    let mut events = std::pin::pin!(events);
    // During a (re)list: whether the object was among the listed ones.
    let mut listed = false;
    loop {
        let next = match deadline {
            Some(at) => tokio::time::timeout_at(at, events.next())
                .await
                .map_err(|_| timed_out(&last))?,
            None => events.next().await,
        };
        let event = match next {
            Some(Ok(event)) => event,
            // The watcher retries with backoff; the deadline bounds it.
            Some(Err(error)) => {
                debug!(%error, "rollout status watch error, retrying");
                continue;
            }
            None => return Err(CliError::WatchEnded(what.clone())),
        };
        let obj = match event {
            Event::Init => {
                listed = false;
                continue;
            }
            Event::InitDone if listed => continue,
            Event::InitDone | Event::Delete(_) => {
                return Err(CliError::Deleted(what.clone()));
            }
            Event::InitApply(obj) => {
                listed = true;
                obj
            }
            Event::Apply(obj) => obj,
        };
        let state = step(&obj, &mut last)?;
        if is_done(&state) {
            return Ok(state);
        }
    }
}

// ------------------------------------------------------------ undo (pure)

/// What `rollout undo` will do.
#[derive(Clone, Debug, PartialEq)]
pub enum RollbackPlan {
    /// The Deployment already runs that revision's template.
    Skip { revision: i64 },
    /// Put `template` (the ReplicaSet's, minus its hash label) and
    /// `annotations` into the Deployment.
    Restore {
        revision: i64,
        template: Box<PodTemplateSpec>,
        /// The Deployment's annotations after the rollback, when they
        /// change.
        annotations: Option<BTreeMap<String, String>>,
    },
}

impl RollbackPlan {
    /// The JSON patch that carries out a [`RollbackPlan::Restore`]
    /// (kubectl's: replace the template, set the annotations).
    ///
    /// # Errors
    /// [`CliError::Output`] if the plan does not encode (it always does).
    pub fn patch(&self) -> Result<Option<json_patch::Patch>, CliError> {
        let Self::Restore {
            template,
            annotations,
            ..
        } = self
        else {
            return Ok(None);
        };
        let mut ops = vec![json!({"op": "replace", "path": "/spec/template", "value": template})];
        if let Some(annotations) = annotations {
            // `add` also replaces, and works when there are none yet.
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": annotations}));
        }
        serde_json::from_value(serde_json::Value::Array(ops))
            .map(Some)
            .map_err(enc)
    }
}

/// The ReplicaSets `d` controls (by uid), oldest revision first (pure).
pub fn owned_replica_sets<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    let mut owned: Vec<&ReplicaSet> = rss
        .iter()
        .filter(|rs| !uid.is_empty() && is_controlled_by(&rs.metadata, uid))
        .collect();
    owned.sort_by_key(|rs| revision_of(&rs.metadata));
    owned
}

/// kubectl's `DeploymentRollbacker`: which revision to go back to
/// (`to_revision`, or with `None`/`Some(0)` the second newest) and what
/// that means for the Deployment (pure).
///
/// The annotations differ from kubectl on purpose: kubectl replaces the
/// Deployment's annotations by the ReplicaSet's (Kubernetes copies a
/// Deployment's annotations onto its ReplicaSets, Skiff's controller does
/// not), which here would drop the user's own; so the ReplicaSet's
/// (e.g. `kubernetes.io/change-cause`) are laid over the Deployment's.
///
/// # Errors
/// [`CliError::Paused`], [`CliError::RevisionNotFound`],
/// [`CliError::NoHistory`].
pub fn plan_rollback(
    d: &Deployment,
    rss: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<RollbackPlan, CliError> {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let spec = &d.spec;
    if spec.paused == Some(true) {
        return Err(CliError::Paused);
    }
    let owned = owned_replica_sets(d, rss);
    let target = match to_revision.filter(|r| *r != 0) {
        Some(wanted) => owned
            .iter()
            .rev()
            .find(|rs| revision_of(&rs.metadata) == wanted)
            .ok_or(CliError::RevisionNotFound(wanted))?,
        None => {
            // Revisions of ReplicaSets with none (0) do not count, like
            // kubectl's parse failure.
            let mut with_revision = owned.iter().filter(|rs| revision_of(&rs.metadata) > 0);
            let newest = with_revision.next_back();
            match (newest, with_revision.next_back()) {
                (Some(_), Some(previous)) => previous,
                _ => return Err(CliError::NoHistory(name.to_owned())),
            }
        }
    };
    let revision = revision_of(&target.metadata);
    let template = target.spec.template.clone().unwrap_or_default();
    if templates_equal(&template, &spec.template) {
        return Ok(RollbackPlan::Skip { revision });
    }
    let current = d.metadata.annotations.clone().unwrap_or_default();
    let mut annotations = current.clone();
    for (k, v) in target.metadata.annotations.iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(RollbackPlan::Restore {
        revision,
        template: Box::new(without_hash(&template)),
        annotations: (annotations != current).then_some(annotations),
    })
}

/// `rollout history`: REVISION and CHANGE-CAUSE of the owned ReplicaSets
/// (pure).
pub fn history_table(d: &Deployment, rss: &[ReplicaSet]) -> Table {
    Table {
        header: vec!["REVISION".into(), "CHANGE-CAUSE".into()],
        rows: owned_replica_sets(d, rss)
            .into_iter()
            .filter(|rs| revision_of(&rs.metadata) > 0)
            .map(|rs| {
                let cause = rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_CAUSE_ANNOTATION))
                    .cloned()
                    .unwrap_or_else(|| "<none>".into());
                vec![revision_of(&rs.metadata).to_string(), cause]
            })
            .collect(),
    }
}

// ----------------------------------------------------------- undo (async)

/// Options of `skiff rollout undo`.
#[derive(Clone, Debug, Default)]
pub struct UndoOptions {
    pub resources: Vec<String>,
    pub namespace: Option<String>,
    /// `--to-revision` (`None` or 0: the previous one).
    pub to_revision: Option<i64>,
}

/// Options of `skiff rollout history`.
#[derive(Clone, Debug, Default)]
pub struct HistoryOptions {
    pub resources: Vec<String>,
    pub namespace: Option<String>,
}

fn deployment_only(workload: Workload, verb: &str) -> Result<(), CliError> {
    match workload {
        Workload::Deployment => Ok(()),
        Workload::DaemonSet => Err(CliError::Usage(format!(
            "rollout {verb} is implemented for deployments only"
        ))),
    }
}

async fn deployment_and_replica_sets(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(Deployment, Vec<ReplicaSet>), CliError> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    Ok((d, rss))
}

/// Rolls the Deployment back to the previous (or the named) revision;
/// prints `deployment.apps/web rolled back`, or `... skipped rollback
/// (current template already matches revision N)`.
///
/// # Errors
/// As [`plan_rollback`]; API errors.
pub async fn undo(
    client: kube::Client,
    opts: &UndoOptions,
    out: &mut impl Write,
) -> Result<RollbackPlan, CliError> {
    let (workload, name) = single_target(&opts.resources, "undo")?;
    deployment_only(workload, "undo")?;
    let ns = opts.namespace.as_deref().unwrap_or("default");
    let (d, rss) = deployment_and_replica_sets(&client, ns, &name).await?;
    let plan = plan_rollback(&d, &rss, opts.to_revision)?;
    let what = workload.object_ref(&name);
    match (&plan, plan.patch()?) {
        (RollbackPlan::Skip { revision }, _) => writeln!(
            out,
            "{what} skipped rollback (current template already matches revision {revision})"
        )
        .map_err(enc)?,
        (RollbackPlan::Restore { .. }, Some(patch)) => {
            Api::<Deployment>::namespaced(client, ns)
                .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await?;
            writeln!(out, "{what} rolled back").map_err(enc)?;
        }
        (RollbackPlan::Restore { .. }, None) => {
            return Err(CliError::Output("rollback plan without a patch".into()));
        }
    }
    Ok(plan)
}

/// Prints the Deployment's revisions.
///
/// # Errors
/// API errors (404 for a missing Deployment).
pub async fn history(
    client: kube::Client,
    opts: &HistoryOptions,
    out: &mut impl Write,
) -> Result<Table, CliError> {
    let (workload, name) = single_target(&opts.resources, "history")?;
    deployment_only(workload, "history")?;
    let ns = opts.namespace.as_deref().unwrap_or("default");
    let (d, rss) = deployment_and_replica_sets(&client, ns, &name).await?;
    let table = history_table(&d, &rss);
    if table.rows.is_empty() {
        writeln!(out, "No rollout history found.").map_err(enc)?;
    } else {
        writeln!(out, "{}", workload.object_ref(&name)).map_err(enc)?;
        write!(out, "{}", table.render()).map_err(enc)?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DaemonSetStatus;
    use serde_json::Value;

    use super::*;
    use crate::controllers::deployment::POD_TEMPLATE_HASH_LABEL;

    #[test]
    fn go_durations_parse_and_print_like_go() {
        let cases = [
            ("0", 0),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("2m0.5s", 120_500),
        ];
        for (input, millis) in cases {
            assert_eq!(
                parse_go_duration(input).expect(input),
                Duration::from_millis(millis),
                "{input}"
            );
        }
        for bad in ["", "5", "-1s", "5x", "m", "1..2s", "s5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn workload_kinds_by_every_name() {
        for k in ["deploy", "deployment", "Deployments", "deployments.apps"] {
            assert_eq!(Workload::parse(k), Some(Workload::Deployment), "{k}");
        }
        for k in ["ds", "daemonset", "daemonsets.apps"] {
            assert_eq!(Workload::parse(k), Some(Workload::DaemonSet), "{k}");
        }
        assert_eq!(Workload::parse("rs"), None);
        assert!(matches!(
            single_target(&["sts/db".into()], "status"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            single_target(&["deploy/a".into(), "deploy/b".into()], "status"),
            Err(CliError::Usage(_))
        ));
        assert_eq!(
            single_target(&["deploy".into(), "web".into()], "status").expect("one"),
            (Workload::Deployment, "web".into())
        );
    }

    fn deploy(generation: i64, replicas: i32, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid",
                         "generation": generation,
                         "annotations": {REVISION_ANNOTATION: "3"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "main", "image": "web:3"}]}}
            },
            "status": status,
        }))
        .expect("deployment")
    }

    fn message(d: &Deployment) -> String {
        deployment_status(d, None)
            .expect("status")
            .message()
            .to_owned()
    }

    #[test]
    fn deployment_status_messages_follow_kubectl_in_order() {
        let d = deploy(2, 3, json!({"observedGeneration": 1}));
        assert_eq!(
            message(&d),
            "Waiting for deployment spec update to be observed..."
        );
        let d = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
        );
        assert_eq!(
            message(&d),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        let d = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            message(&d),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        let d = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        let state = deployment_status(&d, None).expect("status");
        assert_eq!(
            state,
            RolloutState::Waiting {
                message: "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...".into(),
                detail: "2 of 3 updated replicas are available".into(),
            }
        );
        let d = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            deployment_status(&d, None).expect("status"),
            RolloutState::Done {
                message: "deployment \"web\" successfully rolled out".into()
            }
        );
        // Scaled to zero: nothing to wait for.
        let d = deploy(4, 0, json!({"observedGeneration": 4}));
        assert!(matches!(
            deployment_status(&d, None),
            Ok(RolloutState::Done { .. })
        ));
    }

    #[test]
    fn deployment_status_errors_on_deadline_and_wrong_revision() {
        let d = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
                   "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        let err = deployment_status(&d, None).expect_err("deadline");
        assert!(matches!(err, CliError::ProgressDeadlineExceeded(ref n) if n == "web"));
        assert_eq!(
            err.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
        // A deadline only counts once the controller saw the latest spec.
        let mut stale = d.clone();
        stale.metadata.generation = Some(3);
        assert!(deployment_status(&stale, None).is_ok());
        let done = deploy(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert!(matches!(
            deployment_status(&done, Some(2)),
            Err(CliError::RevisionMismatch {
                desired: 2,
                running: 3
            })
        ));
        assert!(deployment_status(&done, Some(3)).is_ok());
    }

    #[test]
    fn daemon_set_status_messages() {
        let ds = |strategy: &str, status: DaemonSetStatus| -> DaemonSet {
            let mut ds: DaemonSet = serde_json::from_value(json!({
                "metadata": {"name": "agent", "generation": 2},
                "spec": {"selector": {}, "template": {}, "updateStrategy": {"type": strategy}},
            }))
            .expect("ds");
            ds.status = Some(status);
            ds
        };
        let st = |desired, updated, available| DaemonSetStatus {
            observed_generation: Some(2),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_available: Some(available),
            ..Default::default()
        };
        let msg = |d: &DaemonSet| daemon_set_status(d).expect("status").message().to_owned();
        assert_eq!(
            msg(&ds("RollingUpdate", st(3, 1, 3))),
            "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated..."
        );
        assert_eq!(
            msg(&ds("RollingUpdate", st(3, 3, 2))),
            "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available..."
        );
        assert_eq!(
            msg(&ds("RollingUpdate", st(3, 3, 3))),
            "daemon set \"agent\" successfully rolled out"
        );
        assert!(matches!(
            daemon_set_status(&ds("OnDelete", st(3, 3, 3))),
            Err(CliError::Usage(_))
        ));
    }

    fn template(image: &str, hash: Option<&str>) -> Value {
        let mut labels = json!({"app": "web"});
        if let Some(h) = hash {
            labels[POD_TEMPLATE_HASH_LABEL] = h.into();
        }
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "main", "image": image}]}})
    }

    fn rs(name: &str, revision: Option<i64>, owner: &str, image: &str) -> ReplicaSet {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = revision {
            annotations.insert(REVISION_ANNOTATION.into(), r.to_string().into());
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "web", "uid": owner, "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": template(image, Some(&format!("h{image}")))},
        }))
        .expect("replica set")
    }

    fn history() -> Vec<ReplicaSet> {
        vec![
            rs("web-3", Some(3), "d-uid", "web:3"),
            rs("web-1", Some(1), "d-uid", "web:1"),
            rs("web-2", Some(2), "d-uid", "web:2"),
            // Not ours, newer revision: ignored.
            rs("other-9", Some(9), "other-uid", "other:9"),
            // Ours without a revision: ignored.
            rs("web-x", None, "d-uid", "web:x"),
        ]
    }

    fn image_of(t: &PodTemplateSpec) -> &str {
        t.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default()
    }

    #[test]
    fn undo_picks_the_previous_revision_without_the_hash_label() {
        let d = deploy(3, 3, json!({}));
        let plan = plan_rollback(&d, &history(), None).expect("plan");
        let RollbackPlan::Restore {
            revision,
            template,
            annotations,
        } = &plan
        else {
            panic!("expected a restore: {plan:?}");
        };
        assert_eq!(*revision, 2);
        assert_eq!(image_of(template), "web:2");
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        assert_eq!(labels, [("app".to_owned(), "web".to_owned())].into());
        assert_eq!(*annotations, None, "nothing to copy from the ReplicaSet");
        let patch =
            serde_json::to_value(plan.patch().expect("encode").expect("patch")).expect("json");
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/spec/template");
        assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "web:2");
        assert_eq!(patch.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn undo_to_a_named_revision_and_its_errors() {
        let d = deploy(3, 3, json!({}));
        let plan = plan_rollback(&d, &history(), Some(1)).expect("plan");
        assert!(
            matches!(&plan, RollbackPlan::Restore { revision: 1, template, .. } if image_of(template) == "web:1")
        );
        // Another Deployment's revision is not in this history.
        let err = plan_rollback(&d, &history(), Some(9)).expect_err("missing");
        assert!(matches!(err, CliError::RevisionNotFound(9)));
        assert_eq!(
            err.to_string(),
            "unable to find specified revision 9 in history"
        );
        // The current template: nothing to do.
        assert_eq!(
            plan_rollback(&d, &history(), Some(3)).expect("plan"),
            RollbackPlan::Skip { revision: 3 }
        );
        // Only one revision: no previous one.
        let only = vec![rs("web-3", Some(3), "d-uid", "web:3")];
        assert!(matches!(
            plan_rollback(&d, &only, None),
            Err(CliError::NoHistory(ref n)) if n == "web"
        ));
        let mut paused = d.clone();
        paused.spec.paused = Some(true);
        assert!(matches!(
            plan_rollback(&paused, &history(), None),
            Err(CliError::Paused)
        ));
    }

    #[test]
    fn undo_lays_the_replica_set_annotations_over_the_deployments() {
        let mut d = deploy(3, 3, json!({}));
        d.metadata.annotations = Some(
            [
                (REVISION_ANNOTATION.to_owned(), "3".to_owned()),
                ("team".to_owned(), "net".to_owned()),
            ]
            .into(),
        );
        let mut rss = history();
        rss[2].metadata.annotations = Some(
            [
                (REVISION_ANNOTATION.to_owned(), "2".to_owned()),
                (CHANGE_CAUSE_ANNOTATION.to_owned(), "image web:2".to_owned()),
            ]
            .into(),
        );
        let plan = plan_rollback(&d, &rss, None).expect("plan");
        let RollbackPlan::Restore { annotations, .. } = &plan else {
            panic!("{plan:?}");
        };
        let want: BTreeMap<String, String> = [
            (REVISION_ANNOTATION.to_owned(), "3".to_owned()),
            ("team".to_owned(), "net".to_owned()),
            (CHANGE_CAUSE_ANNOTATION.to_owned(), "image web:2".to_owned()),
        ]
        .into();
        assert_eq!(annotations.as_ref(), Some(&want));
        let patch =
            serde_json::to_value(plan.patch().expect("encode").expect("patch")).expect("json");
        assert_eq!(patch[1]["path"], "/metadata/annotations");
        assert_eq!(patch[1]["value"]["team"], "net");
    }

    #[test]
    fn history_lists_owned_revisions_in_order() {
        let d = deploy(3, 3, json!({}));
        let mut rss = history();
        rss[1].metadata.annotations = Some(
            [
                (REVISION_ANNOTATION.to_owned(), "1".to_owned()),
                (CHANGE_CAUSE_ANNOTATION.to_owned(), "first".to_owned()),
            ]
            .into(),
        );
        assert_eq!(
            history_table(&d, &rss).render(),
            "REVISION   CHANGE-CAUSE\n1          first\n2          <none>\n3          <none>\n"
        );
    }
}
