//! Scoring: among the nodes a pod fits, which is best? Two scores, each
//! 0..=100, combined with weights:
//!
//! - [`least_allocated`] — kube-scheduler's `NodeResourcesFit` with the
//!   `LeastAllocated` strategy: the share of cpu and memory left free
//!   *after* placing the pod, averaged (equal weights); computed on
//!   non-zero requests so best-effort pods spread too;
//! - [`spread`] — like kube-scheduler's default spreading of one
//!   controller's replicas: a node with fewer pods of the pod's controller
//!   owner (by ownerReference uid) scores higher, normalised to the
//!   busiest feasible node.
//!
//! Spreading weighs [`SPREAD_WEIGHT`] times as much as resources, as
//! kube-scheduler weighs `PodTopologySpread` 2 : 1 over `NodeResourcesFit`.
//! Equal totals go to the node whose name sorts first, so the result is
//! deterministic.

use super::info::{NodeInfo, PodInfo};

/// Highest score of one rule.
pub const MAX_NODE_SCORE: i64 = 100;
/// Weight of [`least_allocated`].
pub const LEAST_ALLOCATED_WEIGHT: i64 = 1;
/// Weight of [`spread`].
pub const SPREAD_WEIGHT: i64 = 2;

fn free_share(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    let free = i128::from(allocatable - requested) * i128::from(MAX_NODE_SCORE);
    // In 0..=100 by construction; the cast cannot truncate.
    i64::try_from(free / i128::from(allocatable)).unwrap_or(0)
}

/// Least-allocated score of placing `pod` on `node`, 0..=100.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let requested = node.non_zero_requested + pod.requests.non_zero;
    let alloc = node.facts.allocatable;
    (free_share(requested.milli_cpu, alloc.milli_cpu) + free_share(requested.memory, alloc.memory))
        / 2
}

/// Spreading score, 0..=100: `100 * (max - count) / max` where `count` is
/// the node's pods of the same controller owner and `max` the highest such
/// count over the feasible nodes. Pods without a controller owner, and
/// owners with no pods yet, score 100 everywhere (no preference).
pub fn spread(pod: &PodInfo, node: &NodeInfo, max_owner_count: usize) -> i64 {
    let Some(uid) = pod.owner_uid.as_deref() else {
        return MAX_NODE_SCORE;
    };
    if max_owner_count == 0 {
        return MAX_NODE_SCORE;
    }
    let count = node.owner_count(uid).min(max_owner_count);
    let max = i64::try_from(max_owner_count).unwrap_or(i64::MAX);
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    MAX_NODE_SCORE * (max - count) / max
}

/// The highest same-owner pod count over `nodes` (0 for ownerless pods).
pub fn max_owner_count<'a>(pod: &PodInfo, nodes: impl IntoIterator<Item = &'a NodeInfo>) -> usize {
    let Some(uid) = pod.owner_uid.as_deref() else {
        return 0;
    };
    nodes
        .into_iter()
        .map(|n| n.owner_count(uid))
        .max()
        .unwrap_or(0)
}

