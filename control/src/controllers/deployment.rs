//! The Deployment controller, after Kubernetes' `DeploymentController`:
//! one ReplicaSet per pod template (named `<deployment>-<hash>`, labelled
//! `pod-template-hash`), rolled by `RollingUpdate` (`maxSurge` /
//! `maxUnavailable`) or `Recreate`, with revision annotations, history
//! cleanup, `paused`, status and conditions.
//!
//! [`plan`] is the pure core. It differs from Kubernetes in one deliberate
//! way: it sizes each ReplicaSet from its pods as well as its spec — for
//! the surge bound `max(spec, active pods)` (pods not deleted yet still
//! exist) and for availability `min(spec, available pods)` (a scale-down
//! in flight will remove pods; the ReplicaSet controller removes
//! unavailable ones first). Both are the pessimistic side, so a lagging
//! pod cache can never make a step overshoot `replicas + maxSurge` or
//! undershoot `replicas - maxUnavailable`. Kubernetes uses ReplicaSet
//! status counts instead, which lag the same way.
//!
//! Not done: proportional scaling of several active ReplicaSets when
//! `replicas` changes mid-rollout (the rolling logic converges instead);
//! the `revision-history` annotation.
//!
//! Rollback needs no special code: when the template goes back to an
//! older ReplicaSet's template, that ReplicaSet is "the new one" again
//! (same template, same hash) and gets the next revision.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::expectations::Expectations;
use super::owner::{controller_of, controller_reference, with_owner, without_owner};
use super::podstate::{available_at, is_active, is_available, is_ready};
use super::{SYNC_RETRY, cache_synced, runtime};
use crate::selector::{Selector, SelectorError};

/// Revision annotation on Deployments and their ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Label (and selector term) that ties a ReplicaSet and its pods to one
/// pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// `revisionHistoryLimit` when unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// `progressDeadlineSeconds` when unset.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// Why a Deployment cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `spec.selector` does not parse.
    #[error("invalid selector")]
    Selector(#[from] SelectorError),
    /// `spec.selector` is empty.
    #[error("empty selector")]
    EmptySelector,
    /// The object has no uid (was not read from the API).
    #[error("object has no uid")]
    NoUid,
    /// `maxSurge` or `maxUnavailable` is neither an integer nor `N%`.
    #[error("invalid {field}: {value:?}")]
    InvalidIntOrPercent {
        /// Which field.
        field: &'static str,
        /// The value as written.
        value: String,
    },
    /// `maxSurge` and `maxUnavailable` both resolve to 0: no step could
    /// ever be taken.
    #[error("maxSurge and maxUnavailable cannot both be 0")]
    ZeroSurgeAndUnavailable,
}

/// An update of an existing ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsChange {
    /// ReplicaSet name.
    pub name: String,
    /// New `spec.replicas`, if it changes.
    pub replicas: Option<i32>,
    /// New revision annotation, if it changes.
    pub revision: Option<String>,
}

/// What the controller should do for one Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeployPlan {
    /// Orphan ReplicaSets to adopt (names).
    pub adopt: Vec<String>,
    /// Owned ReplicaSets that no longer match, to release (names).
    pub release: Vec<String>,
    /// A ReplicaSet to create for the current template.
    pub create: Option<ReplicaSet>,
    /// Existing ReplicaSets to scale or re-annotate.
    pub update: Vec<RsChange>,
    /// Old, empty ReplicaSets beyond `revisionHistoryLimit` (names).
    pub delete: Vec<String>,
    /// New value of the Deployment's revision annotation, if it changes.
    pub revision: Option<String>,
    /// The status to report.
    pub status: DeploymentStatus,
    /// When to look again without an event (minReadySeconds, progress
    /// deadline).
    pub recheck_at: Option<Timestamp>,
}

// --------------------------------------------------------------- hashing

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no 0/1/3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The `pod-template-hash` of a template: FNV-1a (32 bit) of the
/// template's canonical JSON (fields in schema order, maps sorted),
/// followed by the decimal collision count when set, rendered like
/// Kubernetes (`SafeEncodeString` of the decimal hash, e.g. `"5d4f8b7c9"`).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serialising plain data cannot fail; an empty input still hashes.
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv1a32(&json, 0x811c_9dc5);
    if let Some(count) = collision_count {
        hash = fnv1a32(count.to_string().as_bytes(), hash);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The template without the `pod-template-hash` label (an empty label map
/// becomes absent), for comparing a ReplicaSet's template with the
/// Deployment's (Kubernetes' `EqualIgnoreHash`).
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
        if *meta == ObjectMeta::default() {
            t.metadata = None;
        }
    }
    t
}

/// Whether two templates are equal apart from the hash label.
pub fn templates_equal(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

// ------------------------------------------------------------- numbers

/// Resolves an int-or-percent against `total`; percentages round up
/// (`round_up`, for maxSurge) or down (maxUnavailable), like Kubernetes'
/// `GetScaledValueFromIntOrPercent`.
///
/// # Errors
/// [`PlanError::InvalidIntOrPercent`] for anything but `N` or `"N%"`.
pub fn resolve_int_or_percent(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, PlanError> {
    let invalid = |v: &str| PlanError::InvalidIntOrPercent {
        field,
        value: v.to_owned(),
    };
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            // A plain number in string form is accepted as Kubernetes does.
            if let Ok(n) = s.parse::<i32>() {
                return Ok(n);
            }
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| invalid(s))?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| invalid(s))
        }
    }
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate Deployment (defaults
/// 25% / 25%).
///
/// # Errors
/// An invalid value, or both resolving to 0.
pub fn surge_and_unavailable(d: &Deployment) -> Result<(i32, i32), PlanError> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".to_owned());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&quarter);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let surge = resolve_int_or_percent(surge, replicas, true, "maxSurge")?.max(0);
    let unavailable =
        resolve_int_or_percent(unavailable, replicas, false, "maxUnavailable")?.max(0);
    if surge == 0 && unavailable == 0 {
        return Err(PlanError::ZeroSurgeAndUnavailable);
    }
    Ok((surge, unavailable.min(replicas)))
}

/// The revision annotation of an object (0 when absent or not a number).
pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------ planning

/// One claimed ReplicaSet while planning.
#[derive(Debug, Clone)]
struct Working {
    name: String,
    created: Option<Timestamp>,
    revision: i64,
    original_spec: i32,
    spec: i32,
    /// Active pods (not finished, not terminating).
    pods: i32,
    /// Pods being deleted gracefully: they still run.
    terminating: i32,
    ready: i32,
    available: i32,
}

impl Working {
    /// Pods that exist or will: the surge bound. Terminating pods still
    /// run (until their agent stops them), so they count, as with
    /// Kubernetes' `podReplacementPolicy: TerminationComplete`.
    fn size(&self) -> i32 {
        self.spec.max(self.pods) + self.terminating
    }
    /// Available pods that will remain: the availability bound.
    fn available_bound(&self) -> i32 {
        self.spec.min(self.available)
    }
}

