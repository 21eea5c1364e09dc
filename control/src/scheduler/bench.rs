//! Scheduling throughput: the [`SchedulerCache`] against a plain loop that
//! rebuilds every node's totals from the bound pods for each decision
//! ([`schedule`]), measured side by side in one run over the same pods and
//! nodes. Both use the same filter and score functions, so they must
//! place every pod on the same node; [`BenchResult::placements_agree`]
//! checks that.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::algorithm::schedule;
use super::cache::SchedulerCache;

/// Number of distinct controller owners the benchmark pods belong to.
const OWNERS: usize = 100;

/// What [`bench_schedule`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Pods scheduled (by each method).
    pub pods: usize,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Wall time of the cached run.
    pub cached_elapsed: Duration,
    /// Wall time of the plain run.
    pub plain_elapsed: Duration,
    /// Pods per second with the cache.
    pub cached_pods_per_sec: f64,
    /// Pods per second with the plain loop.
    pub plain_pods_per_sec: f64,
    /// `cached_pods_per_sec / plain_pods_per_sec`.
    pub speedup: f64,
    /// Both methods chose the same node (or both failed) for every pod.
    pub placements_agree: bool,
    /// Pods no node could take (same for both methods when they agree).
    pub unschedulable: usize,
}

fn bench_node(i: usize) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(format!("node-{i:05}")),
            labels: Some([("kubernetes.io/hostname".to_owned(), format!("node-{i:05}"))].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(
                [
                    ("cpu".to_owned(), Quantity("32".to_owned())),
                    ("memory".to_owned(), Quantity("128Gi".to_owned())),
                    ("pods".to_owned(), Quantity("250".to_owned())),
                ]
                .into(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn bench_pod(i: usize) -> Pod {
    // A mix of sizes, including best-effort pods.
    let (cpu, memory) = [
        ("100m", "128Mi"),
        ("250m", "256Mi"),
        ("500m", "1Gi"),
        ("", ""),
    ][i % 4];
    let mut requests = BTreeMap::new();
    if !cpu.is_empty() {
        requests.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
        requests.insert("memory".to_owned(), Quantity(memory.to_owned()));
    }
    let owner = i % OWNERS;
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:06}")),
            namespace: Some("bench".to_owned()),
            uid: Some(format!("pod-uid-{i}")),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "ReplicaSet".to_owned(),
                name: format!("rs-{owner}"),
                uid: format!("rs-uid-{owner}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    // Precision loss above 2^52 pods is irrelevant here.
    #[expect(clippy::cast_precision_loss, reason = "pod counts are far below 2^52")]
    let n = n as f64;
    n / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Schedules `pods` pods onto `nodes` nodes twice — through the cache and
/// through the plain loop — timing each, and compares the placements.
/// `cargo xtask bench scheduler` runs it with 10,000 pods and 1,000 nodes.
pub fn bench_schedule(pods: usize, nodes: usize) -> BenchResult {
    let node_objects: Vec<Node> = (0..nodes).map(bench_node).collect();
    let pod_objects: Vec<Pod> = (0..pods).map(bench_pod).collect();

    let start = Instant::now();
    let mut cache = SchedulerCache::from_objects(&node_objects, []);
    let cached: Vec<Option<String>> = pod_objects
        .iter()
        .map(|p| black_box(cache.schedule_and_assume(p)).ok())
        .collect();
    let cached_elapsed = start.elapsed();

    let start = Instant::now();
    let mut bound: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    let mut plain: Vec<Option<String>> = Vec::with_capacity(pods);
    for p in &pod_objects {
        let chosen = black_box(schedule(p, &node_objects, &bound)).ok();
        if let Some(node) = &chosen {
            let mut b = p.clone();
            if let Some(spec) = b.spec.as_mut() {
                spec.node_name = Some(node.clone());
            }
            bound.entry(node.clone()).or_default().push(b);
        }
        plain.push(chosen);
    }
    let plain_elapsed = start.elapsed();

    let cached_pods_per_sec = per_sec(pods, cached_elapsed);
    let plain_pods_per_sec = per_sec(pods, plain_elapsed);
    BenchResult {
        pods,
        nodes,
        cached_elapsed,
        plain_elapsed,
        cached_pods_per_sec,
        plain_pods_per_sec,
        speedup: cached_pods_per_sec / plain_pods_per_sec.max(f64::MIN_POSITIVE),
        placements_agree: cached == plain,
        unschedulable: cached.iter().filter(|c| c.is_none()).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_agrees_and_measures() {
        let r = bench_schedule(200, 20);
        assert_eq!((r.pods, r.nodes), (200, 20));
        assert!(r.placements_agree, "cache and plain loop disagree");
        assert_eq!(r.unschedulable, 0);
        assert!(r.cached_pods_per_sec > 0.0 && r.plain_pods_per_sec > 0.0);
        assert!(r.cached_elapsed > Duration::ZERO && r.plain_elapsed > Duration::ZERO);
    }

    /// The full-size run `cargo xtask bench scheduler` does; printed, not
    /// asserted on speed (benchmarks report, tests check).
    #[test]
    #[ignore = "slow (minutes in debug builds): run by cargo xtask bench scheduler or with --release --ignored"]
    fn full_size_run() {
        // `cargo xtask test --kernel` runs every ignored test; this one is a
        // benchmark-sized run, not a root test, so it needs asking for.
        if std::env::var_os("SKIFF_SCHEDULER_FULL_RUN").is_none() {
            eprintln!("set SKIFF_SCHEDULER_FULL_RUN=1 to run the 10,000-pod scheduling run");
            return;
        }
        let r = bench_schedule(10_000, 1_000);
        println!("{r:#?}");
        assert!(r.placements_agree);
        assert_eq!(r.unschedulable, 0);
    }

    #[test]
    fn overfull_cluster_reports_unschedulable_pods() {
        // 2 nodes take at most 2 * 250 pods (fewer: cpu runs out first).
        let r = bench_schedule(600, 2);
        assert!(r.placements_agree);
        assert!(r.unschedulable >= 100, "{r:?}");
    }
}
