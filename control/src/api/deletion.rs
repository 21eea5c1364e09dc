//! What a DELETE does to an object, as pure functions over its JSON:
//! graceful deletion of pods, finalizers, and the propagation policies
//! (Kubernetes' `rest.BeforeDelete` + `deletionFinalizersForGarbageCollection`
//! + `shouldDeleteDuringUpdate`).
//!
//! Semantics:
//! - A **Pod** bound to a node (`spec.nodeName`), not in phase Succeeded or
//!   Failed, whose node still exists, is deleted *gracefully*:
//!   `metadata.deletionTimestamp` = now + grace and
//!   `metadata.deletionGracePeriodSeconds` = grace, where grace is
//!   `DeleteOptions.gracePeriodSeconds`, else the pod's
//!   `spec.terminationGracePeriodSeconds`, else 30 (negative reads as 1).
//!   The object stays until the node agent deletes it again with grace 0.
//!   A grace of 0, an unbound or finished pod, or a pod whose node is gone
//!   (nobody is left to stop it: what Kubernetes' pod GC does for pods of
//!   deleted nodes, done at delete time) is removed at once.
//! - A second DELETE of a terminating object may only shorten the grace
//!   period (the new deadline counts from the first request, as in
//!   Kubernetes); otherwise nothing changes.
//! - `metadata.finalizers` block removal: the object gets
//!   `deletionTimestamp` (now, grace 0) and is removed by the update that
//!   removes its last finalizer. No finalizer may be added to an object
//!   being deleted.
//! - `propagationPolicy`: `Background` (the default of most kinds) removes
//!   the object and leaves dependents to the garbage collector;
//!   `Foreground` adds the `foregroundDeletion` finalizer (when the object
//!   has dependents), which the garbage collector removes after deleting
//!   them; `Orphan` (the default of batch/v1 Jobs, as in Kubernetes) has the
//!   server remove the dependents' ownerReferences to the object before
//!   the object goes. Kubernetes instead adds an `orphan` finalizer that
//!   its garbage collector processes; doing it in the server is a
//!   simplification with the same end state (a dependent created by a
//!   controller in the instant between the orphaning and the removal keeps
//!   its reference and is then collected as in `Background`).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::meta;
use super::resources::Preconditions;
use crate::validation::FieldError;

/// Finalizer of an object whose dependents are being deleted first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer asking for the dependents to be orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Grace period of a pod with no `terminationGracePeriodSeconds`.
pub const DEFAULT_POD_GRACE_SECONDS: i64 = 30;
/// The warning Kubernetes returns when a batch/v1 Job is deleted without a
/// propagation policy.
pub const JOB_ORPHAN_WARNING: &str = "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning";

/// `DeleteOptions.propagationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their reference to the owner and stay.
    Orphan,
    /// The owner goes now; the garbage collector removes dependents.
    Background,
    /// Dependents go first, then the owner.
    Foreground,
}

impl Propagation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Orphan => "Orphan",
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

/// A DELETE request's options (`DeleteOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `preconditions`.
    pub preconditions: Preconditions,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy` (or the legacy `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `dryRun` was requested.
    pub dry_run: bool,
}

/// Why DeleteOptions were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// Malformed (400).
    BadRequest(String),
    /// Well-formed but invalid (422 on kind `DeleteOptions`).
    Invalid(Vec<FieldError>),
}

fn int_of(value: &Value, field: &str) -> Result<Option<i64>, OptionsError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| {
            OptionsError::BadRequest(format!("{field} must be an integer, got {n}"))
        }),
        Value::String(s) => s.trim().parse().map(Some).map_err(|_| {
            OptionsError::BadRequest(format!("{field} must be an integer, got {s:?}"))
        }),
        other => Err(OptionsError::BadRequest(format!(
            "{field} must be an integer, got {other}"
        ))),
    }
}

fn bool_of(value: &Value, field: &str) -> Result<Option<bool>, OptionsError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => match s.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(OptionsError::BadRequest(format!(
                "{field} must be true or false, got {s:?}"
            ))),
        },
        other => Err(OptionsError::BadRequest(format!(
            "{field} must be true or false, got {other}"
        ))),
    }
}