fn selector_of(d: &Deployment) -> Result<Selector, PlanError> {
    let s = Selector::from_label_selector(&d.spec.selector)?;
    if s.is_empty() {
        return Err(PlanError::EmptySelector);
    }
    Ok(s)
}

/// The ReplicaSet to create for the Deployment's current template.
fn new_replica_set(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let d_name = d.metadata.name.clone().unwrap_or_default();
    let mut template = d.spec.template.clone();
    template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{d_name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some([(REVISION_ANNOTATION.to_owned(), revision.to_string())].into()),
            owner_references: controller_reference(d).map(|r| vec![r]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}

/// Sets a condition; returns whether anything changed. `lastUpdateTime`
/// moves on any change, `lastTransitionTime` when the status flips.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> bool {
    let found = conditions
        .iter_mut()
        .find(|c| c.type_.as_deref() == Some(type_));
    match found {
        Some(c)
            if c.status.as_deref() == Some(status)
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str()) =>
        {
            false
        }
        Some(c) => {
            if c.status.as_deref() != Some(status) {
                c.last_transition_time = Some(Time(now));
            }
            c.status = Some(status.to_owned());
            c.reason = Some(reason.to_owned());
            c.message = Some(message);
            c.last_update_time = Some(Time(now));
            true
        }
        None => {
            conditions.push(DeploymentCondition {
                type_: Some(type_.to_owned()),
                status: Some(status.to_owned()),
                reason: Some(reason.to_owned()),
                message: Some(message),
                last_transition_time: Some(Time(now)),
                last_update_time: Some(Time(now)),
            });
            true
        }
    }
}

