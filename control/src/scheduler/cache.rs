//! The scheduler's cache: every node's [`NodeInfo`] kept current as pods
//! are bound, finish or go away, so one decision costs O(nodes) instead of
//! O(nodes + bound pods).
//!
//! Pods are tracked by uid with the exact usage that was added to their
//! node, so every update subtracts what was added before (no drift).
//! A pod the scheduler has just bound is *assumed* onto its node before the
//! API confirms it, as kube-scheduler does, so the next decision already
//! counts it; the watch event that follows replaces the assumption.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::algorithm::{Unschedulable, invalid_pod_message, select};
use super::info::{NodeFacts, NodeInfo, PodInfo, PodUsage, occupies_node};

#[derive(Debug, Clone)]
struct Placed {
    node: String,
    usage: PodUsage,
    /// Bound by us, not yet seen bound in a watch event.
    assumed: bool,
}

/// Nodes and the totals of the pods bound to them.
#[derive(Debug, Default, Clone)]
pub struct SchedulerCache {
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<String, Placed>,
}

/// The key a pod is tracked under: its uid, or `namespace/name` for
/// objects without one (tests, hand-built pods).
pub fn pod_key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

impl SchedulerCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache holding exactly `nodes` and the bound, unfinished `pods`.
    pub fn from_objects<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Self {
        let mut cache = Self::new();
        cache.rebuild(nodes, pods);
        cache
    }

    /// Replaces the whole content (after a watch re-list). Assumed pods
    /// are dropped unless the new pod list shows them.
    pub fn rebuild<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) {
        self.nodes = nodes
            .into_iter()
            .map(|n| {
                let facts = NodeFacts::from_node(n);
                (facts.name.clone(), NodeInfo::new(facts))
            })
            .collect();
        self.pods.clear();
        for pod in pods {
            self.update_pod(pod);
        }
    }

    /// Inserts or updates a node. Returns whether anything a scheduling
    /// decision depends on changed (a new node, readiness, taints, labels,
    /// allocatable...): a heartbeat returns `false`.
    pub fn upsert_node(&mut self, node: &Node) -> bool {
        let facts = NodeFacts::from_node(node);
        if let Some(info) = self.nodes.get_mut(&facts.name) {
            if info.facts == facts {
                return false;
            }
            info.facts = facts;
            return true;
        }
        let mut info = NodeInfo::new(facts);
        // Pods can be seen bound to a node before the node itself.
        let name = info.facts.name.clone();
        for placed in self.pods.values().filter(|p| p.node == name) {
            info.add(&placed.usage);
        }
        self.nodes.insert(info.facts.name.clone(), info);
        true
    }

    /// Forgets a node (its pods stay tracked in case it comes back).
    /// Returns whether it was known.
    pub fn remove_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    fn unplace(&mut self, key: &str) -> Option<Placed> {
        let placed = self.pods.remove(key)?;
        if let Some(info) = self.nodes.get_mut(&placed.node) {
            info.remove(&placed.usage);
        }
        Some(placed)
    }

    fn place(&mut self, key: String, placed: Placed) {
        if let Some(info) = self.nodes.get_mut(&placed.node) {
            info.add(&placed.usage);
        }
        self.pods.insert(key, placed);
    }

    /// Records a pod's current state: counted on its node while bound and
    /// unfinished, not counted otherwise. Idempotent. Returns whether
    /// capacity was freed somewhere (the pod left a node or shrank), which
    /// is when unschedulable pods deserve another try.
    pub fn update_pod(&mut self, pod: &Pod) -> bool {
        let key = pod_key(pod);
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
            && self.pods.get(&key).is_some_and(|p| p.assumed)
        {
            // An event from before our binding (the pod watch and the
            // scheduling queue are separate streams): the assumption is
            // newer. A failed binding calls `forget` instead.
            return false;
        }
        let old = self.unplace(&key);
        match occupies_node(pod) {
            Some(node) => {
                let usage = PodUsage::of(pod);
                let freed = old.as_ref().is_some_and(|o| {
                    o.node != node
                        || o.usage.requests.requests.milli_cpu > usage.requests.requests.milli_cpu
                        || o.usage.requests.requests.memory > usage.requests.requests.memory
                });
                self.place(
                    key,
                    Placed {
                        node: node.to_owned(),
                        usage,
                        assumed: false,
                    },
                );
                freed
            }
            None => old.is_some(),
        }
    }

    /// Forgets a deleted pod. Returns whether it was counted on a node.
    pub fn remove_pod(&mut self, pod: &Pod) -> bool {
        self.unplace(&pod_key(pod)).is_some()
    }

    /// Counts `pod` on `node` ahead of the API confirming the binding.
    pub fn assume(&mut self, pod: &Pod, info: &PodInfo, node: &str) {
        let key = pod_key(pod);
        self.unplace(&key);
        self.place(
            key,
            Placed {
                node: node.to_owned(),
                usage: info.usage(),
                assumed: true,
            },
        );
    }

    /// Undoes [`assume`](Self::assume) when the binding failed. A pod the
    /// watch has meanwhile shown bound is left alone.
    pub fn forget(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if self.pods.get(&key).is_some_and(|p| p.assumed) {
            self.unplace(&key);
        }
    }

    /// The node `pod` is counted on (bound or assumed), if any.
    pub fn placement(&self, pod: &Pod) -> Option<&str> {
        self.pods.get(&pod_key(pod)).map(|p| p.node.as_str())
    }

    /// One node's info.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// Picks a node for a digested pod; O(nodes).
    ///
    /// # Errors
    /// [`Unschedulable`] with the aggregated reasons.
    pub fn select(&self, pod: &PodInfo) -> Result<String, Unschedulable> {
        select(pod, self.nodes.values())
    }

    /// Picks a node for `pod` and assumes it there.
    ///
    /// # Errors
    /// [`Unschedulable`] when no node fits or the pod is malformed.
    pub fn schedule_and_assume(&mut self, pod: &Pod) -> Result<String, Unschedulable> {
        let info = PodInfo::from_pod(pod).map_err(|e| Unschedulable {
            message: invalid_pod_message(&e),
        })?;
        let node = self.select(&info)?;
        self.assume(pod, &info, &node);
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::algorithm::{node_infos, schedule};
    use crate::scheduler::testkit::{bind, node, owned_pod, pod};

    fn totals(cache: &SchedulerCache, name: &str) -> (i64, i64) {
        let n = cache.node(name).expect("node");
        (n.requested.milli_cpu, n.pod_count)
    }

    #[test]
    fn bound_pods_are_counted_once_and_unbound_not_at_all() {
        let mut cache = SchedulerCache::from_objects(&[node("n1", "4", "8Gi")], &[]);
        let p = bind(pod("a", "1", "1Gi"), "n1");
        assert!(!cache.update_pod(&pod("u", "1", "1Gi")));
        cache.update_pod(&p);
        cache.update_pod(&p);
        assert_eq!(totals(&cache, "n1"), (1000, 1));
        assert!(cache.remove_pod(&p));
        assert_eq!(totals(&cache, "n1"), (0, 0));
        assert!(!cache.remove_pod(&p));
    }

    #[test]
    fn finishing_frees_capacity_and_reports_it() {
        let mut cache = SchedulerCache::from_objects(&[node("n1", "4", "8Gi")], &[]);
        let mut p = bind(pod("a", "1", "1Gi"), "n1");
        assert!(!cache.update_pod(&p));
        p.status.get_or_insert_default().phase = Some("Failed".into());
        assert!(cache.update_pod(&p));
        assert_eq!(totals(&cache, "n1"), (0, 0));
    }

    #[test]
    fn assumed_pod_counts_until_confirmed_or_forgotten() {
        let mut cache =
            SchedulerCache::from_objects(&[node("n1", "4", "8Gi"), node("n2", "4", "8Gi")], &[]);
        let p = pod("a", "1", "1Gi");
        assert_eq!(cache.schedule_and_assume(&p).expect("fits"), "n1");
        assert_eq!(cache.placement(&p), Some("n1"));
        assert_eq!(totals(&cache, "n1"), (1000, 1));
        // The watch confirms the binding: still counted once.
        cache.update_pod(&bind(p.clone(), "n1"));
        assert_eq!(totals(&cache, "n1"), (1000, 1));
        // forget() after confirmation does nothing.
        cache.forget(&p);
        assert_eq!(totals(&cache, "n1"), (1000, 1));

        let q = pod("b", "1", "1Gi");
        let n = cache.schedule_and_assume(&q).expect("fits");
        assert_eq!(n, "n2", "the assumed pod already weighs on n1");
        cache.forget(&q);
        assert_eq!(totals(&cache, "n2"), (0, 0));
        assert_eq!(cache.placement(&q), None);
    }

    #[test]
    fn stale_unbound_event_does_not_undo_an_assumption() {
        let mut cache =
            SchedulerCache::from_objects(&[node("n1", "4", "8Gi"), node("n2", "4", "8Gi")], &[]);
        let p = owned_pod("a", "1", "1Gi", "rs");
        assert_eq!(cache.schedule_and_assume(&p).expect("fits"), "n1");
        // The pod's ADDED event (unbound) arrives after the decision.
        assert!(!cache.update_pod(&p));
        assert_eq!(cache.placement(&p), Some("n1"));
        assert_eq!(totals(&cache, "n1"), (1000, 1));
        // So the next replica still goes elsewhere.
        assert_eq!(
            cache
                .schedule_and_assume(&owned_pod("b", "1", "1Gi", "rs"))
                .expect("fits"),
            "n2"
        );
        // Once confirmed, an unbound version (impossible in practice) does
        // remove it: only assumptions are protected.
        cache.update_pod(&bind(p.clone(), "n1"));
        assert!(cache.update_pod(&p));
        assert_eq!(cache.placement(&p), None);
    }

    #[test]
    fn pods_seen_before_their_node_are_counted_when_it_arrives() {
        let mut cache = SchedulerCache::new();
        cache.update_pod(&bind(pod("a", "1", "1Gi"), "late"));
        assert!(cache.upsert_node(&node("late", "4", "8Gi")));
        assert_eq!(totals(&cache, "late"), (1000, 1));
        // Removing and re-adding the node keeps the pod counted.
        assert!(cache.remove_node("late"));
        assert!(cache.upsert_node(&node("late", "4", "8Gi")));
        assert_eq!(totals(&cache, "late"), (1000, 1));
    }

    #[test]
    fn heartbeat_is_not_a_change_but_taints_are() {
        let mut cache = SchedulerCache::new();
        let mut n = node("n1", "4", "8Gi");
        assert!(cache.upsert_node(&n));
        if let Some(c) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].last_heartbeat_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        }
        assert!(!cache.upsert_node(&n));
        n.spec.get_or_insert_default().taints = Some(vec![crate::scheduler::testkit::taint(
            "t",
            None,
            "NoSchedule",
        )]);
        assert!(cache.upsert_node(&n));
    }

    #[test]
    fn moving_or_shrinking_a_pod_frees_capacity() {
        let mut cache =
            SchedulerCache::from_objects(&[node("n1", "4", "8Gi"), node("n2", "4", "8Gi")], &[]);
        cache.update_pod(&bind(pod("a", "2", "1Gi"), "n1"));
        assert!(
            cache.update_pod(&bind(pod("a", "1", "1Gi"), "n1")),
            "shrank"
        );
        assert!(
            !cache.update_pod(&bind(pod("a", "1", "1Gi"), "n1")),
            "unchanged"
        );
        assert!(cache.update_pod(&bind(pod("a", "1", "1Gi"), "n2")), "moved");
        assert_eq!(totals(&cache, "n1"), (0, 0));
        assert_eq!(totals(&cache, "n2"), (1000, 1));
    }

    #[test]
    fn cache_decisions_equal_the_pure_schedule_function() {
        // Bind 30 pods of two owners and mixed sizes via the cache, and
        // check each decision against schedule() over the same state.
        let nodes = vec![
            node("a", "4", "8Gi"),
            node("b", "8", "8Gi"),
            node("c", "2", "16Gi"),
        ];
        let mut cache = SchedulerCache::from_objects(&nodes, &[]);
        let mut bound: Vec<Pod> = Vec::new();
        for i in 0..30 {
            let (cpu, mem) = [("100m", "256Mi"), ("250m", "64Mi"), ("", "")][i % 3];
            let p = owned_pod(
                &format!("p{i}"),
                cpu,
                mem,
                if i % 2 == 0 { "x" } else { "y" },
            );
            let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
            for b in &bound {
                let n = b
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .expect("bound");
                by_node.entry(n).or_default().push(b.clone());
            }
            let expected = schedule(&p, &nodes, &by_node);
            let got = cache.schedule_and_assume(&p);
            assert_eq!(got, expected, "pod {i}");
            let infos = node_infos(&nodes, &by_node);
            assert_eq!(infos.len(), 3);
            if let Ok(n) = got {
                bound.push(bind(p, &n));
            }
        }
        // Totals agree with a from-scratch rebuild too.
        let rebuilt = SchedulerCache::from_objects(&nodes, &bound);
        for name in ["a", "b", "c"] {
            assert_eq!(rebuilt.node(name), cache.node(name), "node {name}");
        }
    }

    #[test]
    fn rebuild_replaces_everything() {
        let mut cache = SchedulerCache::from_objects(&[node("n1", "4", "8Gi")], &[]);
        let p = pod("a", "1", "1Gi");
        cache.schedule_and_assume(&p).expect("fits");
        cache.rebuild(
            &[node("n2", "4", "8Gi")],
            &[bind(pod("b", "2", "1Gi"), "n2")],
        );
        assert!(cache.node("n1").is_none());
        assert_eq!(cache.placement(&p), None);
        assert_eq!(totals(&cache, "n2"), (2000, 1));
    }
}