impl DeleteOptions {
    /// Reads the options from a request: from the body when it has one (a
    /// `DeleteOptions` object, as kubectl and client libraries send),
    /// otherwise from the query parameters `gracePeriodSeconds`,
    /// `propagationPolicy`, `orphanDependents` and `dryRun` (as Kubernetes:
    /// a body replaces the query).
    ///
    /// # Errors
    /// [`OptionsError`] for malformed values, an unknown policy, or both
    /// `orphanDependents` and `propagationPolicy`.
    pub fn from_request(
        body: Option<&Value>,
        query: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, OptionsError> {
        let source: Map<String, Value> = match body {
            Some(Value::Object(map)) => map.clone(),
            Some(Value::Null) | None => query
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
            Some(_) => {
                return Err(OptionsError::BadRequest(
                    "the body of a DELETE must be a DeleteOptions object".to_owned(),
                ));
            }
        };
        let get = |field: &str| source.get(field).unwrap_or(&Value::Null);
        let grace_period_seconds = int_of(get("gracePeriodSeconds"), "gracePeriodSeconds")?;
        let orphan = bool_of(get("orphanDependents"), "orphanDependents")?;
        let policy = match get("propagationPolicy") {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Propagation::parse(s).ok_or_else(|| {
                OptionsError::Invalid(vec![FieldError::not_supported(
                    "propagationPolicy",
                    s,
                    &["Foreground", "Background", "Orphan"],
                )])
            })?),
            other => {
                return Err(OptionsError::BadRequest(format!(
                    "propagationPolicy must be a string, got {other}"
                )));
            }
        };
        let propagation = match (orphan, policy) {
            (Some(_), Some(_)) => {
                return Err(OptionsError::Invalid(vec![FieldError::invalid(
                    "propagationPolicy",
                    policy.map(Propagation::as_str).unwrap_or_default(),
                    "orphanDependents and deletionPropagation cannot be both set",
                )]));
            }
            (Some(true), None) => Some(Propagation::Orphan),
            (Some(false), None) => Some(Propagation::Background),
            (None, policy) => policy,
        };
        let dry_run = match get("dryRun") {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => true,
        };
        let preconditions = match source.get("preconditions") {
            None | Some(Value::Null) => Preconditions::default(),
            Some(p) => {
                let resource_version = match p.get("resourceVersion").and_then(Value::as_str) {
                    None | Some("") => None,
                    Some(rv) => Some(rv.parse().map_err(|_| {
                        OptionsError::BadRequest(format!(
                            "invalid preconditions.resourceVersion {rv:?}"
                        ))
                    })?),
                };
                Preconditions {
                    uid: p
                        .get("uid")
                        .and_then(Value::as_str)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned),
                    resource_version,
                }
            }
        };
        Ok(DeleteOptions {
            preconditions,
            grace_period_seconds,
            propagation,
            dry_run,
        })
    }

    /// Options that delete at once with background propagation (what the
    /// namespace cascade uses).
    pub fn background() -> Self {
        DeleteOptions {
            propagation: Some(Propagation::Background),
            ..DeleteOptions::default()
        }
    }
}

/// What the server knows about an object being deleted, beyond its JSON.
#[derive(Clone, Copy, Debug)]
pub struct DeleteContext {
    /// The time of the request.
    pub now: DateTime<Utc>,
    /// The kind deletes gracefully (Pods).
    pub graceful_kind: bool,
    /// For a bound pod: whether its node still exists.
    pub node_exists: bool,
    /// The propagation policy after [`effective_propagation`].
    pub propagation: Propagation,
    /// Whether any object names this one as its owner (asked only for
    /// `Foreground`).
    pub has_dependents: bool,
}

/// The store write a delete needs.
#[derive(Clone, Debug, PartialEq)]
pub enum DeletePlan {
    /// Remove the object now.
    Remove,
    /// Store this object (it stays, terminating).
    Update(Value),
    /// Nothing changes (already terminating; the grace period was not
    /// shortened).
    Unchanged,
}