/// Plans one Deployment against its namespace's ReplicaSets and Pods (other
/// namespaces are ignored) at `now`.
///
/// # Errors
/// [`PlanError`] for an unusable selector or strategy, or an unstored
/// object.
#[expect(
    clippy::too_many_lines,
    reason = "one pass over Kubernetes' sync steps reads best in one place"
)]
pub fn plan<'a>(
    d: &Deployment,
    rss: impl IntoIterator<Item = &'a ReplicaSet>,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
) -> Result<DeployPlan, PlanError> {
    let uid = d.metadata.uid.as_deref().ok_or(PlanError::NoUid)?;
    let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
    let d_name = d.metadata.name.clone().unwrap_or_default();
    let selector = selector_of(d)?;
    let replicas = d.spec.replicas.unwrap_or(1).max(0);
    let recreate = d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, replicas)
    } else {
        surge_and_unavailable(d)?
    };
    let paused = d.spec.paused.unwrap_or(false);
    let deleting = d.metadata.deletion_timestamp.is_some();
    let min_ready = d.spec.min_ready_seconds.unwrap_or(0);
    let mut out = DeployPlan::default();

    // Claim ReplicaSets (Kubernetes' ClaimReplicaSets).
    let rss: Vec<&ReplicaSet> = rss
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref().unwrap_or_default() == namespace)
        .collect();
    let mut claimed: Vec<&ReplicaSet> = Vec::new();
    for rs in &rss {
        let matches = selector.matches_opt(rs.metadata.labels.as_ref());
        let name = rs.metadata.name.clone().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    claimed.push(rs);
                } else if !deleting {
                    out.release.push(name);
                }
            }
            Some(_) => {}
            None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                out.adopt.push(name);
                claimed.push(rs);
            }
            None => {}
        }
    }
    // Oldest first, like Kubernetes' ReplicaSetsByCreationTimestamp.
    claimed.sort_by(|a, b| {
        let t = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });

    // Pod counts per claimed ReplicaSet.
    let pods: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or_default() == namespace)
        .collect();
    let mut recheck: Vec<Timestamp> = Vec::new();
    let mut working: Vec<Working> = claimed
        .iter()
        .map(|rs| {
            let rs_uid = rs.metadata.uid.as_deref().unwrap_or_default();
            let mine: Vec<&&Pod> = pods
                .iter()
                .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == rs_uid))
                .collect();
            recheck.extend(
                mine.iter()
                    .filter(|p| is_active(p))
                    .filter_map(|p| available_at(p, min_ready, now)),
            );
            let n = |f: &dyn Fn(&Pod) -> bool| {
                i32::try_from(mine.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
            };
            let spec = rs.spec.replicas.unwrap_or(1);
            Working {
                name: rs.metadata.name.clone().unwrap_or_default(),
                created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                revision: revision_of(&rs.metadata),
                original_spec: spec,
                spec,
                pods: n(&|p| is_active(p)),
                terminating: n(&|p| p.metadata.deletion_timestamp.is_some()),
                ready: n(&|p| is_active(p) && is_ready(p)),
                available: n(&|p| is_active(p) && is_available(p, min_ready, now)),
            }
        })
        .collect();

    // The new ReplicaSet: the oldest whose template equals ours.
    let mut new_idx = claimed.iter().position(|rs| {
        rs.spec
            .template
            .as_ref()
            .is_some_and(|t| templates_equal(t, &d.spec.template))
    });
    let max_old_revision = working
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, w)| w.revision)
        .max()
        .unwrap_or(0);
    let mut collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let mut rs_revisions: BTreeMap<String, String> = BTreeMap::new();

    if !deleting {
        // The new ReplicaSet gets the newest revision (this is what makes a
        // rollback to an old template show up as the latest revision).
        if let Some(i) = new_idx
            && working[i].revision <= max_old_revision
        {
            working[i].revision = max_old_revision + 1;
            rs_revisions.insert(working[i].name.clone(), working[i].revision.to_string());
        }

        let sizes = |w: &[Working]| w.iter().map(Working::size).sum::<i32>();
        let available = |w: &[Working]| w.iter().map(Working::available_bound).sum::<i32>();
        // Old pods still running, terminating ones included (Recreate waits
        // for them all to stop).
        let old_pods = |w: &[Working], new: Option<usize>| {
            w.iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != new)
                .map(|(_, w)| w.pods + w.terminating)
                .sum::<i32>()
        };
        let mut create_new = |working: &mut Vec<Working>,
                              count: i32,
                              collision_count: &mut Option<i32>|
         -> Option<usize> {
            let hash = pod_template_hash(&d.spec.template, *collision_count);
            let name = format!("{d_name}-{hash}");
            if rss
                .iter()
                .any(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
            {
                // Same name, different template: hash collision. Bump the
                // count (stored in status) and try again next round.
                *collision_count = Some(collision_count.unwrap_or(0) + 1);
                return None;
            }
            let revision = max_old_revision + 1;
            out.create = Some(new_replica_set(d, &hash, count, revision));
            working.push(Working {
                name,
                created: Some(now),
                revision,
                original_spec: count,
                spec: count,
                pods: 0,
                terminating: 0,
                ready: 0,
                available: 0,
            });
            Some(working.len() - 1)
        };

        if paused {
            // Paused: no rollout; only a lone ReplicaSet follows scaling.
            if let Some(i) = new_idx
                && old_pods(&working, new_idx) == 0
                && working
                    .iter()
                    .enumerate()
                    .all(|(j, w)| j == i || w.spec == 0)
            {
                working[i].spec = replicas;
            }
        } else if recreate {
            let olds_up = working
                .iter()
                .enumerate()
                .any(|(i, w)| Some(i) != new_idx && w.spec > 0);
            if olds_up {
                for (i, w) in working.iter_mut().enumerate() {
                    if Some(i) != new_idx {
                        w.spec = 0;
                    }
                }
            } else if old_pods(&working, new_idx) == 0 {
                match new_idx {
                    None => new_idx = create_new(&mut working, replicas, &mut collision_count),
                    Some(i) => working[i].spec = replicas,
                }
            }
        } else {
            // RollingUpdate.
            if new_idx.is_none() {
                // Created at the size the surge allows (NewRSNewReplicas).
                let room = (replicas + max_surge - sizes(&working)).max(0);
                new_idx = create_new(&mut working, room.min(replicas), &mut collision_count);
            }
            if let Some(n) = new_idx {
                // 1. Scale the new ReplicaSet up (or down to replicas).
                let mut scaled = false;
                if working[n].spec > replicas {
                    working[n].spec = replicas;
                    scaled = true;
                } else if working[n].spec < replicas {
                    let room = replicas + max_surge - sizes(&working);
                    if room > 0 {
                        working[n].spec += room.min(replicas - working[n].spec);
                        scaled = true;
                    }
                }
                // 2. Otherwise scale old ReplicaSets down.
                let old_spec: i32 = working
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != n)
                    .map(|(_, w)| w.spec)
                    .sum();
                if !scaled && old_spec > 0 {
                    let min_available = replicas - max_unavailable;
                    let new_unavailable = working[n].spec - working[n].available_bound();
                    let max_scaled_down = sizes(&working) - min_available - new_unavailable;
                    if max_scaled_down > 0 {
                        // 2a. Unhealthy replicas first: losing them costs no
                        // availability (cleanupUnhealthyReplicas).
                        let mut cleaned = 0;
                        for (i, w) in working.iter_mut().enumerate() {
                            if i == n || cleaned >= max_scaled_down || w.spec == 0 {
                                continue;
                            }
                            let unhealthy = w.spec - w.available_bound();
                            let take = unhealthy.min(max_scaled_down - cleaned);
                            if take > 0 {
                                w.spec -= take;
                                cleaned += take;
                            }
                        }
                        // 2b. Then available ones, down to minAvailable
                        // (scaleDownOldReplicaSetsForRollingUpdate).
                        let mut budget = available(&working) - min_available;
                        for (i, w) in working.iter_mut().enumerate() {
                            if i == n || budget <= 0 {
                                continue;
                            }
                            let take = w.spec.min(budget);
                            w.spec -= take;
                            budget -= take;
                        }
                    }
                }
            }
        }

        // Revision annotation of the Deployment follows the new RS.
        if let Some(n) = new_idx {
            let rev = working[n].revision.to_string();
            let current = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION));
            if current != Some(&rev) {
                out.revision = Some(rev);
            }
        }

        // Scale/annotation updates of existing ReplicaSets.
        let existing = working.len() - usize::from(out.create.is_some());
        for w in &working[..existing] {
            let replicas_change = (w.spec != w.original_spec).then_some(w.spec);
            let revision = rs_revisions.get(&w.name).cloned();
            if replicas_change.is_some() || revision.is_some() {
                out.update.push(RsChange {
                    name: w.name.clone(),
                    replicas: replicas_change,
                    revision,
                });
            }
        }

        // History cleanup once nothing is moving: old, empty ReplicaSets
        // beyond the limit, lowest revision first.
        if out.update.iter().all(|u| u.replicas.is_none()) && out.create.is_none() {
            let limit = usize::try_from(
                d.spec
                    .revision_history_limit
                    .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
                    .max(0),
            )
            .unwrap_or(0);
            let mut cleanable: Vec<&Working> = working
                .iter()
                .enumerate()
                .filter(|(i, w)| Some(*i) != new_idx && w.spec == 0 && w.pods == 0)
                .map(|(_, w)| w)
                .collect();
            if cleanable.len() > limit {
                cleanable.sort_by(|a, b| {
                    a.revision
                        .cmp(&b.revision)
                        .then_with(|| a.created.cmp(&b.created))
                });
                let excess = cleanable.len() - limit;
                out.delete = cleanable[..excess].iter().map(|w| w.name.clone()).collect();
            }
        }
    }

    // Status (Kubernetes' calculateStatus), from the pods as they are.
    let sum = |f: &dyn Fn(&Working) -> i32| working.iter().map(f).sum::<i32>();
    let available_now = sum(&|w| w.available);
    let updated = new_idx.map_or(0, |n| working[n].pods);
    let total = sum(&|w| w.pods);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(sum(&|w| w.ready)),
        available_replicas: Some(available_now),
        unavailable_replicas: Some((replicas - available_now).max(0)),
        collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: Some(sum(&|w| w.terminating)),
    };
    let mut conditions = status.conditions.take().unwrap_or_default();
    if available_now >= replicas - max_unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        );
    }
    let new_name = new_idx.map(|n| working[n].name.clone()).unwrap_or_default();
    let complete =
        new_idx.is_some() && updated == replicas && total == replicas && available_now == replicas;
    let deadline = d
        .spec
        .progress_deadline_seconds
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    if paused {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            now,
        );
    } else if complete {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {new_name:?} has successfully progressed."),
            now,
        );
    } else {
        let n = |v: Option<i32>| v.unwrap_or(0);
        let progressed = out.create.is_some()
            || out.update.iter().any(|u| u.replicas.is_some())
            || n(status.updated_replicas) > n(old.updated_replicas)
            || n(status.ready_replicas) > n(old.ready_replicas)
            || n(status.available_replicas) > n(old.available_replicas)
            || n(status.replicas) - n(status.updated_replicas)
                < n(old.replicas) - n(old.updated_replicas);
        let previous = conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .cloned();
        let was_progressing = previous.as_ref().is_some_and(|c| {
            c.status.as_deref() == Some("True")
                && c.reason.as_deref() != Some("NewReplicaSetAvailable")
        });
        if progressed || !was_progressing {
            let (reason, message) = if out.create.is_some() {
                (
                    "NewReplicaSetCreated",
                    format!("Created new replica set {new_name:?}"),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet {new_name:?} is progressing."),
                )
            };
            // Progress refreshes lastUpdateTime even with the same message.
            conditions.retain(|c| {
                c.type_.as_deref() != Some("Progressing") || c.status.as_deref() != Some("True")
            });
            let transition = previous
                .as_ref()
                .filter(|c| c.status.as_deref() == Some("True"))
                .and_then(|c| c.last_transition_time.clone());
            set_condition(&mut conditions, "Progressing", "True", reason, message, now);
            if let (Some(t), Some(c)) = (
                transition,
                conditions
                    .iter_mut()
                    .find(|c| c.type_.as_deref() == Some("Progressing")),
            ) {
                c.last_transition_time = Some(t);
            }
        } else if let Some(last) = previous.as_ref().and_then(|c| c.last_update_time.as_ref()) {
            let due = last.0 + SignedDuration::from_secs(i64::from(deadline));
            if due <= now {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet {new_name:?} has timed out progressing."),
                    now,
                );
            } else {
                recheck.push(due);
            }
        }
        if let Some(c) = conditions.iter().find(|c| {
            c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("True")
        }) && let Some(last) = &c.last_update_time
        {
            recheck.push(last.0 + SignedDuration::from_secs(i64::from(deadline)));
        }
    }
    status.conditions = Some(conditions);
    out.status = status;
    out.recheck_at = recheck.into_iter().filter(|t| *t > now).min();
    Ok(out)
}

