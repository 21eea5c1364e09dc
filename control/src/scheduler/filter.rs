//! Filtering: can this pod run on this node at all? Rules and messages
//! follow kube-scheduler's filter plugins, checked in its order, stopping
//! at the first rule that fails (whose reasons — possibly several, e.g.
//! both cpu and memory short — are returned):
//!
//! 1. node `Ready` condition `True` (Skiff checks readiness directly; the
//!    node lifecycle controller also taints unready nodes);
//! 2. `NodeUnschedulable`: `spec.unschedulable` unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule`;
//! 3. `TaintToleration`: every `NoSchedule`/`NoExecute` taint tolerated;
//! 4. `NodeAffinity`: `nodeSelector` and required node affinity;
//! 5. `NodeResourcesFit`: cpu, memory and pod count fit allocatable minus
//!    what bound pods request.

use std::fmt;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, Taint, Toleration};

use super::info::{NodeFacts, NodeInfo, PodInfo};

/// Taint key of a cordoned node (kube-scheduler treats `spec.unschedulable`
/// as this taint when checking tolerations).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node was filtered out. `Display` gives kube-scheduler's wording
/// as used in `0/3 nodes are available: ...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterReason {
    /// The node's Ready condition is not True.
    NotReady,
    /// The node is cordoned and the pod does not tolerate that.
    Unschedulable,
    /// The first `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    UntoleratedTaint {
        /// Taint key.
        key: String,
        /// Taint value (may be empty).
        value: String,
    },
    /// Labels or name do not satisfy `nodeSelector`/required node affinity.
    NodeSelectorMismatch,
    /// Not enough unrequested CPU.
    InsufficientCpu,
    /// Not enough unrequested memory.
    InsufficientMemory,
    /// The node already runs its allowed number of pods.
    TooManyPods,
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterReason::NotReady => f.write_str("node(s) were not ready"),
            FilterReason::Unschedulable => f.write_str("node(s) were unschedulable"),
            FilterReason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            FilterReason::NodeSelectorMismatch => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            FilterReason::InsufficientCpu => f.write_str("Insufficient cpu"),
            FilterReason::InsufficientMemory => f.write_str("Insufficient memory"),
            FilterReason::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`: effects must match unless the
/// toleration's is empty; keys must match unless the toleration's is
/// empty; `Exists` ignores the value, `Equal` (or no operator) compares
/// it. So `{operator: Exists}` with no key and no effect tolerates all.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first taint with an effect the scheduler honours (`NoSchedule`,
/// `NoExecute`; `PreferNoSchedule` is only a preference) that no
/// toleration tolerates.
pub fn first_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .find(|t| !tolerated(tolerations, t))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt compare integers; exactly one value, both sides must parse.
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(bound)) if op == "Gt" => v > bound,
                (Ok(v), Ok(bound)) => v < bound,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Kubernetes' required node affinity: the terms are ORed; within a term
/// all `matchExpressions` (on labels) and `matchFields` (only
/// `metadata.name`) must hold; a term with neither matches nothing.
pub fn node_selector_matches(selector: &NodeSelector, node: &NodeFacts) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                r.key == "metadata.name" && requirement_matches(r, Some(node.name.as_str()))
            })
    })
}

/// Checks `pod` against `node`; an empty result means the pod fits.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Vec<FilterReason> {
    let facts = &node.facts;
    if !facts.ready {
        return vec![FilterReason::NotReady];
    }
    if facts.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Default::default()
        };
        if !tolerated(&pod.tolerations, &cordon) {
            return vec![FilterReason::Unschedulable];
        }
    }
    if let Some(taint) = first_untolerated_taint(&facts.taints, &pod.tolerations) {
        return vec![FilterReason::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        }];
    }
    let selector_ok = pod
        .node_selector
        .as_ref()
        .is_none_or(|s| s.matches(&facts.labels));
    let affinity_ok = pod
        .required_affinity
        .as_ref()
        .is_none_or(|a| node_selector_matches(a, facts));
    if !selector_ok || !affinity_ok {
        return vec![FilterReason::NodeSelectorMismatch];
    }
    let mut reasons = Vec::new();
    if node.pod_count + 1 > facts.allowed_pods {
        reasons.push(FilterReason::TooManyPods);
    }
    let want = pod.requests.requests;
    // Like NodeResourcesFit, a zero request always fits, even on a node
    // that is already over-committed.
    if want.milli_cpu > 0 && facts.allocatable.milli_cpu - node.requested.milli_cpu < want.milli_cpu
    {
        reasons.push(FilterReason::InsufficientCpu);
    }
    if want.memory > 0 && facts.allocatable.memory - node.requested.memory < want.memory {
        reasons.push(FilterReason::InsufficientMemory);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testkit::{node, pod, taint, toleration};
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelectorTerm};

    fn info(n: &k8s_openapi::api::core::v1::Node) -> NodeInfo {
        NodeInfo::new(NodeFacts::from_node(n))
    }

    fn pinfo(p: &k8s_openapi::api::core::v1::Pod) -> PodInfo {
        PodInfo::from_pod(p).expect("valid pod")
    }

    #[test]
    fn ready_node_with_room_fits() {
        let n = info(&node("n1", "4", "8Gi"));
        assert!(filter(&pinfo(&pod("p", "1", "1Gi")), &n).is_empty());
    }

    #[test]
    fn node_not_ready_is_filtered() {
        let mut n = node("n1", "4", "8Gi");
        if let Some(c) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "Unknown".into();
        }
        assert_eq!(
            filter(&pinfo(&pod("p", "1", "1Gi")), &info(&n)),
            vec![FilterReason::NotReady]
        );
        // No conditions at all (freshly registered) is not ready either.
        n.status.as_mut().expect("status").conditions = None;
        assert_eq!(
            filter(&pinfo(&pod("p", "1", "1Gi")), &info(&n)),
            vec![FilterReason::NotReady]
        );
    }

    #[test]
    fn cordoned_node_is_filtered_unless_tolerated() {
        let mut n = node("n1", "4", "8Gi");
        n.spec.get_or_insert_default().unschedulable = Some(true);
        let mut p = pod("p", "1", "1Gi");
        assert_eq!(
            filter(&pinfo(&p), &info(&n)),
            vec![FilterReason::Unschedulable]
        );
        p.spec.as_mut().expect("spec").tolerations = Some(vec![toleration(
            Some(TAINT_UNSCHEDULABLE),
            "Exists",
            None,
            Some("NoSchedule"),
        )]);
        assert!(filter(&pinfo(&p), &info(&n)).is_empty());
    }

    #[test]
    fn cpu_shortage_counts_bound_pods() {
        let mut n = info(&node("n1", "2", "8Gi"));
        n.add(&pinfo(&pod("a", "1500m", "1Gi")).usage());
        assert_eq!(
            filter(&pinfo(&pod("p", "600m", "1Gi")), &n),
            vec![FilterReason::InsufficientCpu]
        );
        assert!(filter(&pinfo(&pod("p", "500m", "1Gi")), &n).is_empty());
    }

    #[test]
    fn memory_and_cpu_shortage_both_reported() {
        let n = info(&node("n1", "1", "1Gi"));
        assert_eq!(
            filter(&pinfo(&pod("p", "2", "2Gi")), &n),
            vec![
                FilterReason::InsufficientCpu,
                FilterReason::InsufficientMemory
            ]
        );
    }

    #[test]
    fn zero_request_fits_overcommitted_node() {
        let mut n = info(&node("n1", "1", "1Gi"));
        n.add(&pinfo(&pod("a", "1", "1Gi")).usage());
        assert!(filter(&pinfo(&pod("p", "0", "0")), &n).is_empty());
    }

    #[test]
    fn pod_count_limit() {
        let mut raw = node("n1", "4", "8Gi");
        raw.status
            .as_mut()
            .and_then(|s| s.allocatable.as_mut())
            .expect("allocatable")
            .insert(
                "pods".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let mut n = info(&raw);
        assert!(filter(&pinfo(&pod("p", "0", "0")), &n).is_empty());
        n.add(&pinfo(&pod("a", "0", "0")).usage());
        assert_eq!(
            filter(&pinfo(&pod("p", "0", "0")), &n),
            vec![FilterReason::TooManyPods]
        );
        n.remove(&pinfo(&pod("a", "0", "0")).usage());
        assert!(filter(&pinfo(&pod("p", "0", "0")), &n).is_empty());
    }

    #[test]
    fn node_selector_must_match_labels() {
        let mut raw = node("n1", "4", "8Gi");
        raw.metadata.labels = Some([("disk".to_owned(), "ssd".to_owned())].into());
        let mut p = pod("p", "1", "1Gi");
        p.spec.as_mut().expect("spec").node_selector =
            Some([("disk".to_owned(), "hdd".to_owned())].into());
        assert_eq!(
            filter(&pinfo(&p), &info(&raw)),
            vec![FilterReason::NodeSelectorMismatch]
        );
        p.spec.as_mut().expect("spec").node_selector =
            Some([("disk".to_owned(), "ssd".to_owned())].into());
        assert!(filter(&pinfo(&p), &info(&raw)).is_empty());
    }

    fn affinity(terms: Vec<NodeSelectorTerm>) -> Affinity {
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_fields_match_name() {
        let mut raw = node("n1", "4", "8Gi");
        raw.metadata.labels = Some(
            [
                ("zone".to_owned(), "a".to_owned()),
                ("gen".to_owned(), "5".to_owned()),
            ]
            .into(),
        );
        let facts = NodeFacts::from_node(&raw);
        let sel = |terms| NodeSelector {
            node_selector_terms: terms,
        };
        let by_name = |name: &str| NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &[name])]),
            ..Default::default()
        };
        let by_labels = |r: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(r),
            ..Default::default()
        };
        assert!(node_selector_matches(&sel(vec![by_name("n1")]), &facts));
        assert!(!node_selector_matches(&sel(vec![by_name("n2")]), &facts));
        assert!(node_selector_matches(
            &sel(vec![
                by_name("n2"),
                by_labels(vec![req("zone", "In", &["a", "b"])])
            ]),
            &facts
        ));
        assert!(!node_selector_matches(
            &sel(vec![by_labels(vec![req("zone", "NotIn", &["a"])])]),
            &facts
        ));
        assert!(node_selector_matches(
            &sel(vec![by_labels(vec![
                req("gen", "Gt", &["4"]),
                req("gen", "Lt", &["6"])
            ])]),
            &facts
        ));
        assert!(!node_selector_matches(
            &sel(vec![by_labels(vec![req("gen", "Gt", &["5"])])]),
            &facts
        ));
        assert!(node_selector_matches(
            &sel(vec![by_labels(vec![
                req("zone", "Exists", &[]),
                req("gpu", "DoesNotExist", &[])
            ])]),
            &facts
        ));
        // An empty term matches nothing; so does an empty term list.
        assert!(!node_selector_matches(
            &sel(vec![NodeSelectorTerm::default()]),
            &facts
        ));
        assert!(!node_selector_matches(&sel(vec![]), &facts));
        // Unknown field keys never match.
        let other_field = NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.uid", "In", &["n1"])]),
            ..Default::default()
        };
        assert!(!node_selector_matches(&sel(vec![other_field]), &facts));

        let mut p = pod("p", "1", "1Gi");
        p.spec.as_mut().expect("spec").affinity = Some(affinity(vec![by_name("n2")]));
        assert_eq!(
            filter(&pinfo(&p), &info(&raw)),
            vec![FilterReason::NodeSelectorMismatch]
        );
    }

    #[test]
    fn toleration_matching_rules() {
        let t = taint("k", Some("v"), "NoSchedule");
        // Equal: key and value must match.
        assert!(tolerates(
            &toleration(Some("k"), "Equal", Some("v"), Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &toleration(Some("k"), "Equal", Some("w"), Some("NoSchedule")),
            &t
        ));
        // No operator means Equal.
        assert!(tolerates(&toleration(Some("k"), "", Some("v"), None), &t));
        // Exists ignores the value.
        assert!(tolerates(&toleration(Some("k"), "Exists", None, None), &t));
        assert!(!tolerates(
            &toleration(Some("other"), "Exists", None, None),
            &t
        ));
        // Effect must match when given.
        assert!(!tolerates(
            &toleration(Some("k"), "Exists", None, Some("NoExecute")),
            &t
        ));
        // Empty key + Exists tolerates every taint of every effect.
        assert!(tolerates(&toleration(None, "Exists", None, None), &t));
        assert!(tolerates(
            &toleration(None, "Exists", None, None),
            &taint("x", None, "NoExecute")
        ));
        // ...but empty key + Exists + an effect only that effect.
        assert!(!tolerates(
            &toleration(None, "Exists", None, Some("NoExecute")),
            &t
        ));
        // Taint without a value equals an empty toleration value.
        assert!(tolerates(
            &toleration(Some("k"), "Equal", None, None),
            &taint("k", None, "NoSchedule")
        ));
        // Unknown operators tolerate nothing.
        assert!(!tolerates(
            &toleration(Some("k"), "Gt", Some("v"), None),
            &t
        ));
    }

    #[test]
    fn taints_filter_no_schedule_and_no_execute_but_not_prefer() {
        let mut raw = node("n1", "4", "8Gi");
        let p = pinfo(&pod("p", "1", "1Gi"));
        raw.spec.get_or_insert_default().taints =
            Some(vec![taint("soft", None, "PreferNoSchedule")]);
        assert!(filter(&p, &info(&raw)).is_empty());
        for effect in ["NoSchedule", "NoExecute"] {
            raw.spec.get_or_insert_default().taints =
                Some(vec![taint("dedicated", Some("db"), effect)]);
            assert_eq!(
                filter(&p, &info(&raw)),
                vec![FilterReason::UntoleratedTaint {
                    key: "dedicated".into(),
                    value: "db".into()
                }]
            );
        }
        let mut tolerant = pod("p", "1", "1Gi");
        tolerant.spec.as_mut().expect("spec").tolerations = Some(vec![toleration(
            Some("dedicated"),
            "Equal",
            Some("db"),
            Some("NoExecute"),
        )]);
        assert!(filter(&pinfo(&tolerant), &info(&raw)).is_empty());
    }

    #[test]
    fn first_failing_rule_wins() {
        // Tainted and too small: the taint (checked first) is the reason.
        let mut raw = node("n1", "1", "1Gi");
        raw.spec.get_or_insert_default().taints = Some(vec![taint("t", None, "NoSchedule")]);
        assert_eq!(
            filter(&pinfo(&pod("p", "2", "2Gi")), &info(&raw)),
            vec![FilterReason::UntoleratedTaint {
                key: "t".into(),
                value: String::new()
            }]
        );
    }

    #[test]
    fn reason_wording_matches_kube_scheduler() {
        assert_eq!(
            FilterReason::UntoleratedTaint {
                key: "node.kubernetes.io/not-ready".into(),
                value: String::new()
            }
            .to_string(),
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        );
        assert_eq!(
            FilterReason::InsufficientCpu.to_string(),
            "Insufficient cpu"
        );
        assert_eq!(
            FilterReason::NodeSelectorMismatch.to_string(),
            "node(s) didn't match Pod's node affinity/selector"
        );
    }
}
