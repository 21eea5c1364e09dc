//! Pod state as workload controllers read it, with Kubernetes' rules:
//! active, ready, available (ready for `minReadySeconds`), and the
//! `ActivePods` order that decides which pods a scale-down removes first.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A pod that counts toward a controller's replicas: not finished
/// (`Succeeded`/`Failed`) and not being deleted (Kubernetes'
/// `FilterActivePods`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod became ready: the `Ready=True` condition's
/// `lastTransitionTime` (the Unix epoch if the agent did not set it).
/// `None` when not ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// Ready for at least `min_ready_seconds` at `now` (Kubernetes'
/// `IsPodAvailable`; with 0 every ready pod is available).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// When a ready pod that is not yet available becomes available, so a
/// controller can requeue for that moment.
pub fn available_at(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    let since = ready_since(pod)?;
    let at = since + SignedDuration::from_secs(i64::from(min_ready_seconds.max(0)));
    (at > now).then_some(at)
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Pending, and anything else, like Go's map default of 0.
        _ => 0,
    }
}

fn node_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// "More recent first", with missing times first (Go's `afterOrZero`).
fn recent_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Kubernetes' `ActivePods` order: pods that are cheaper to lose sort
/// first. Unassigned < assigned; Pending < Unknown < Running; not ready <
/// ready; ready more recently < ready longer; more container restarts <
/// fewer; created more recently < created earlier; then by name so the
/// order is total.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let (a_assigned, b_assigned) = (node_assigned(a), node_assigned(b));
    if a_assigned != b_assigned {
        return a_assigned.cmp(&b_assigned);
    }
    let by_phase = phase_rank(a).cmp(&phase_rank(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (a_ready, b_ready) = (ready_since(a), ready_since(b));
    if a_ready.is_some() != b_ready.is_some() {
        return a_ready.is_some().cmp(&b_ready.is_some());
    }
    if a_ready.is_some() {
        let by_ready = recent_first(a_ready, b_ready);
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    recent_first(created(a), created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testkit::{at, pod_named, set_phase, set_ready};

    #[test]
    fn active_excludes_finished_and_deleting() {
        let mut p = pod_named("a");
        assert!(is_active(&p));
        set_phase(&mut p, "Succeeded");
        assert!(!is_active(&p));
        set_phase(&mut p, "Failed");
        assert!(!is_active(&p));
        let mut d = pod_named("b");
        d.metadata.deletion_timestamp = Some(at(1));
        assert!(!is_active(&d));
    }

    #[test]
    fn availability_honours_min_ready_seconds() {
        let mut p = pod_named("a");
        assert!(!is_available(&p, 0, Timestamp::UNIX_EPOCH));
        set_ready(&mut p, 100);
        let t = |s| at(s).0;
        assert!(is_available(&p, 0, t(100)));
        assert!(!is_available(&p, 10, t(109)));
        assert!(is_available(&p, 10, t(110)));
        assert_eq!(available_at(&p, 10, t(105)), Some(t(110)));
        assert_eq!(available_at(&p, 10, t(110)), None);
    }

    fn sorted(mut pods: Vec<Pod>) -> Vec<String> {
        pods.sort_by(deletion_order);
        pods.into_iter()
            .map(|p| p.metadata.name.unwrap_or_default())
            .collect()
    }

    #[test]
    fn unassigned_before_assigned() {
        let mut assigned = pod_named("assigned");
        assigned.spec.get_or_insert_default().node_name = Some("n1".into());
        set_phase(&mut assigned, "Pending");
        let unassigned = pod_named("unassigned");
        assert_eq!(
            sorted(vec![assigned, unassigned]),
            ["unassigned", "assigned"]
        );
    }

    #[test]
    fn pending_before_unknown_before_running() {
        let mk = |name: &str, phase: &str| {
            let mut p = pod_named(name);
            p.spec.get_or_insert_default().node_name = Some("n".into());
            set_phase(&mut p, phase);
            p
        };
        assert_eq!(
            sorted(vec![
                mk("r", "Running"),
                mk("u", "Unknown"),
                mk("p", "Pending")
            ]),
            ["p", "u", "r"]
        );
    }

    #[test]
    fn not_ready_before_ready_and_recently_ready_first() {
        let mk = |name: &str, ready: Option<i64>| {
            let mut p = pod_named(name);
            p.spec.get_or_insert_default().node_name = Some("n".into());
            set_phase(&mut p, "Running");
            if let Some(t) = ready {
                set_ready(&mut p, t);
            }
            p
        };
        assert_eq!(
            sorted(vec![
                mk("old-ready", Some(10)),
                mk("new-ready", Some(50)),
                mk("not-ready", None)
            ]),
            ["not-ready", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn more_restarts_then_newer_first() {
        use k8s_openapi::api::core::v1::ContainerStatus;
        let mk = |name: &str, restarts: i32, created: i64| {
            let mut p = pod_named(name);
            p.metadata.creation_timestamp = Some(at(created));
            p.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
                name: "c".into(),
                restart_count: restarts,
                ..Default::default()
            }]);
            p
        };
        assert_eq!(
            sorted(vec![mk("old", 0, 1), mk("new", 0, 5), mk("crashy", 3, 1)]),
            ["crashy", "new", "old"]
        );
        // No creation time sorts first; equal everything falls back to name.
        let mut none = pod_named("zz");
        none.metadata.creation_timestamp = None;
        assert_eq!(sorted(vec![mk("a", 0, 5), none]), ["zz", "a"]);
        assert_eq!(sorted(vec![mk("b", 0, 5), mk("a", 0, 5)]), ["a", "b"]);
    }
}