/// Whether two statuses say the same (absent counts equal zero).
pub fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.observed_generation == b.observed_generation
        && n(a.replicas) == n(b.replicas)
        && n(a.updated_replicas) == n(b.updated_replicas)
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && n(a.unavailable_replicas) == n(b.unavailable_replicas)
        && a.collision_count == b.collision_count
        && n(a.terminating_replicas) == n(b.terminating_replicas)
        && a.conditions.as_deref().unwrap_or_default()
            == b.conditions.as_deref().unwrap_or_default()
}

// --------------------------------------------------------------- runner

/// Errors of the Deployment controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer a list at start.
    #[error("deployment controller: cannot list {resource} from the API server")]
    Preflight {
        /// Plural resource name.
        resource: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An API write failed.
    #[error("{action} for deployment {namespace}/{name}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Deployment name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// What [`reconcile`] works with.
pub struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// ReplicaSet writes (`name=replicas` after a scale or create) the
    /// cache must show before the next plan: acting on a stale spec could
    /// scale down twice.
    expectations: Expectations,
}

/// The Deployment a ReplicaSet event concerns: its controller, or for an
/// orphan every Deployment in its namespace whose selector matches.
pub fn deployments_for_replica_set(
    rs: &ReplicaSet,
    deployments: &[Arc<Deployment>],
) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(owner) = controller_of(&rs.metadata) {
        return if owner.kind == "Deployment" {
            vec![ObjectRef::new(&owner.name).within(namespace)]
        } else {
            Vec::new()
        };
    }
    deployments
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(namespace))
        .filter(|d| selector_of(d).is_ok_and(|s| s.matches_opt(rs.metadata.labels.as_ref())))
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// Runs the Deployment controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::Preflight`] when Deployments, ReplicaSets or Pods cannot be
/// listed at start.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let pre = |resource| move |source| Error::Preflight { resource, source };
    runtime::can_list::<Deployment>(&client)
        .await
        .map_err(pre("deployments"))?;
    runtime::can_list::<ReplicaSet>(&client)
        .await
        .map_err(pre("replicasets"))?;
    runtime::can_list::<Pod>(&client)
        .await
        .map_err(pre("pods"))?;

    let (rs_reader, rs_events) = runtime::cache::<ReplicaSet>(&client);
    let (pod_reader, pods) = runtime::cache::<Pod>(&client);
    // Pods matter for availability; map them to their ReplicaSet's owner.
    let pod_events = {
        let rss = rs_reader.clone();
        pods.map(move |pod| {
            pod.map(|pod| {
                let owner = controller_of(&pod.metadata)
                    .filter(|o| o.kind == "ReplicaSet")
                    .map(|o| o.uid.clone());
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let rs = owner.and_then(|uid| {
                    rss.state().into_iter().find(|rs| {
                        rs.metadata.uid.as_deref() == Some(uid.as_str())
                            && rs.metadata.namespace.as_deref() == Some(namespace.as_str())
                    })
                });
                rs.map(|rs| (*rs).clone())
            })
        })
        .filter_map(|r| {
            future::ready(match r {
                Ok(Some(rs)) => Some(Ok(rs)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        })
    };
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let d_store = controller.store();
    let d_store2 = d_store.clone();
    let context = Arc::new(Context {
        client,
        replica_sets: rs_reader,
        pods: pod_reader,
        expectations: Expectations::new(),
    });
    let results = controller
        .watches_stream(rs_events, move |rs| {
            deployments_for_replica_set(&rs, &d_store.state())
        })
        .watches_stream(pod_events, move |rs| {
            deployments_for_replica_set(&rs, &d_store2.state())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context);
    runtime::drive("deployment", results).await;
    Ok(())
}

fn write_err(action: &'static str, d: &Deployment) -> impl FnOnce(kube::Error) -> Error + use<> {
    let namespace = d.namespace().unwrap_or_default();
    let name = d.name_any();
    move |source| Error::Write {
        action,
        namespace,
        name,
        source,
    }
}

/// Reconciles one Deployment: plan, then apply the plan through the API.
///
/// # Errors
/// An API failure (retried). Plan errors (invalid
/// spec) are logged and wait for the object to change.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !cache_synced(&ctx.replica_sets) || !cache_synced(&ctx.pods) {
        return Ok(Action::requeue(SYNC_RETRY));
    }
    let namespace = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.uid().unwrap_or_default();
    let rss: Vec<Arc<ReplicaSet>> = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let shows = |key: &str| {
        let (rs_name, replicas) = key.rsplit_once('=').unwrap_or((key, ""));
        rss.iter().any(|rs| {
            rs.metadata.name.as_deref() == Some(rs_name)
                && rs.spec.replicas.map(|r| r.to_string()).as_deref() == Some(replicas)
        })
    };
    if !ctx
        .expectations
        .satisfied(&uid, shows, |_| false, Instant::now())
    {
        debug!(%namespace, deployment = %name, "waiting for the replica set cache to catch up");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let now = Timestamp::now();
    let plan = match plan(&d, rss.iter().map(|r| &**r), pods.iter().map(|p| &**p), now) {
        Ok(plan) => plan,
        Err(error) => {
            warn!(%namespace, deployment = %name, error = %error, "cannot plan deployment; waiting for a change");
            return Ok(Action::await_change());
        }
    };
    let rs_api = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &namespace);
    let by_name: BTreeMap<&str, &ReplicaSet> = rss
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, &**r)))
        .collect();
    let pp = PatchParams::default();

    if let Some(reference) = controller_reference(&*d) {
        for rs_name in &plan.adopt {
            let Some(rs) = by_name.get(rs_name.as_str()) else {
                continue;
            };
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "ownerReferences": with_owner(&rs.metadata, reference.clone()),
            }});
            runtime::ignore_not_found(rs_api.patch(rs_name, &pp, &Patch::Merge(&patch)).await)
                .map_err(write_err("adopting replica set", &d))?;
            info!(%namespace, deployment = %name, replicaset = %rs_name, "adopted replica set");
        }
    }
    for rs_name in &plan.release {
        let Some(rs) = by_name.get(rs_name.as_str()) else {
            continue;
        };
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": rs.metadata.resource_version,
            "ownerReferences": without_owner(&rs.metadata, &uid),
        }});
        runtime::ignore_not_found(rs_api.patch(rs_name, &pp, &Patch::Merge(&patch)).await)
            .map_err(write_err("releasing replica set", &d))?;
    }
    let mut expected: Vec<String> = Vec::new();
    if let Some(new_rs) = &plan.create {
        match rs_api.create(&PostParams::default(), new_rs).await {
            Ok(created) => {
                info!(%namespace, deployment = %name, replicaset = %created.name_any(), replicas = ?new_rs.spec.replicas, "created replica set");
                expected.push(format!(
                    "{}={}",
                    created.name_any(),
                    new_rs.spec.replicas.unwrap_or(0)
                ));
            }
            // Our cache lags our own create; the next round sees it.
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Err(source) => return Err(write_err("creating replica set", &d)(source)),
        }
    }
    for change in &plan.update {
        let Some(rs) = by_name.get(change.name.as_str()) else {
            continue;
        };
        let mut metadata = serde_json::json!({ "resourceVersion": rs.metadata.resource_version });
        if let Some(rev) = &change.revision {
            metadata["annotations"] = serde_json::json!({ REVISION_ANNOTATION: rev });
        }
        let mut patch = serde_json::json!({ "metadata": metadata });
        if let Some(r) = change.replicas {
            patch["spec"] = serde_json::json!({ "replicas": r });
            expected.push(format!("{}={r}", change.name));
            info!(%namespace, deployment = %name, replicaset = %change.name, from = ?rs.spec.replicas, to = r, "scaled replica set");
        }
        runtime::ignore_not_found(rs_api.patch(&change.name, &pp, &Patch::Merge(&patch)).await)
            .map_err(write_err("updating replica set", &d))?;
    }
    ctx.expectations.expect(&uid, expected, [], Instant::now());
    for rs_name in &plan.delete {
        let Some(rs) = by_name.get(rs_name.as_str()) else {
            continue;
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        runtime::ignore_not_found(rs_api.delete(rs_name, &dp).await)
            .map_err(write_err("deleting old replica set", &d))?;
        info!(%namespace, deployment = %name, replicaset = %rs_name, "deleted old replica set (revision history limit)");
    }
    let d_api = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
    if let Some(rev) = &plan.revision {
        let patch = serde_json::json!({"metadata": {"annotations": { REVISION_ANNOTATION: rev }}});
        runtime::ignore_not_found(d_api.patch(&name, &pp, &Patch::Merge(&patch)).await)
            .map_err(write_err("annotating revision", &d))?;
    }
    if !same_status(&plan.status, &d.status.clone().unwrap_or_default()) {
        let patch = serde_json::json!({ "status": plan.status });
        runtime::ignore_not_found(d_api.patch_status(&name, &pp, &Patch::Merge(&patch)).await)
            .map_err(write_err("updating status", &d))?;
    }
    Ok(runtime::requeue_at(plan.recheck_at, now))
}

