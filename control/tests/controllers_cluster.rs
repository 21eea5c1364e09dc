//! The controllers and the scheduler together against the real API server,
//! in process: three simulated nodes heartbeat, a fake kubelet readies
//! bound pods, and Deployments are created, rolled, rolled back, survive a
//! node failure and are deleted.

mod controllers_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controllers_support::{
    Cluster, EVICTION, GRACE, deployment, image_of, is_ready, is_terminating, node_of,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use skiff_control::controllers::deployment::REVISION_ANNOTATION;

/// Waits until the Deployment `name` has `replicas` ready pods, all with
/// `image`, and reports itself complete.
async fn wait_rolled_out(cluster: &Cluster, name: &str, replicas: usize, image: &str) -> Vec<Pod> {
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .eventually(&format!("{name} rolled out with {image}"), || async {
            let pods = cluster.pods(name).await;
            let good = pods
                .iter()
                .filter(|p| is_ready(p) && image_of(p) == image)
                .count();
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            let complete = s.updated_replicas == Some(i32::try_from(replicas).unwrap_or(0))
                && s.available_replicas == Some(i32::try_from(replicas).unwrap_or(0))
                && s.observed_generation == d.metadata.generation
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
            if pods.len() == replicas && good == replicas && complete {
                Ok(pods)
            } else {
                Err(format!(
                    "{} pods, {good} ready with {image}; status {s:?}",
                    pods.len()
                ))
            }
        })
        .await
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(node_of(p).unwrap_or_default()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_of_six_spreads_two_per_node() {
    let cluster = Cluster::with_nodes(3).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 6, "web:1", json!(1), json!(1)))
        .await;
    let pods = wait_rolled_out(&cluster, "web", 6, "web:1").await;
    assert_eq!(
        per_node(&pods),
        BTreeMap::from([
            ("node-1".to_owned(), 2),
            ("node-2".to_owned(), 2),
            ("node-3".to_owned(), 2)
        ])
    );
    // Every pod is owned by the one ReplicaSet, which the Deployment owns.
    let rss = Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(rss.len(), 1);
    let rs_uid = rss[0].metadata.uid.clone();
    assert!(pods.iter().all(|p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| Some(&r.uid) == rs_uid.as_ref() && r.controller == Some(true))
    }));
    assert!(
        rss[0]
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("pod-template-hash"))
    );
    let d = deployments.get("web").await.expect("get");
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .map(String::as_str),
        Some("1")
    );
    cluster.stop().await;
}

/// Watches the pods of `app` and records every observed state that breaks
/// `total <= max_total` or `ready >= min_ready`.
/// Violations seen, states observed, and the watching task.
type BoundsWatch = (
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<usize>>,
    tokio::task::JoinHandle<()>,
);