/// `metadata.finalizers`.
pub fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn deletion_grace(object: &Value) -> Option<i64> {
    object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
}

/// Whether the object has a `deletionTimestamp`.
pub fn is_terminating(object: &Value) -> bool {
    meta::meta_str(object, "deletionTimestamp").is_some()
}

/// The policy that applies: the requested one, else what the object's
/// finalizers already ask for, else the kind's default.
pub fn effective_propagation(
    object: &Value,
    requested: Option<Propagation>,
    default: Propagation,
) -> Propagation {
    if let Some(policy) = requested {
        return policy;
    }
    let finalizers = finalizers_of(object);
    if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        Propagation::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        Propagation::Foreground
    } else {
        default
    }
}

/// The grace period of a pod being deleted (`CheckGracefulDelete`): 0 for
/// a pod that no agent will stop.
pub fn pod_grace_period(pod: &Value, requested: Option<i64>, node_exists: bool) -> i64 {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished || !node_exists {
        return 0;
    }
    let period = requested.unwrap_or_else(|| {
        pod.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
    });
    if period < 0 { 1 } else { period }
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::from(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn set_finalizers(object: &mut Value, finalizers: &[String]) {
    let meta = meta::metadata_mut(object);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), Value::from(finalizers.to_vec()));
    }
}

/// What a DELETE does.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The write to the object.
    pub plan: DeletePlan,
    /// The server must first remove the dependents' references to it.
    pub orphan_dependents: bool,
}

/// Decides what a DELETE does to `object` (see the module docs).
pub fn decide(object: &Value, options: &DeleteOptions, ctx: &DeleteContext) -> Decision {
    match plan(object, options, ctx) {
        // Graceful deletion is pending: nothing else happens either.
        None => Decision {
            plan: DeletePlan::Unchanged,
            orphan_dependents: false,
        },
        Some(plan) => Decision {
            plan,
            orphan_dependents: ctx.propagation == Propagation::Orphan,
        },
    }
}

/// The store write of a DELETE; `None` while a graceful deletion is
/// pending and not shortened.
fn plan(object: &Value, options: &DeleteOptions, ctx: &DeleteContext) -> Option<DeletePlan> {
    // Negative grace periods read as 1 s, as in Kubernetes.
    let requested_grace = options
        .grace_period_seconds
        .map(|g| if g < 0 { 1 } else { g });
    let mut new = object.clone();
    let mut grace_now: Option<i64> = None;
    if is_terminating(object) {
        match deletion_grace(object) {
            Some(current) if current > 0 => match requested_grace {
                Some(shorter) if shorter < current => {
                    let requested_at = meta::meta_str(object, "deletionTimestamp")
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc) - Duration::seconds(current))
                        .unwrap_or(ctx.now);
                    let meta = meta::metadata_mut(&mut new);
                    meta.insert(
                        "deletionTimestamp".into(),
                        timestamp(requested_at + Duration::seconds(shorter)),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), Value::from(shorter));
                    grace_now = Some(shorter);
                }
                // Graceful deletion is pending; finalizers cannot be
                // changed through DeleteOptions any more.
                _ => return None,
            },
            // Waiting for finalizers only: fall through to the finalizer
            // edits below (a later delete may change the policy).
            _ => {}
        }
    } else if ctx.graceful_kind {
        let period = pod_grace_period(object, requested_grace, ctx.node_exists);
        if period > 0 {
            let meta = meta::metadata_mut(&mut new);
            meta.insert(
                "deletionTimestamp".into(),
                timestamp(ctx.now + Duration::seconds(period)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), Value::from(period));
            if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
                && generation > 0
            {
                meta.insert("generation".into(), Value::from(generation + 1));
            }
            grace_now = Some(period);
        }
    }
    // The propagation finalizers: both removed, then added back as the
    // policy says (Orphan is carried out by the server, so it never stays).
    let mut finalizers: Vec<String> = finalizers_of(object)
        .into_iter()
        .filter(|f| f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER)
        .collect();
    if ctx.propagation == Propagation::Foreground && ctx.has_dependents {
        finalizers.push(FOREGROUND_FINALIZER.to_owned());
    }
    set_finalizers(&mut new, &finalizers);
    if !finalizers.is_empty() {
        if !is_terminating(&new) {
            // markAsDeleting: no grace, waiting for finalizers.
            let meta = meta::metadata_mut(&mut new);
            meta.insert("deletionTimestamp".into(), timestamp(ctx.now));
            meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
        }
        return Some(if meta::same_object(object, &new) {
            DeletePlan::Unchanged
        } else {
            DeletePlan::Update(new)
        });
    }
    Some(match grace_now {
        Some(grace) if grace > 0 => DeletePlan::Update(new),
        _ => DeletePlan::Remove,
    })
}