fn error_policy(d: Arc<Deployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(deployment = %d.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset;
    use crate::controllers::testkit::{at, set_ready, template, web_labels};
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-deploy".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(web_labels()),
                    ..Default::default()
                },
                template: template(web_labels(), "img:1"),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            },
            status: None,
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    /// A tiny cluster: the Deployment and ReplicaSet controllers' pure
    /// cores applied in turn, plus a "kubelet" that readies pods.
    struct Sim {
        d: Deployment,
        rss: Vec<ReplicaSet>,
        pods: Vec<Pod>,
        now: i64,
        uids: usize,
    }

    impl Sim {
        fn new(d: Deployment) -> Self {
            Sim {
                d,
                rss: Vec::new(),
                pods: Vec::new(),
                now: 1000,
                uids: 0,
            }
        }

        fn uid(&mut self, prefix: &str) -> String {
            self.uids += 1;
            format!("{prefix}-{}", self.uids)
        }

        fn deploy_step(&mut self) -> DeployPlan {
            let plan = plan(&self.d, &self.rss, &self.pods, at(self.now).0).expect("plan");
            for name in &plan.adopt {
                let reference = controller_reference(&self.d).expect("ref");
                if let Some(rs) = self
                    .rss
                    .iter_mut()
                    .find(|r| r.metadata.name.as_deref() == Some(name))
                {
                    rs.metadata.owner_references = Some(with_owner(&rs.metadata, reference));
                }
            }
            if let Some(rs) = &plan.create {
                let mut rs = rs.clone();
                rs.metadata.uid = Some(self.uid("rs"));
                rs.metadata.creation_timestamp = Some(at(self.now));
                rs.metadata.generation = Some(1);
                self.rss.push(rs);
            }
            for change in &plan.update {
                let rs = self
                    .rss
                    .iter_mut()
                    .find(|r| r.metadata.name.as_deref() == Some(change.name.as_str()))
                    .expect("rs");
                if let Some(r) = change.replicas {
                    rs.spec.replicas = Some(r);
                }
                if let Some(rev) = &change.revision {
                    rs.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(REVISION_ANNOTATION.into(), rev.clone());
                }
            }
            self.rss.retain(|r| {
                !plan
                    .delete
                    .contains(r.metadata.name.as_ref().expect("name"))
            });
            if let Some(rev) = &plan.revision {
                self.d
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(REVISION_ANNOTATION.into(), rev.clone());
            }
            self.d.status = Some(plan.status.clone());
            plan
        }

        fn rs_step(&mut self) {
            self.rs_step_checked(&|_| {});
        }

        /// Runs the ReplicaSet controller for each ReplicaSet, newest
        /// first (so creates can come before another set's deletes, as
        /// with concurrent controllers), calling `check` after each.
        fn rs_step_checked(&mut self, check: &dyn Fn(&Sim)) {
            let now = at(self.now).0;
            for i in (0..self.rss.len()).rev() {
                let rs = self.rss[i].clone();
                let p = replicaset::plan(&rs, &self.pods, now).expect("rs plan");
                // Bound pods are deleted gracefully: they terminate until
                // the kubelet finishes them.
                for pod in self
                    .pods
                    .iter_mut()
                    .filter(|pod| p.delete.contains(pod.metadata.name.as_ref().expect("name")))
                {
                    pod.metadata.deletion_timestamp = Some(at(self.now));
                }
                for _ in 0..p.create {
                    let uid = self.uid("pod");
                    let template = rs.spec.template.clone().expect("template");
                    let mut pod = crate::controllers::template::pod_from_template(
                        &template,
                        "default",
                        "x-",
                        controller_reference(&rs).expect("ref"),
                    );
                    pod.metadata.name = Some(format!(
                        "{}-{uid}",
                        rs.metadata.name.as_deref().unwrap_or_default()
                    ));
                    pod.metadata.uid = Some(uid);
                    pod.metadata.creation_timestamp = Some(at(self.now));
                    pod.spec.get_or_insert_default().node_name = Some("n1".into());
                    pod.status.get_or_insert_default().phase = Some("Pending".into());
                    self.pods.push(pod);
                }
                check(self);
            }
        }

        /// Finishes up to `n` terminating pods and readies up to `n`
        /// not-ready pods, oldest first.
        fn kubelet_step(&mut self, n: usize) {
            let now = self.now;
            let mut finished = 0;
            self.pods.retain(|p| {
                if p.metadata.deletion_timestamp.is_some() && finished < n {
                    finished += 1;
                    return false;
                }
                true
            });
            for pod in self.pods.iter_mut().filter(|p| !is_ready(p)).take(n) {
                set_ready(pod, now);
            }
        }

        fn ready(&self) -> i32 {
            i32::try_from(self.pods.iter().filter(|p| is_ready(p)).count()).expect("count")
        }

        fn total(&self) -> i32 {
            i32::try_from(self.pods.len()).expect("count")
        }

        fn image_counts(&self) -> BTreeMap<String, usize> {
            let mut m = BTreeMap::new();
            for p in &self.pods {
                let image = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers[0].image.clone())
                    .unwrap_or_default();
                *m.entry(image).or_default() += 1;
            }
            m
        }

        /// Converges, checking the rollout bounds after every single
        /// action; returns the number of rounds.
        fn converge(&mut self, ready_per_round: usize, min_ready: i32, max_total: i32) -> usize {
            self.converge_lagging(ready_per_round, min_ready, max_total, 1)
        }

        /// [`converge`] with `deploy_steps` Deployment syncs per round, all
        /// before the ReplicaSet controller acts: the later ones plan from
        /// ReplicaSet specs whose pods have not caught up yet.
        fn converge_lagging(
            &mut self,
            ready_per_round: usize,
            min_ready: i32,
            max_total: i32,
            deploy_steps: usize,
        ) -> usize {
            let check = |sim: &Sim, when: &str, round: usize| {
                assert!(
                    sim.ready() >= min_ready,
                    "round {round} after {when}: ready {} < {min_ready}; pods {:?}",
                    sim.ready(),
                    sim.image_counts()
                );
                assert!(
                    sim.total() <= max_total,
                    "round {round} after {when}: total {} > {max_total}",
                    sim.total()
                );
            };
            for round in 0..500 {
                let mut plan = self.deploy_step();
                for _ in 1..deploy_steps {
                    plan = self.deploy_step();
                }
                check(self, "deployment", round);
                self.rs_step_checked(&|sim| check(sim, "a replicaset", round));
                self.kubelet_step(ready_per_round);
                check(self, "kubelet", round);
                self.now += 1;
                let idle =
                    plan.create.is_none() && plan.update.is_empty() && plan.delete.is_empty();
                let progressing = plan
                    .status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_.as_deref() == Some("Progressing"))
                    .expect("progressing");
                if idle && progressing.reason.as_deref() == Some("NewReplicaSetAvailable") {
                    return round;
                }
            }
            panic!("did not converge: {:?}", self.image_counts());
        }

        fn set_image(&mut self, image: &str) {
            self.d.spec.template = template(web_labels(), image);
            self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(1) + 1);
        }

        fn rs_with_image(&self, image: &str) -> &ReplicaSet {
            self.rss
                .iter()
                .find(|r| {
                    r.spec
                        .template
                        .as_ref()
                        .and_then(|t| t.spec.as_ref())
                        .and_then(|s| s.containers[0].image.as_deref())
                        == Some(image)
                })
                .expect("replica set with image")
        }
    }

    #[test]
    fn hash_is_stable_safe_and_template_sensitive() {
        let a = template(web_labels(), "img:1");
        let h = pod_template_hash(&a, None);
        assert_eq!(h, pod_template_hash(&a.clone(), None));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_ne!(h, pod_template_hash(&template(web_labels(), "img:2"), None));
        assert_ne!(h, pod_template_hash(&a, Some(1)));
        assert_ne!(
            pod_template_hash(&a, Some(1)),
            pod_template_hash(&a, Some(2))
        );
    }

    #[test]
    fn template_equality_ignores_only_the_hash_label() {
        let a = template(web_labels(), "img:1");
        let mut b = a.clone();
        b.metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "x".into());
        assert!(templates_equal(&a, &b));
        let mut c = b.clone();
        c.metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert("tier".into(), "fe".into());
        assert!(!templates_equal(&a, &c));
        // A template with only the hash label equals one without labels.
        let bare = PodTemplateSpec {
            metadata: None,
            spec: a.spec.clone(),
        };
        let mut hashed = bare.clone();
        hashed.metadata = Some(ObjectMeta {
            labels: Some([(POD_TEMPLATE_HASH_LABEL.to_owned(), "x".to_owned())].into()),
            ..Default::default()
        });
        assert!(templates_equal(&bare, &hashed));
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        assert_eq!(
            resolve_int_or_percent(&pct("25%"), 10, true, "maxSurge"),
            Ok(3)
        );
        assert_eq!(
            resolve_int_or_percent(&pct("25%"), 10, false, "maxUnavailable"),
            Ok(2)
        );
        assert_eq!(
            resolve_int_or_percent(&pct("1%"), 10, true, "maxSurge"),
            Ok(1)
        );
        assert_eq!(
            resolve_int_or_percent(&pct("1%"), 10, false, "maxUnavailable"),
            Ok(0)
        );
        assert_eq!(
            resolve_int_or_percent(&IntOrString::Int(4), 10, false, "maxUnavailable"),
            Ok(4)
        );
        assert_eq!(
            resolve_int_or_percent(&pct("5"), 10, false, "maxUnavailable"),
            Ok(5)
        );
        assert!(resolve_int_or_percent(&pct("lots"), 10, true, "maxSurge").is_err());
        assert!(resolve_int_or_percent(&pct("%"), 10, true, "maxSurge").is_err());
        assert_eq!(
            surge_and_unavailable(&deployment(10, pct("25%"), pct("25%"))),
            Ok((3, 2))
        );
        assert_eq!(
            surge_and_unavailable(&deployment(5, IntOrString::Int(0), pct("10%"))),
            Err(PlanError::ZeroSurgeAndUnavailable),
            "10% of 5 rounds down to 0"
        );
        let d = deployment(5, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(
            plan(&d, &[], &[], at(0).0),
            Err(PlanError::ZeroSurgeAndUnavailable)
        );
    }

    #[test]
    fn first_sync_creates_a_hashed_owned_replica_set() {
        let d = deployment(3, pct("25%"), pct("25%"));
        let p = plan(&d, &[], &[], at(0).0).expect("plan");
        let rs = p.create.expect("creates");
        let hash = pod_template_hash(&d.spec.template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(rs.spec.replicas, Some(3));
        assert_eq!(
            rs.spec
                .selector
                .match_labels
                .as_ref()
                .and_then(|m| m.get(POD_TEMPLATE_HASH_LABEL)),
            Some(&hash)
        );
        let tlabels = rs
            .spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert_eq!(tlabels.get("app").map(String::as_str), Some("web"));
        assert_eq!(tlabels.get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
        assert_eq!(rs.metadata.labels.as_ref(), Some(&tlabels));
        assert_eq!(revision_of(&rs.metadata), 1);
        let owner = controller_of(&rs.metadata).expect("owner");
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "uid-deploy")
        );
        assert_eq!(p.revision.as_deref(), Some("1"));
        let progressing = p
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .expect("cond");
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
    }

    fn rollout(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
        ready_per_round: usize,
    ) {
        let mut sim = Sim::new(deployment(replicas, surge, unavailable));
        let (max_surge, max_unavailable) = surge_and_unavailable(&sim.d).expect("valid");
        // Initial rollout from nothing: no lower bound yet.
        sim.converge(usize::MAX, 0, replicas + max_surge);
        assert_eq!(sim.ready(), replicas);
        sim.set_image("img:2");
        sim.converge(
            ready_per_round,
            replicas - max_unavailable,
            replicas + max_surge,
        );
        assert_eq!(
            sim.image_counts(),
            BTreeMap::from([("img:2".to_owned(), usize::try_from(replicas).expect("n"))])
        );
        assert_eq!(sim.rs_with_image("img:1").spec.replicas, Some(0));
        let status = sim.d.status.clone().expect("status");
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (
                Some(replicas),
                Some(replicas),
                Some(replicas),
                Some(replicas),
                Some(0)
            )
        );
        assert_eq!(revision_of(&sim.d.metadata), 2);
        assert_eq!(revision_of(&sim.rs_with_image("img:2").metadata), 2);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailability_at_every_step() {
        rollout(10, pct("25%"), pct("25%"), 1);
        rollout(10, pct("25%"), pct("25%"), 4);
        rollout(6, IntOrString::Int(1), IntOrString::Int(0), 1);
        rollout(6, IntOrString::Int(0), IntOrString::Int(1), 1);
        rollout(5, pct("100%"), pct("0%"), 2);
        rollout(1, pct("25%"), pct("25%"), 1);
        rollout(3, IntOrString::Int(2), IntOrString::Int(3), 1);
    }

    #[test]
    fn rolling_update_bounds_hold_when_pods_lag_replica_set_specs() {
        for (replicas, surge, unavailable) in [
            (10, pct("25%"), pct("25%")),
            (6, IntOrString::Int(1), IntOrString::Int(0)),
            (4, IntOrString::Int(0), IntOrString::Int(2)),
        ] {
            let mut sim = Sim::new(deployment(replicas, surge, unavailable));
            let (max_surge, max_unavailable) = surge_and_unavailable(&sim.d).expect("valid");
            sim.converge(usize::MAX, 0, replicas + max_surge);
            sim.set_image("img:2");
            sim.converge_lagging(1, replicas - max_unavailable, replicas + max_surge, 3);
            assert_eq!(
                sim.image_counts(),
                BTreeMap::from([("img:2".to_owned(), usize::try_from(replicas).expect("n"))])
            );
        }
    }

    #[test]
    fn rollback_reuses_the_old_replica_set_and_bumps_its_revision() {
        let mut sim = Sim::new(deployment(4, pct("25%"), pct("25%")));
        sim.converge(usize::MAX, 0, 5);
        sim.set_image("img:2");
        sim.converge(1, 3, 5);
        let old_name = sim.rs_with_image("img:1").metadata.name.clone();
        assert_eq!(sim.rss.len(), 2);
        // `rollout undo`: the template goes back to revision 1's.
        sim.set_image("img:1");
        sim.converge(1, 3, 5);
        assert_eq!(sim.rss.len(), 2, "no new ReplicaSet for a known template");
        let back = sim.rs_with_image("img:1");
        assert_eq!(back.metadata.name, old_name);
        assert_eq!(back.spec.replicas, Some(4));
        assert_eq!(revision_of(&back.metadata), 3);
        assert_eq!(revision_of(&sim.d.metadata), 3);
        assert_eq!(sim.rs_with_image("img:2").spec.replicas, Some(0));
        assert_eq!(
            sim.image_counts(),
            BTreeMap::from([("img:1".to_owned(), 4)])
        );
    }

    #[test]
    fn recreate_removes_all_old_pods_before_creating_new_ones() {
        let mut d = deployment(3, pct("25%"), pct("25%"));
        d.spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let mut sim = Sim::new(d);
        sim.converge(usize::MAX, 0, 3);
        sim.set_image("img:2");
        let mut saw_empty = false;
        for _ in 0..20 {
            sim.deploy_step();
            let images = sim.image_counts();
            assert!(
                !(images.contains_key("img:1") && images.contains_key("img:2")),
                "old and new pods together: {images:?}"
            );
            sim.rs_step();
            let images = sim.image_counts();
            assert!(
                !(images.contains_key("img:1") && images.contains_key("img:2")),
                "old and new pods together: {images:?}"
            );
            saw_empty |= images.is_empty();
            sim.kubelet_step(usize::MAX);
            saw_empty |= sim.image_counts().is_empty();
            sim.now += 1;
        }
        assert!(saw_empty);
        assert_eq!(
            sim.image_counts(),
            BTreeMap::from([("img:2".to_owned(), 3)])
        );
        assert_eq!(sim.ready(), 3);
    }

    #[test]
    fn paused_deployment_does_not_roll_but_scales() {
        let mut sim = Sim::new(deployment(2, pct("25%"), pct("25%")));
        sim.converge(usize::MAX, 0, 3);
        sim.d.spec.paused = Some(true);
        sim.set_image("img:2");
        let p = sim.deploy_step();
        assert!(p.create.is_none());
        let progressing = p
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .expect("cond");
        assert_eq!(progressing.reason.as_deref(), Some("DeploymentPaused"));
        assert_eq!(progressing.status.as_deref(), Some("Unknown"));
        // Scaling while paused applies to the lone ReplicaSet. The
        // template changed, so it is "old"; scale back to the same
        // template to scale it.
        sim.set_image("img:1");
        sim.d.spec.replicas = Some(4);
        let p = sim.deploy_step();
        assert_eq!(p.update.iter().find_map(|u| u.replicas), Some(4));
        // Resume: with a changed template the rollout starts.
        sim.d.spec.paused = Some(false);
        sim.set_image("img:2");
        assert!(sim.deploy_step().create.is_some());
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_lowest_revision_first() {
        let mut d = deployment(1, pct("25%"), pct("25%"));
        d.spec.revision_history_limit = Some(2);
        let mut sim = Sim::new(d);
        for image in ["img:1", "img:2", "img:3", "img:4", "img:5"] {
            sim.set_image(image);
            sim.converge(usize::MAX, 0, 2);
        }
        // Converging deletes extras once idle; run one more round.
        sim.deploy_step();
        let mut kept: Vec<String> = sim
            .rss
            .iter()
            .map(|r| {
                r.spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers[0].image.clone())
                    .unwrap_or_default()
            })
            .collect();
        kept.sort();
        assert_eq!(kept, ["img:3", "img:4", "img:5"]);
    }

    #[test]
    fn adopts_matching_orphan_replica_sets_and_releases_mismatched() {
        let d = deployment(2, pct("25%"), pct("25%"));
        let mut orphan = new_replica_set(&d, &pod_template_hash(&d.spec.template, None), 2, 1);
        orphan.metadata.owner_references = None;
        orphan.metadata.uid = Some("rs-orphan".into());
        let mut mine_but_relabeled = orphan.clone();
        mine_but_relabeled.metadata.name = Some("relabeled".into());
        mine_but_relabeled.metadata.uid = Some("rs-relabeled".into());
        mine_but_relabeled.metadata.labels = Some([("app".to_owned(), "other".to_owned())].into());
        mine_but_relabeled.metadata.owner_references = controller_reference(&d).map(|r| vec![r]);
        let mut someone_elses = orphan.clone();
        someone_elses.metadata.name = Some("theirs".into());
        someone_elses.metadata.owner_references = Some(vec![OwnerReference {
            uid: "x".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        let p = plan(
            &d,
            &[orphan, mine_but_relabeled, someone_elses],
            &[],
            at(0).0,
        )
        .expect("plan");
        assert_eq!(
            p.adopt,
            [format!("web-{}", pod_template_hash(&d.spec.template, None))]
        );
        assert_eq!(p.release, ["relabeled"]);
        assert!(
            p.create.is_none(),
            "the adopted ReplicaSet has our template"
        );
    }

    #[test]
    fn hash_collision_bumps_collision_count() {
        let d = deployment(2, pct("25%"), pct("25%"));
        let hash = pod_template_hash(&d.spec.template, None);
        // Someone else's ReplicaSet already holds our name.
        let mut squatter = new_replica_set(&d, &hash, 1, 1);
        squatter.metadata.owner_references = None;
        squatter.metadata.labels = Some([("app".to_owned(), "other".to_owned())].into());
        squatter.spec.template = Some(template(web_labels(), "other:1"));
        let p = plan(&d, &[squatter.clone()], &[], at(0).0).expect("plan");
        assert!(p.create.is_none());
        assert_eq!(p.status.collision_count, Some(1));
        let mut d2 = d.clone();
        d2.status = Some(p.status);
        let p2 = plan(&d2, &[squatter], &[], at(0).0).expect("plan");
        let created = p2.create.expect("creates with the new hash");
        assert_eq!(
            created.metadata.name,
            Some(format!(
                "web-{}",
                pod_template_hash(&d.spec.template, Some(1))
            ))
        );
    }

    #[test]
    fn min_ready_seconds_delays_availability_and_schedules_a_recheck() {
        let mut d = deployment(2, pct("25%"), pct("25%"));
        d.spec.min_ready_seconds = Some(10);
        let mut sim = Sim::new(d);
        sim.deploy_step();
        sim.rs_step();
        sim.kubelet_step(usize::MAX);
        let p = sim.deploy_step();
        assert_eq!(p.status.ready_replicas, Some(2));
        assert_eq!(p.status.available_replicas, Some(0));
        assert_eq!(p.status.unavailable_replicas, Some(2));
        assert_eq!(p.recheck_at, Some(at(sim.now + 10).0));
        let available = p
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some("Available"))
            .expect("cond");
        assert_eq!(available.status.as_deref(), Some("False"));
        sim.now += 10;
        let p = sim.deploy_step();
        assert_eq!(p.status.available_replicas, Some(2));
    }

    #[test]
    fn no_progress_past_the_deadline_sets_progress_deadline_exceeded() {
        let mut d = deployment(2, pct("25%"), pct("25%"));
        d.spec.progress_deadline_seconds = Some(30);
        let mut sim = Sim::new(d);
        sim.deploy_step();
        sim.rs_step();
        // The kubelet never readies the pods.
        sim.deploy_step();
        sim.now += 29;
        let p = sim.deploy_step();
        let cond = |p: &DeployPlan| {
            p.status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_.as_deref() == Some("Progressing"))
                .cloned()
                .expect("cond")
        };
        assert_eq!(cond(&p).status.as_deref(), Some("True"));
        sim.now += 2;
        let p = sim.deploy_step();
        assert_eq!(cond(&p).status.as_deref(), Some("False"));
        assert_eq!(cond(&p).reason.as_deref(), Some("ProgressDeadlineExceeded"));
    }

    #[test]
    fn deleting_deployment_only_reports_status() {
        let mut d = deployment(2, pct("25%"), pct("25%"));
        d.metadata.deletion_timestamp = Some(at(1));
        let p = plan(&d, &[], &[], at(2).0).expect("plan");
        assert!(p.create.is_none() && p.update.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn replica_set_events_map_to_their_deployment() {
        let d = Arc::new(deployment(2, pct("25%"), pct("25%")));
        let rs = new_replica_set(&d, "h", 1, 1);
        assert_eq!(
            deployments_for_replica_set(&rs, std::slice::from_ref(&d)),
            vec![ObjectRef::new("web").within("default")]
        );
        let mut orphan = rs.clone();
        orphan.metadata.owner_references = None;
        assert_eq!(
            deployments_for_replica_set(&orphan, std::slice::from_ref(&d)),
            vec![ObjectRef::from_obj(&*d)]
        );
        orphan.metadata.labels = None;
        assert!(deployments_for_replica_set(&orphan, &[d]).is_empty());
    }
}
