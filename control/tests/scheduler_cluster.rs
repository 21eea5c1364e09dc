//! The scheduler against the real API server, in process (with the other
//! controllers running, as in a real control plane): binding through the
//! `pods/binding` subresource, the kube-style reason on unschedulable
//! pods, and retrying them when a node that fits appears.

mod controllers_support;

use controllers_support::{Cluster, node_of};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

fn pod(name: &str, cpu: &str, scheduler: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{"name": "main", "image": "x", "resources": {"requests": {"cpu": cpu}}}]
        }
    }))
    .expect("pod manifest")
}

fn scheduled_condition(pod: &Pod) -> Option<(String, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_gets_the_reason_and_is_placed_when_a_node_fits() {
    let mut cluster = Cluster::with_nodes(3).await;
    // node-1 is tainted; nodes 2 and 3 are too small for 16 cpus.
    Api::<Node>::all(cluster.client.clone())
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .expect("taint node-1");
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("big", "16", None))
        .await
        .expect("create");
    let expected = "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}.";
    cluster
        .eventually("unschedulable condition", || async {
            let p = pods.get("big").await.map_err(|e| e.to_string())?;
            match scheduled_condition(&p) {
                Some((status, Some(reason), Some(message)))
                    if status == "False" && reason == "Unschedulable" && message == expected =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}, node {:?}", node_of(&p))),
            }
        })
        .await;
    // A node that fits joins: the pod is retried and bound to it.
    cluster.add_node("node-big", "32", "64Gi").await;
    cluster
        .eventually("bound to the new node", || async {
            let p = pods.get("big").await.map_err(|e| e.to_string())?;
            let condition = scheduled_condition(&p);
            let cleared = condition
                .as_ref()
                .is_none_or(|(status, _, _)| status == "True");
            if node_of(&p).as_deref() == Some("node-big") && cleared {
                Ok(())
            } else {
                Err(format!("{:?} {condition:?}", node_of(&p)))
            }
        })
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_another_scheduler_are_left_alone_and_ours_are_bound() {
    let cluster = Cluster::with_nodes(2).await;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("theirs", "100m", Some("someone-else")),
    )
    .await
    .expect("create");
    pods.create(
        &PostParams::default(),
        &pod("ours", "100m", Some("skiff-scheduler")),
    )
    .await
    .expect("create");
    pods.create(&PostParams::default(), &pod("default", "100m", None))
        .await
        .expect("create");
    cluster
        .eventually("ours and default bound", || async {
            let ours = pods.get("ours").await.map_err(|e| e.to_string())?;
            let default = pods.get("default").await.map_err(|e| e.to_string())?;
            if node_of(&ours).is_some() && node_of(&default).is_some() {
                Ok(())
            } else {
                Err("not yet".into())
            }
        })
        .await;
    // Both were placed on different nodes (least allocated).
    let ours = node_of(&pods.get("ours").await.expect("get"));
    let default = node_of(&pods.get("default").await.expect("get"));
    assert_ne!(ours, default);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let theirs = pods.get("theirs").await.expect("get");
    assert_eq!(node_of(&theirs), None);
    assert_eq!(
        scheduled_condition(&theirs),
        None,
        "no condition written on pods of other schedulers"
    );
    cluster.stop().await;
}
