//! DaemonSets and Jobs against the real API server, in process, with the
//! scheduler, simulated nodes and the fake kubelet.

mod controllers_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use controllers_support::{Cluster, EXIT_CODE_LABEL, image_of, is_ready, is_terminating, node_of};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::json;

fn daemon_set(image: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
    .expect("daemon set")
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter().filter(|p| !is_terminating(p)).collect()
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.iter().filter(|p| is_ready(p)) {
        *m.entry(node_of(p).unwrap_or_default()).or_default() += 1;
    }
    m
}

/// Exactly one ready daemon pod with `image` on each of `nodes`.
async fn daemons_on(cluster: &Cluster, nodes: &[&str], image: &str) -> Result<(), String> {
    let want: BTreeMap<String, usize> = nodes.iter().map(|n| ((*n).to_owned(), 1)).collect();
    let pods = live(cluster.pods("agent").await);
    let images_ok = pods.iter().all(|p| image_of(p) == image);
    if per_node(&pods) == want && pods.len() == want.len() && images_ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?}",
            per_node(&pods),
            pods.iter().map(image_of).collect::<Vec<_>>()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_set_runs_one_pod_per_node_follows_nodes_and_rolls() {
    let mut cluster = Cluster::with_nodes(2).await;
    let api = Api::<DaemonSet>::namespaced(cluster.client.clone(), "default");
    api.create(&PostParams::default(), &daemon_set("agent:1"))
        .await
        .expect("create");
    cluster
        .eventually("a pod on each node", || {
            daemons_on(&cluster, &["node-1", "node-2"], "agent:1")
        })
        .await;
    cluster.add_node("node-3", "4", "8Gi").await;
    cluster
        .eventually("a pod on the new node", || {
            daemons_on(&cluster, &["node-1", "node-2", "node-3"], "agent:1")
        })
        .await;
    // A taint the daemon does not tolerate: its pod leaves that node.
    Api::<Node>::all(cluster.client.clone())
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}})),
        )
        .await
        .expect("taint");
    cluster
        .eventually("pod gone from the tainted node", || {
            daemons_on(&cluster, &["node-2", "node-3"], "agent:1")
        })
        .await;
    // Template change: rolled out one node at a time.
    api.patch("agent", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "agent:2"}]}}}})))
        .await
        .expect("update");
    cluster
        .eventually("rolled to agent:2", || {
            daemons_on(&cluster, &["node-2", "node-3"], "agent:2")
        })
        .await;
    cluster
        .eventually("status", || async {
            let s = api
                .get("agent")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let ok = s.desired_number_scheduled == 2
                && s.number_ready == 2
                && s.updated_number_scheduled == Some(2)
                && s.number_misscheduled == 0;
            if ok { Ok(()) } else { Err(format!("{s:?}")) }
        })
        .await;
    cluster.stop().await;
}

fn job(name: &str, completions: i32, parallelism: i32, exit_code: &str, backoff_limit: i32) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {"app": name, EXIT_CODE_LABEL: exit_code}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "job:1"}]}
            }
        }
    }))
    .expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_to_completion_within_parallelism() {
    let cluster = Cluster::with_nodes(2).await;
    // Record the most pods of the job running at once.
    let most = Arc::new(Mutex::new(0usize));
    let watch = {
        let most = most.clone();
        let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");
        tokio::spawn(async move {
            let mut store: BTreeMap<String, Pod> = BTreeMap::new();
            let mut events = std::pin::pin!(
                watcher::watcher(pods, watcher::Config::default().labels("app=pi"))
                    .default_backoff()
                    .touched_objects()
            );
            let mut seen = std::collections::BTreeSet::new();
            while let Some(Ok(pod)) = events.next().await {
                let name = pod.metadata.name.clone().unwrap_or_default();
                seen.insert(name.clone());
                store.insert(name, pod);
                let running = store
                    .values()
                    .filter(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        ) && !is_terminating(p)
                    })
                    .count();
                let mut m = most.lock().expect("most");
                *m = (*m).max(running);
            }
        })
    };
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("pi", 5, 2, "0", 6))
        .await
        .expect("create");
    let status = cluster
        .eventually("job complete", || async {
            let s = jobs
                .get("pi")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let complete = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            if complete {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.active, Some(0));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let pods = cluster.pods("pi").await;
    assert_eq!(
        pods.iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .count(),
        5
    );
    watch.abort();
    let most = *most.lock().expect("most");
    assert!(
        (1..=2).contains(&most),
        "at most parallelism pods at once, saw {most}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_stops_at_the_backoff_limit() {
    let cluster = Cluster::with_nodes(1).await;
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("bad", 1, 1, "3", 0))
        .await
        .expect("create");
    let status = cluster
        .eventually("job failed", || async {
            let s = jobs
                .get("bad")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            match s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")
            {
                Some(c) => Ok((s.clone(), c.reason.clone())),
                None => Err(format!("{s:?}")),
            }
        })
        .await;
    assert_eq!(status.1.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(status.0.failed, Some(1));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        cluster.pods("bad").await.len(),
        1,
        "no retry after the limit"
    );
    cluster.stop().await;
}
