//! One scheduling decision: filter every node, score the feasible ones,
//! pick the best; or explain, kube-scheduler style, why none fits.
//!
//! [`select`] works on prepared [`NodeInfo`]s (what the
//! [`SchedulerCache`](super::cache::SchedulerCache) keeps current);
//! [`schedule`] is the same decision from plain API objects, rebuilding
//! every node's totals from the bound pods first.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::filter::{FilterReason, filter};
use super::info::{NodeFacts, NodeInfo, PodInfo, PodUsage, occupies_node};
use super::score::{max_owner_count, score};

/// Message when there are no nodes at all (kube-scheduler's wording).
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// No node can take the pod. `message` is what goes into the pod's
/// `PodScheduled` condition, e.g. `0/3 nodes are available: 2 Insufficient
/// cpu, 1 node(s) had untolerated taint {key: value}.`
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    /// The human-readable reason.
    pub message: String,
}

/// Builds the aggregated message: for `total` nodes, how many nodes gave
/// each reason, most frequent first, ties alphabetical. A node that failed
/// for several reasons (e.g. cpu and memory) counts under each.
pub fn unschedulable_message<'a>(
    total: usize,
    reasons: impl IntoIterator<Item = &'a FilterReason>,
) -> String {
    if total == 0 {
        return NO_NODES_MESSAGE.to_owned();
    }
    let mut histogram: HashMap<String, usize> = HashMap::new();
    for reason in reasons {
        *histogram.entry(reason.to_string()).or_default() += 1;
    }
    let mut counted: Vec<(String, usize)> = histogram.into_iter().collect();
    counted.sort_by(|(ra, na), (rb, nb)| nb.cmp(na).then_with(|| ra.cmp(rb)));
    let parts: Vec<String> = counted.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{total} nodes are available.")
    } else {
        format!("0/{total} nodes are available: {}.", parts.join(", "))
    }
}

/// Picks the node for `pod` among `nodes` (in name order for the
/// tie-break to be by name).
///
/// # Errors
/// [`Unschedulable`] with the aggregated reasons when no node passes the
/// filters.
pub fn select<'a>(
    pod: &PodInfo,
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
) -> Result<String, Unschedulable> {
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut reasons: Vec<FilterReason> = Vec::new();
    let mut total = 0;
    for node in nodes {
        total += 1;
        let failed = filter(pod, node);
        if failed.is_empty() {
            feasible.push(node);
        } else {
            reasons.extend(failed);
        }
    }
    let max = max_owner_count(pod, feasible.iter().copied());
    feasible
        .iter()
        .map(|n| (score(pod, n, max), *n))
        // Highest score; among equals the smallest name.
        .max_by(|(sa, na), (sb, nb)| sa.cmp(sb).then_with(|| nb.facts.name.cmp(&na.facts.name)))
        .map(|(_, n)| n.facts.name.clone())
        .ok_or_else(|| Unschedulable {
            message: unschedulable_message(total, &reasons),
        })
}

/// Builds the [`NodeInfo`] of every node from the pods bound to them
/// (pods bound to unknown nodes are ignored), keyed by node name.
pub fn node_infos(
    nodes: &[Node],
    pods_by_node: &BTreeMap<String, Vec<Pod>>,
) -> BTreeMap<String, NodeInfo> {
    let mut infos: BTreeMap<String, NodeInfo> = nodes
        .iter()
        .map(|n| {
            let facts = NodeFacts::from_node(n);
            (facts.name.clone(), NodeInfo::new(facts))
        })
        .collect();
    for (node, pods) in pods_by_node {
        let Some(info) = infos.get_mut(node) else {
            continue;
        };
        for pod in pods.iter().filter(|p| occupies_node(p).is_some()) {
            info.add(&PodUsage::of(pod));
        }
    }
    infos
}

/// Schedules `pod` onto one of `nodes`, given the pods already bound to
/// each node (by node name). Pure: the same input always gives the same
/// node.
///
/// # Errors
/// [`Unschedulable`] when no node fits, or when the pod itself is
/// malformed (unparseable requests or node selector).
pub fn schedule(
    pod: &Pod,
    nodes: &[Node],
    pods_by_node: &BTreeMap<String, Vec<Pod>>,
) -> Result<String, Unschedulable> {
    let info = PodInfo::from_pod(pod).map_err(|e| Unschedulable {
        message: invalid_pod_message(&e),
    })?;
    select(&info, node_infos(nodes, pods_by_node).values())
}