/// The weighted total of both scores.
pub fn score(pod: &PodInfo, node: &NodeInfo, max_owner_count: usize) -> i64 {
    LEAST_ALLOCATED_WEIGHT * least_allocated(pod, node)
        + SPREAD_WEIGHT * spread(pod, node, max_owner_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::info::NodeFacts;
    use crate::scheduler::resources::{DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST};
    use crate::scheduler::testkit::{node, owned_pod, pod};

    fn info(name: &str, cpu: &str, mem: &str) -> NodeInfo {
        NodeInfo::new(NodeFacts::from_node(&node(name, cpu, mem)))
    }

    #[test]
    fn least_allocated_is_free_share_after_placement_averaged() {
        let n = info("n", "4", "8Gi");
        let p = PodInfo::from_pod(&pod("p", "1", "2Gi")).expect("pod");
        // cpu: (4000-1000)*100/4000 = 75; memory: (8-2)*100/8 = 75.
        assert_eq!(least_allocated(&p, &n), 75);
        let p = PodInfo::from_pod(&pod("p", "2", "2Gi")).expect("pod");
        // cpu 50, memory 75 -> 62 (integer average).
        assert_eq!(least_allocated(&p, &n), 62);
    }

    #[test]
    fn least_allocated_counts_bound_pods_and_prefers_emptier_nodes() {
        let empty = info("a", "4", "8Gi");
        let mut busy = info("b", "4", "8Gi");
        busy.add(
            &PodInfo::from_pod(&pod("x", "2", "4Gi"))
                .expect("pod")
                .usage(),
        );
        let p = PodInfo::from_pod(&pod("p", "1", "1Gi")).expect("pod");
        assert!(least_allocated(&p, &empty) > least_allocated(&p, &busy));
        // cpu (4000-3000)/4000 = 25, memory (8-5)/8 = 37 -> 31.
        assert_eq!(least_allocated(&p, &busy), 31);
    }

    #[test]
    fn least_allocated_uses_defaults_for_best_effort_pods() {
        let n = info("n", "1", "1Gi");
        let p = PodInfo::from_pod(&pod("p", "", "")).expect("pod");
        // Requests are zero, but scoring counts 100m and 200Mi.
        assert_eq!(p.requests.non_zero.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        let cpu = (1000 - DEFAULT_MILLI_CPU_REQUEST) * 100 / 1000;
        let mem = ((1 << 30) - DEFAULT_MEMORY_REQUEST) * 100 / (1 << 30);
        assert_eq!(least_allocated(&p, &n), (cpu + mem) / 2);
    }

    #[test]
    fn least_allocated_is_zero_when_over_or_no_capacity() {
        let p = PodInfo::from_pod(&pod("p", "8", "16Gi")).expect("pod");
        assert_eq!(least_allocated(&p, &info("n", "4", "8Gi")), 0);
        assert_eq!(least_allocated(&p, &info("n", "0", "0")), 0);
    }

    #[test]
    fn spread_prefers_nodes_with_fewer_same_owner_pods() {
        let mut a = info("a", "4", "8Gi");
        let mut b = info("b", "4", "8Gi");
        let c = info("c", "4", "8Gi");
        let sibling = PodInfo::from_pod(&owned_pod("s", "100m", "0", "rs-uid")).expect("pod");
        a.add(&sibling.usage());
        a.add(&sibling.usage());
        b.add(&sibling.usage());
        // A pod of another owner does not count.
        b.add(
            &PodInfo::from_pod(&owned_pod("o", "100m", "0", "other"))
                .expect("pod")
                .usage(),
        );
        let p = PodInfo::from_pod(&owned_pod("p", "100m", "0", "rs-uid")).expect("pod");
        let max = max_owner_count(&p, [&a, &b, &c]);
        assert_eq!(max, 2);
        assert_eq!(spread(&p, &a, max), 0);
        assert_eq!(spread(&p, &b, max), 50);
        assert_eq!(spread(&p, &c, max), 100);
    }

    #[test]
    fn spread_is_neutral_for_ownerless_pods_and_first_replica() {
        let mut a = info("a", "4", "8Gi");
        a.add(
            &PodInfo::from_pod(&owned_pod("s", "0", "0", "rs"))
                .expect("pod")
                .usage(),
        );
        let ownerless = PodInfo::from_pod(&pod("p", "0", "0")).expect("pod");
        assert_eq!(max_owner_count(&ownerless, [&a]), 0);
        assert_eq!(spread(&ownerless, &a, 0), MAX_NODE_SCORE);
        let first = PodInfo::from_pod(&owned_pod("p", "0", "0", "new-owner")).expect("pod");
        assert_eq!(
            spread(&first, &a, max_owner_count(&first, [&a])),
            MAX_NODE_SCORE
        );
    }

    #[test]
    fn spread_outweighs_small_resource_differences() {
        // Node a is a bit emptier but already has a replica; b has none.
        let mut a = info("a", "8", "16Gi");
        let mut b = info("b", "8", "16Gi");
        a.add(
            &PodInfo::from_pod(&owned_pod("s", "100m", "100Mi", "rs"))
                .expect("pod")
                .usage(),
        );
        b.add(
            &PodInfo::from_pod(&pod("big", "2", "4Gi"))
                .expect("pod")
                .usage(),
        );
        let p = PodInfo::from_pod(&owned_pod("p", "100m", "100Mi", "rs")).expect("pod");
        let max = max_owner_count(&p, [&a, &b]);
        assert!(least_allocated(&p, &a) > least_allocated(&p, &b));
        assert!(score(&p, &b, max) > score(&p, &a, max));
    }
}