fn watch_bounds(cluster: &Cluster, app: &str, min_ready: usize, max_total: usize) -> BoundsWatch {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let observed = Arc::new(Mutex::new(0usize));
    let api = Api::<Pod>::namespaced(cluster.client.clone(), "default");
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let (v, o) = (violations.clone(), observed.clone());
    let task = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut init: BTreeMap<String, Pod> = BTreeMap::new();
        let mut live = false;
        let mut stream = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => init.clear(),
                Ok(Event::InitApply(p)) => {
                    init.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Ok(Event::InitDone) => {
                    pods = std::mem::take(&mut init);
                    live = true;
                }
                Ok(Event::Apply(p)) => {
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Ok(Event::Delete(p)) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                Err(_) => continue,
            }
            if !live {
                continue;
            }
            *o.lock().expect("observed") += 1;
            let total = pods.len();
            let ready = pods.values().filter(|p| is_ready(p)).count();
            if total > max_total || ready < min_ready {
                let images: Vec<(String, bool)> =
                    pods.values().map(|p| (image_of(p), is_ready(p))).collect();
                v.lock()
                    .expect("violations")
                    .push(format!("total {total}, ready {ready}: {images:?}"));
            }
        }
    });
    (violations, observed, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_bounds_then_rollback_restores_the_old_template() {
    let cluster = Cluster::with_nodes(3).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    let rss_api = Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default");
    // 6 replicas, maxSurge 1, maxUnavailable 1: at most 7 pods, at least 5 ready.
    cluster
        .create_deployment(deployment("web", 6, "web:1", json!(1), json!(1)))
        .await;
    wait_rolled_out(&cluster, "web", 6, "web:1").await;
    let (violations, observed, watch) = watch_bounds(&cluster, "web", 5, 7);
    // Let the watch list the pods before the rollout starts.
    cluster
        .eventually("bounds watcher listed pods", || async {
            if *observed.lock().expect("observed") > 0 {
                Ok(())
            } else {
                Err("no events".into())
            }
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let set_image = |image: &str| {
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "main",
            "image": image,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }]}}}})
    };
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&set_image("web:2")),
        )
        .await
        .expect("update template");
    wait_rolled_out(&cluster, "web", 6, "web:2").await;
    let rss = rss_api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(rss.len(), 2, "one ReplicaSet per template");
    let by_image = |rss: &[ReplicaSet], image: &str| {
        rss.iter()
            .find(|r| {
                r.spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    == Some(image)
            })
            .cloned()
            .expect("replica set for image")
    };
    assert_eq!(by_image(&rss, "web:1").spec.replicas, Some(0));
    let old_name = by_image(&rss, "web:1").metadata.name;

    // Rollback (what `skiff rollout undo` does): the old template again.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&set_image("web:1")),
        )
        .await
        .expect("roll back template");
    wait_rolled_out(&cluster, "web", 6, "web:1").await;
    let rss = rss_api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(rss.len(), 2, "rollback reuses the old ReplicaSet");
    let restored = by_image(&rss, "web:1");
    assert_eq!(restored.metadata.name, old_name);
    assert_eq!(restored.spec.replicas, Some(6));
    let revision = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned()
    };
    assert_eq!(revision(&restored.metadata).as_deref(), Some("3"));
    assert_eq!(
        revision(&by_image(&rss, "web:2").metadata).as_deref(),
        Some("2")
    );
    let d = deployments.get("web").await.expect("get");
    assert_eq!(revision(&d.metadata).as_deref(), Some("3"));

    watch.abort();
    let seen = *observed.lock().expect("observed");
    let violations = violations.lock().expect("violations").clone();
    assert!(seen > 20, "the watch saw the rollouts ({seen} states)");
    assert!(
        violations.is_empty(),
        "bounds broken in {} of {seen} observed states: {violations:#?}",
        violations.len()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_silent_node_are_recreated_elsewhere() {
    let cluster = Cluster::with_nodes(3).await;
    cluster
        .create_deployment(deployment("web", 6, "web:1", json!(1), json!(1)))
        .await;
    let pods = wait_rolled_out(&cluster, "web", 6, "web:1").await;
    assert_eq!(per_node(&pods).get("node-3"), Some(&2));
    let killed_at = Instant::now();
    cluster.kill_node("node-3");

    // Not before grace + eviction timeout (less one heartbeat period and
    // some slack): evicting early would be wrong.
    tokio::time::sleep(GRACE + EVICTION - Duration::from_millis(1500)).await;
    let early = cluster.pods("web").await;
    assert_eq!(per_node(&early).get("node-3"), Some(&2));
    assert!(!early.iter().any(is_terminating), "evicted too early");
    assert!(
        early
            .iter()
            .filter(|p| node_of(p).as_deref() == Some("node-3"))
            .all(|p| !is_ready(p)),
        "pods of a silent node are marked not ready"
    );

    // Evicted pods stay Terminating on the silent node (nobody there
    // finishes them, as in Kubernetes); replacements run elsewhere.
    let pods = cluster
        .eventually("pods recreated off node-3", || async {
            let all = cluster.pods("web").await;
            let (gone, pods): (Vec<Pod>, Vec<Pod>) = all.into_iter().partition(is_terminating);
            let ok = pods.len() == 6
                && pods
                    .iter()
                    .all(|p| is_ready(p) && node_of(p).as_deref() != Some("node-3"))
                && gone.len() == 2
                && gone.iter().all(|p| node_of(p).as_deref() == Some("node-3"));
            if ok {
                Ok(pods)
            } else {
                Err(format!(
                    "live {:?}, terminating {:?}",
                    per_node(&pods),
                    per_node(&gone)
                ))
            }
        })
        .await;
    let took = killed_at.elapsed();
    assert!(
        took <= GRACE + EVICTION + Duration::from_secs(8),
        "took {took:?}"
    );
    assert_eq!(per_node(&pods).len(), 2);
    let node = Api::<Node>::all(cluster.client.clone())
        .get("node-3")
        .await
        .expect("node");
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .expect("ready condition");
    assert_eq!(ready.status, "Unknown");
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"),
        "{taints:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renewing_only_its_lease_stays_ready() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = Cluster::start().await;
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "leaser"},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}]}
    }))
    .expect("node");
    let nodes = Api::<Node>::all(cluster.client.clone());
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let leases = Api::<Lease>::namespaced(cluster.client.clone(), "kube-node-lease");
    let lease = |now: String| -> Lease {
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "leaser", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "leaser", "leaseDurationSeconds": 40, "renewTime": now}
        }))
        .expect("lease")
    };
    leases
        .create(
            &PostParams::default(),
            &lease(k8s_openapi::jiff::Timestamp::now().to_string()),
        )
        .await
        .expect("create lease");
    let renew = |leases: Api<Lease>| async move {
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        leases
            .patch(
                "leaser",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"renewTime": now}})),
            )
            .await
            .expect("renew lease");
    };
    let ready_status = |node: &Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    // Twice the grace period on Lease renewals alone: still Ready.
    let until = Instant::now() + 2 * GRACE;
    while Instant::now() < until {
        renew(leases.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let n = nodes.get("leaser").await.expect("get");
    assert_eq!(ready_status(&n).as_deref(), Some("True"));
    assert!(n.spec.and_then(|s| s.taints).unwrap_or_default().is_empty());
    // Renewals stop: the node goes Unknown.
    cluster
        .eventually("leaser goes unknown", || async {
            let n = nodes.get("leaser").await.map_err(|e| e.to_string())?;
            if ready_status(&n).as_deref() == Some("Unknown") {
                Ok(())
            } else {
                Err(format!("{:?}", ready_status(&n)))
            }
        })
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_cascades_to_replica_sets_and_pods() {
    let cluster = Cluster::with_nodes(3).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 3, "web:1", json!(1), json!(0)))
        .await;
    wait_rolled_out(&cluster, "web", 3, "web:1").await;
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let rss_api = Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default");
    cluster
        .eventually("replica sets and pods collected", || async {
            let rss = rss_api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let pods = cluster.pods("web").await.len();
            if rss == 0 && pods == 0 {
                Ok(())
            } else {
                Err(format!("{rss} replica sets, {pods} pods"))
            }
        })
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_removes_dependents_before_the_owner() {
    let cluster = Cluster::with_nodes(2).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), "default");
    cluster
        .create_deployment(deployment("web", 2, "web:1", json!(1), json!(0)))
        .await;
    wait_rolled_out(&cluster, "web", 2, "web:1").await;
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .expect("delete");
    let rss_api = Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default");
    let saw_waiting_owner = Arc::new(Mutex::new(false));
    cluster
        .eventually("foreground cascade finished", || {
            let waiting = saw_waiting_owner.clone();
            let (deployments, rss_api, cluster) = (&deployments, &rss_api, &cluster);
            async move {
                let d = deployments
                    .get_opt("web")
                    .await
                    .map_err(|e| e.to_string())?;
                let rss = rss_api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len();
                let pods = cluster.pods("web").await.len();
                if let Some(d) = &d {
                    // While dependents remain, the owner waits, terminating.
                    assert!(d.metadata.deletion_timestamp.is_some());
                    *waiting.lock().expect("flag") |= rss > 0 || pods > 0;
                }
                if d.is_none() && rss == 0 && pods == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "deployment {}, {rss} replica sets, {pods} pods",
                        d.is_some()
                    ))
                }
            }
        })
        .await;
    assert!(
        *saw_waiting_owner.lock().expect("flag"),
        "the Deployment outlived its dependents"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_adopts_orphans_releases_relabeled_pods_and_scales() {
    // Controllers start after the orphans exist, so their first list shows
    // them (a pod cache lagging the ReplicaSet would create 3 pods first
    // and then delete 2 of the 5 — Kubernetes has the same race).
    let mut cluster = Cluster::without_controllers().await;
    let pods_api = Api::<Pod>::namespaced(cluster.client.clone(), "default");
    // Two orphans with matching labels, not bound (no nodes): never ready.
    for name in ["orphan-1", "orphan-2"] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "rs"}},
            "spec": {"containers": [{"name": "main", "image": "rs:1"}]}
        }))
        .expect("pod");
        pods_api
            .create(&PostParams::default(), &pod)
            .await
            .expect("create orphan");
    }
    cluster.start_controllers();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "rs", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "main", "image": "rs:1"}]}}
        }
    }))
    .expect("rs");
    let rss_api = Api::<ReplicaSet>::namespaced(cluster.client.clone(), "default");
    let created = rss_api
        .create(&PostParams::default(), &rs)
        .await
        .expect("create rs");
    let uid = created.metadata.uid.clone().expect("uid");
    let owned = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.controller == Some(true))
            })
            .count()
    };
    cluster
        .eventually("orphans adopted and one pod created", || async {
            let pods = cluster.pods("rs").await;
            if pods.len() == 3 && owned(&pods) == 3 {
                Ok(())
            } else {
                Err(format!("{} pods, {} owned", pods.len(), owned(&pods)))
            }
        })
        .await;
    // The created pod's name comes from generateName.
    let pods = cluster.pods("rs").await;
    assert!(pods.iter().any(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("rs-") && n.len() > 3)
    }));
    cluster
        .eventually("status counts the replicas", || async {
            let rs = rss_api.get("rs").await.map_err(|e| e.to_string())?;
            let s = rs.status.unwrap_or_default();
            if s.replicas == 3 && s.observed_generation == rs.metadata.generation {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;
    // Releasing: relabel one pod; the ReplicaSet lets go and replaces it.
    pods_api
        .patch(
            "orphan-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "debug"}}})),
        )
        .await
        .expect("relabel");
    cluster
        .eventually("relabeled pod released and replaced", || async {
            let released = pods_api.get("orphan-1").await.map_err(|e| e.to_string())?;
            let still_owned = released
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid);
            let pods = cluster.pods("rs").await;
            if !still_owned && pods.len() == 3 && owned(&pods) == 3 {
                Ok(())
            } else {
                Err(format!("owned {still_owned}, {} pods", pods.len()))
            }
        })
        .await;
    rss_api
        .patch(
            "rs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale down");
    cluster
        .eventually("scaled to one", || async {
            let n = cluster.pods("rs").await.len();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            }
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.pods("rs").await.len(), 1, "stays at one");
    cluster.stop().await;
}