/// The message for a pod the scheduler cannot even evaluate.
pub fn invalid_pod_message(error: &super::info::PodInfoError) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testkit::{bind, node, owned_pod, pod, taint};

    fn by_node(pods: &[Pod]) -> BTreeMap<String, Vec<Pod>> {
        let mut m: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for p in pods {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                m.entry(n).or_default().push(p.clone());
            }
        }
        m
    }

    #[test]
    fn message_aggregates_and_sorts_reasons() {
        let small1 = node("a", "1", "8Gi");
        let small2 = node("b", "1", "8Gi");
        let mut tainted = node("c", "8", "8Gi");
        tainted.spec.get_or_insert_default().taints =
            Some(vec![taint("key", Some("value"), "NoSchedule")]);
        let err = schedule(
            &pod("p", "2", "1Gi"),
            &[small1, small2, tainted],
            &BTreeMap::new(),
        )
        .expect_err("nothing fits");
        assert_eq!(
            err.message,
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {key: value}."
        );
    }

    #[test]
    fn message_counts_each_reason_of_a_node_and_breaks_ties_alphabetically() {
        let nodes = [node("a", "1", "1Gi"), node("b", "1", "1Gi")];
        let err = schedule(&pod("p", "2", "2Gi"), &nodes, &BTreeMap::new()).expect_err("too big");
        assert_eq!(
            err.message,
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
        );
        let mut not_ready = node("c", "8", "8Gi");
        not_ready.status.as_mut().expect("status").conditions = None;
        let mut cordoned = node("d", "8", "8Gi");
        cordoned.spec.get_or_insert_default().unschedulable = Some(true);
        let err = schedule(
            &pod("p", "1", "1Gi"),
            &[not_ready, cordoned],
            &BTreeMap::new(),
        )
        .expect_err("none");
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn no_nodes_message() {
        let err = schedule(&pod("p", "1", "1Gi"), &[], &BTreeMap::new()).expect_err("no nodes");
        assert_eq!(err.message, NO_NODES_MESSAGE);
    }

    #[test]
    fn malformed_pod_is_unschedulable_with_cause() {
        let mut p = pod("p", "1", "1Gi");
        p.spec.as_mut().expect("spec").containers[0]
            .resources
            .as_mut()
            .expect("resources")
            .requests
            .as_mut()
            .expect("requests")
            .insert(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()),
            );
        let err = schedule(&p, &[node("a", "4", "8Gi")], &BTreeMap::new()).expect_err("bad");
        assert!(
            err.message.contains("invalid resource request"),
            "{}",
            err.message
        );
        assert!(err.message.contains("lots"), "{}", err.message);
    }

    #[test]
    fn picks_feasible_node_even_if_others_score_higher() {
        let nodes = [node("big", "64", "64Gi"), node("small", "2", "2Gi")];
        let mut big = nodes[0].clone();
        big.spec.get_or_insert_default().taints = Some(vec![taint("gpu", None, "NoSchedule")]);
        let got = schedule(
            &pod("p", "1", "1Gi"),
            &[big, nodes[1].clone()],
            &BTreeMap::new(),
        )
        .expect("fits");
        assert_eq!(got, "small");
    }

    #[test]
    fn ties_go_to_the_first_name() {
        let nodes = [
            node("n3", "4", "8Gi"),
            node("n1", "4", "8Gi"),
            node("n2", "4", "8Gi"),
        ];
        assert_eq!(
            schedule(&pod("p", "1", "1Gi"), &nodes, &BTreeMap::new()).expect("fits"),
            "n1"
        );
    }

    #[test]
    fn replicas_of_one_owner_spread_evenly() {
        let nodes = [
            node("n1", "4", "8Gi"),
            node("n2", "4", "8Gi"),
            node("n3", "4", "8Gi"),
        ];
        let mut bound: Vec<Pod> = Vec::new();
        for i in 0..6 {
            let p = owned_pod(&format!("web-{i}"), "100m", "64Mi", "rs-1");
            let n = schedule(&p, &nodes, &by_node(&bound)).expect("fits");
            bound.push(bind(p, &n));
        }
        let per_node = by_node(&bound);
        let counts: Vec<usize> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| per_node.get(*n).map_or(0, Vec::len))
            .collect();
        assert_eq!(counts, vec![2, 2, 2]);
    }

    #[test]
    fn finished_pods_free_their_resources() {
        let nodes = [node("n1", "1", "8Gi")];
        let mut done = bind(pod("old", "1", "1Gi"), "n1");
        let p = pod("p", "1", "1Gi");
        assert!(schedule(&p, &nodes, &by_node(std::slice::from_ref(&done))).is_err());
        done.status.get_or_insert_default().phase = Some("Succeeded".into());
        assert_eq!(schedule(&p, &nodes, &by_node(&[done])).expect("fits"), "n1");
    }

    #[test]
    fn pods_bound_to_unknown_nodes_are_ignored() {
        let nodes = [node("n1", "1", "8Gi")];
        let ghost = bind(pod("g", "1", "1Gi"), "gone");
        assert_eq!(
            schedule(&pod("p", "1", "1Gi"), &nodes, &by_node(&[ghost])).expect("fits"),
            "n1"
        );
    }
}