/// Whether an update turns into the removal of the object: it is being
/// deleted with no grace period left and the update leaves no finalizer
/// (`shouldDeleteDuringUpdate`).
pub fn removed_by_update(old: &Value, new: &Value) -> bool {
    is_terminating(old) && finalizers_of(new).is_empty() && deletion_grace(old).unwrap_or(0) == 0
}

/// An update may not add finalizers to an object being deleted.
pub fn check_finalizers_update(old: &Value, new: &Value) -> Option<FieldError> {
    if !is_terminating(old) {
        return None;
    }
    let before = finalizers_of(old);
    let added: Vec<String> = finalizers_of(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    (!added.is_empty()).then(|| {
        let listed: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
        FieldError::forbidden(
            "metadata.finalizers",
            format!(
                "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                listed.join(", ")
            ),
        )
    })
}

/// Whether `object` names an owner with this uid.
pub fn is_owned_by(object: &Value, owner_uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

/// `object` without its ownerReferences to `owner_uid` (the field removed
/// when none remain).
pub fn without_owner(object: &Value, owner_uid: &str) -> Value {
    let mut new = object.clone();
    let meta = meta::metadata_mut(&mut new);
    let kept: Vec<Value> = meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if kept.is_empty() {
        meta.remove("ownerReferences");
    } else {
        meta.insert("ownerReferences".into(), Value::from(kept));
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn ctx(graceful: bool) -> DeleteContext {
        DeleteContext {
            now: at("2026-01-01T00:00:00Z"),
            graceful_kind: graceful,
            node_exists: true,
            propagation: Propagation::Background,
            has_dependents: false,
        }
    }

    fn bound_pod() -> Value {
        json!({"metadata": {"name": "p", "generation": 1},
               "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 20},
               "status": {"phase": "Running"}})
    }

    fn grace(seconds: i64) -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: Some(seconds),
            ..DeleteOptions::default()
        }
    }

    fn plan_of(object: &Value, options: &DeleteOptions, ctx: &DeleteContext) -> DeletePlan {
        decide(object, options, ctx).plan
    }

    fn updated(plan: DeletePlan) -> Value {
        match plan {
            DeletePlan::Update(v) => v,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn bound_pod_is_deleted_gracefully_with_its_own_grace_period() {
        let v = updated(plan_of(&bound_pod(), &DeleteOptions::default(), &ctx(true)));
        assert_eq!(v["metadata"]["deletionTimestamp"], "2026-01-01T00:00:20Z");
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 20);
        assert_eq!(v["metadata"]["generation"], 2);
        let v = updated(plan_of(&bound_pod(), &grace(5), &ctx(true)));
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 5);
        let mut no_grace = bound_pod();
        no_grace["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("terminationGracePeriodSeconds");
        let v = updated(plan_of(&no_grace, &DeleteOptions::default(), &ctx(true)));
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 30);
        let v = updated(plan_of(&bound_pod(), &grace(-7), &ctx(true)));
        assert_eq!(
            v["metadata"]["deletionGracePeriodSeconds"], 1,
            "negative reads as 1"
        );
    }

    #[test]
    fn pods_nobody_will_stop_go_at_once() {
        let opts = DeleteOptions::default();
        assert_eq!(
            plan_of(&bound_pod(), &grace(0), &ctx(true)),
            DeletePlan::Remove
        );
        let mut unbound = bound_pod();
        unbound["spec"]["nodeName"] = json!("");
        assert_eq!(plan_of(&unbound, &opts, &ctx(true)), DeletePlan::Remove);
        for phase in ["Succeeded", "Failed"] {
            let mut done = bound_pod();
            done["status"]["phase"] = json!(phase);
            assert_eq!(plan_of(&done, &opts, &ctx(true)), DeletePlan::Remove);
        }
        let gone_node = DeleteContext {
            node_exists: false,
            ..ctx(true)
        };
        assert_eq!(plan_of(&bound_pod(), &opts, &gone_node), DeletePlan::Remove);
        assert_eq!(
            plan_of(&bound_pod(), &opts, &ctx(false)),
            DeletePlan::Remove,
            "other kinds have no grace period"
        );
    }

    #[test]
    fn second_delete_only_shortens() {
        let first = updated(plan_of(&bound_pod(), &grace(20), &ctx(true)));
        let later = DeleteContext {
            now: at("2026-01-01T00:00:05Z"),
            ..ctx(true)
        };
        assert_eq!(plan_of(&first, &grace(60), &later), DeletePlan::Unchanged);
        assert_eq!(
            plan_of(&first, &DeleteOptions::default(), &later),
            DeletePlan::Unchanged
        );
        let shorter = updated(plan_of(&first, &grace(10), &later));
        assert_eq!(
            shorter["metadata"]["deletionTimestamp"], "2026-01-01T00:00:10Z",
            "counted from the first request"
        );
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 10);
        assert_eq!(plan_of(&first, &grace(0), &later), DeletePlan::Remove);
    }

    #[test]
    fn finalizers_hold_the_object() {
        let cm = json!({"metadata": {"name": "c", "finalizers": ["example.com/hold"]}});
        let v = updated(plan_of(&cm, &DeleteOptions::default(), &ctx(false)));
        assert_eq!(v["metadata"]["deletionTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(
            plan_of(&v, &DeleteOptions::default(), &ctx(false)),
            DeletePlan::Unchanged
        );
        assert!(!removed_by_update(&v, &v));
        let mut released = v.clone();
        set_finalizers(&mut released, &[]);
        assert!(removed_by_update(&v, &released));
        assert!(!removed_by_update(&cm, &json!({"metadata": {}})));

        // A pod with a finalizer: graceful first, then the agent's grace-0
        // delete leaves it waiting for the finalizer.
        let mut pod = bound_pod();
        pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
        let terminating = updated(plan_of(&pod, &DeleteOptions::default(), &ctx(true)));
        assert!(
            !removed_by_update(&terminating, &json!({"metadata": {}})),
            "grace left"
        );
        let waiting = updated(plan_of(&terminating, &grace(0), &ctx(true)));
        assert_eq!(waiting["metadata"]["deletionGracePeriodSeconds"], 0);
        assert!(removed_by_update(&waiting, &json!({"metadata": {}})));
    }

    #[test]
    fn propagation_finalizers() {
        let rs = json!({"metadata": {"name": "rs", "uid": "u1"}});
        let fg = DeleteContext {
            propagation: Propagation::Foreground,
            has_dependents: true,
            ..ctx(false)
        };
        let v = updated(plan_of(&rs, &DeleteOptions::default(), &fg));
        assert_eq!(v["metadata"]["finalizers"], json!([FOREGROUND_FINALIZER]));
        assert!(is_terminating(&v));
        let lonely = DeleteContext {
            has_dependents: false,
            ..fg
        };
        assert_eq!(
            plan_of(&rs, &DeleteOptions::default(), &lonely),
            DeletePlan::Remove
        );
        // Background on an object waiting for foreground deletion drops
        // the finalizer (and so removes it), as in Kubernetes.
        assert_eq!(
            plan_of(&v, &DeleteOptions::default(), &ctx(false)),
            DeletePlan::Remove
        );
        let orphan_finalizer = json!({"metadata": {"finalizers": ["orphan"]}});
        assert_eq!(
            effective_propagation(&orphan_finalizer, None, Propagation::Background),
            Propagation::Orphan
        );
        assert_eq!(
            effective_propagation(
                &orphan_finalizer,
                Some(Propagation::Foreground),
                Propagation::Background
            ),
            Propagation::Foreground
        );
        assert_eq!(
            effective_propagation(&rs, None, Propagation::Orphan),
            Propagation::Orphan
        );
        let orphan = DeleteContext {
            propagation: Propagation::Orphan,
            ..ctx(false)
        };
        let decision = decide(&orphan_finalizer, &DeleteOptions::default(), &orphan);
        assert_eq!(
            decision.plan,
            DeletePlan::Remove,
            "the orphan finalizer is carried out by the server"
        );
        assert!(decision.orphan_dependents);
        // A pending graceful deletion is not touched, and orphans nothing.
        let terminating = updated(plan_of(&bound_pod(), &DeleteOptions::default(), &ctx(true)));
        let pod_orphan = DeleteContext {
            propagation: Propagation::Orphan,
            ..ctx(true)
        };
        let decision = decide(&terminating, &DeleteOptions::default(), &pod_orphan);
        assert_eq!(decision.plan, DeletePlan::Unchanged);
        assert!(!decision.orphan_dependents);
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let live = json!({"metadata": {"finalizers": ["a"]}});
        let more = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert!(check_finalizers_update(&live, &more).is_none());
        let deleting = json!({"metadata": {"finalizers": ["a"], "deletionTimestamp": "t"}});
        let err = check_finalizers_update(&deleting, &more).expect("forbidden");
        assert!(err.to_string().contains(r#"[]string{"b"}"#), "{err}");
        assert!(check_finalizers_update(&deleting, &json!({"metadata": {}})).is_none());
    }

    #[test]
    fn owner_references_are_removed_by_uid() {
        let pod = json!({"metadata": {"ownerReferences": [{"uid": "a", "name": "x"}, {"uid": "b", "name": "y"}]}});
        assert!(is_owned_by(&pod, "a") && !is_owned_by(&pod, "c"));
        let one = without_owner(&pod, "a");
        assert_eq!(
            one["metadata"]["ownerReferences"],
            json!([{"uid": "b", "name": "y"}])
        );
        let none = without_owner(&one, "b");
        assert_eq!(none["metadata"].get("ownerReferences"), None);
    }

    #[test]
    fn options_from_body_or_query() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let o = DeleteOptions::from_request(
            Some(&json!({"kind": "DeleteOptions", "gracePeriodSeconds": 5, "propagationPolicy": "Foreground",
                         "preconditions": {"uid": "u", "resourceVersion": "7"}})),
            &q(&[("gracePeriodSeconds", "99")]),
        )
        .expect("parses");
        assert_eq!(o.grace_period_seconds, Some(5), "the body wins");
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        assert_eq!(o.preconditions.uid.as_deref(), Some("u"));
        assert_eq!(o.preconditions.resource_version, Some(7));
        let o = DeleteOptions::from_request(
            None,
            &q(&[("gracePeriodSeconds", "0"), ("orphanDependents", "true")]),
        )
        .expect("parses");
        assert_eq!(o.grace_period_seconds, Some(0));
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        assert!(matches!(
            DeleteOptions::from_request(Some(&json!({"propagationPolicy": "Sideways"})), &q(&[])),
            Err(OptionsError::Invalid(_))
        ));
        assert!(matches!(
            DeleteOptions::from_request(
                Some(&json!({"propagationPolicy": "Orphan", "orphanDependents": true})),
                &q(&[])
            ),
            Err(OptionsError::Invalid(_))
        ));
        assert!(matches!(
            DeleteOptions::from_request(None, &q(&[("gracePeriodSeconds", "soon")])),
            Err(OptionsError::BadRequest(_))
        ));
        assert!(
            DeleteOptions::from_request(Some(&json!({"dryRun": ["All"]})), &q(&[]))
                .expect("parses")
                .dry_run
        );
    }
}
