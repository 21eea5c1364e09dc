//! Deletion over HTTP: graceful pod deletion, finalizers, propagation
//! policies, and namespaces that wait for their contents.

mod api_support;

use std::time::Duration;

use api_support::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn add_node(server: &TestServer, name: &str) {
    server
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": name}, "status": {"capacity": {"cpu": "2"}}}),
        )
        .await
        .expect(201);
}

/// Creates pod `name` in default (with `extra` merged into its spec) and
/// binds it to `node` if given.
async fn add_pod(server: &TestServer, name: &str, node: Option<&str>, extra: Value) -> Value {
    let mut body = pod(name, json!({"app": "web"}));
    for (k, v) in extra.as_object().expect("object") {
        body["spec"][k] = v.clone();
    }
    let created = server.post(PODS, &body).await.expect(201);
    if let Some(node) = node {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
        server
            .post(&format!("{PODS}/{name}/binding"), &binding)
            .await
            .expect(201);
    }
    created
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn seconds_from_now(value: &Value) -> i64 {
    (time(value) - Utc::now()).num_seconds()
}

#[tokio::test]
async fn bound_pod_terminates_gracefully_until_the_agent_deletes_it() {
    let mut server = start().await;
    add_node(&server, "node-1").await;
    let created = add_pod(&server, "web", Some("node-1"), json!({})).await;
    let uid = created["metadata"]["uid"].clone();
    let bound = server.get(&format!("{PODS}/web")).await.expect(200);
    let rv = bound["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let mut watch = server
        .watch(&format!("{PODS}?watch=true&resourceVersion={rv}"))
        .await;

    // First DELETE: the pod's own grace period (defaulted to 30 s).
    let terminating = server.delete(&format!("{PODS}/web")).await.expect(200);
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
    let left = seconds_from_now(&terminating["metadata"]["deletionTimestamp"]);
    assert!((27..=30).contains(&left), "deadline in {left}s");
    let still = server.get(&format!("{PODS}/web")).await.expect(200);
    assert_eq!(
        still["metadata"]["deletionTimestamp"],
        terminating["metadata"]["deletionTimestamp"]
    );
    let event = watch.next_event().await;
    assert_eq!(summary(&event), ("MODIFIED".into(), "web".into()));
    assert!(event["object"]["metadata"]["deletionTimestamp"].is_string());

    // A longer grace period changes nothing; a shorter one moves the
    // deadline, counted from the first request.
    let same = server
        .delete_with(&format!("{PODS}/web"), &json!({"gracePeriodSeconds": 60}))
        .await
        .expect(200);
    assert_eq!(
        same["metadata"]["resourceVersion"],
        terminating["metadata"]["resourceVersion"]
    );
    let shorter = server
        .delete(&format!("{PODS}/web?gracePeriodSeconds=10"))
        .await
        .expect(200);
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 10);
    let shift = time(&terminating["metadata"]["deletionTimestamp"])
        - time(&shorter["metadata"]["deletionTimestamp"]);
    assert_eq!(shift.num_seconds(), 20);
    assert_eq!(summary(&watch.next_event().await).0, "MODIFIED");

    // Updates cannot clear the deletion timestamp.
    let mut edit = shorter.clone();
    edit["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("deletionTimestamp");
    edit["metadata"]["labels"]["stage"] = json!("leaving");
    let edited = server.put(&format!("{PODS}/web"), &edit).await.expect(200);
    assert_eq!(edited["metadata"]["labels"]["stage"], "leaving");
    assert_eq!(
        edited["metadata"]["deletionTimestamp"],
        shorter["metadata"]["deletionTimestamp"]
    );
    assert_eq!(summary(&watch.next_event().await).0, "MODIFIED");

    // The agent, done stopping it, deletes with grace 0 (as kube-rs sends
    // it: a DeleteOptions body with a uid precondition).
    let gone = server
        .delete_with(
            &format!("{PODS}/web"),
            &json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}),
        )
        .await
        .expect(200);
    assert_eq!(gone["metadata"]["name"], "web");
    server.get(&format!("{PODS}/web")).await.expect(404);
    assert_eq!(
        summary(&watch.next_event().await),
        ("DELETED".into(), "web".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn pods_nobody_will_stop_are_removed_at_once() {
    let mut server = start().await;
    add_node(&server, "node-1").await;

    // Not bound to a node.
    add_pod(&server, "pending", None, json!({})).await;
    let deleted = server.delete(&format!("{PODS}/pending")).await.expect(200);
    assert!(deleted["metadata"].get("deletionTimestamp").is_none());
    server.get(&format!("{PODS}/pending")).await.expect(404);

    // Grace period 0, from the query or the body.
    add_pod(&server, "forced", Some("node-1"), json!({})).await;
    server
        .delete(&format!("{PODS}/forced?gracePeriodSeconds=0"))
        .await
        .expect(200);
    server.get(&format!("{PODS}/forced")).await.expect(404);
    add_pod(&server, "forced", Some("node-1"), json!({})).await;
    server
        .delete_with(&format!("{PODS}/forced"), &json!({"gracePeriodSeconds": 0}))
        .await
        .expect(200);
    server.get(&format!("{PODS}/forced")).await.expect(404);

    // Finished.
    for phase in ["Succeeded", "Failed"] {
        add_pod(&server, "done", Some("node-1"), json!({})).await;
        server
            .patch(
                &format!("{PODS}/done/status"),
                "application/merge-patch+json",
                &json!({"status": {"phase": phase}}),
            )
            .await
            .expect(200);
        server.delete(&format!("{PODS}/done")).await.expect(200);
        server.get(&format!("{PODS}/done")).await.expect(404);
    }

    // Bound to a node that no longer exists.
    add_pod(&server, "stranded", Some("node-gone"), json!({})).await;
    server.delete(&format!("{PODS}/stranded")).await.expect(200);
    server.get(&format!("{PODS}/stranded")).await.expect(404);

    // The pod's own grace period applies when the request names none;
    // the request's wins otherwise.
    add_pod(
        &server,
        "quick",
        Some("node-1"),
        json!({"terminationGracePeriodSeconds": 5}),
    )
    .await;
    let t = server.delete(&format!("{PODS}/quick")).await.expect(200);
    assert_eq!(t["metadata"]["deletionGracePeriodSeconds"], 5);
    add_pod(&server, "slow", Some("node-1"), json!({})).await;
    let t = server
        .delete_with(&format!("{PODS}/slow"), &json!({"gracePeriodSeconds": 7}))
        .await
        .expect(200);
    assert_eq!(t["metadata"]["deletionGracePeriodSeconds"], 7);

    // A terminating pod cannot be bound.
    let mut held = pod("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    server.post(PODS, &held).await.expect(201);
    server.delete(&format!("{PODS}/held")).await.expect(200);
    let binding =
        json!({"metadata": {"name": "held"}, "target": {"kind": "Node", "name": "node-1"}});
    let refused = server
        .post(&format!("{PODS}/held/binding"), &binding)
        .await
        .expect(409);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("being deleted")
    );
    server.stop().await;
}

#[tokio::test]
async fn kube_client_deletes_like_the_agent() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, Preconditions};

    let mut server = start().await;
    add_node(&server, "node-1").await;
    let created = add_pod(&server, "web", Some("node-1"), json!({})).await;
    let config = kube::Config::new(server.base.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let first = pods
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let terminating = first.left().expect("the pod stays, terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: created["metadata"]["uid"].as_str().map(str::to_owned),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete("web", &params).await.expect("final delete");
    assert!(pods.get_opt("web").await.expect("get").is_none());
    server.stop().await;
}

#[tokio::test]
async fn finalizers_hold_an_object_until_the_last_is_removed() {
    let mut server = start().await;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let mut body = deployment("web", "web", 1);
    body["metadata"]["finalizers"] = json!(["example.com/a", "example.com/b"]);
    let created = server.post(path, &body).await.expect(201);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let mut watch = server
        .watch(&format!("{path}?watch=true&resourceVersion={rv}"))
        .await;

    let terminating = server.delete(&format!("{path}/web")).await.expect(200);
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 0);
    server.get(&format!("{path}/web")).await.expect(200);
    assert_eq!(summary(&watch.next_event().await).0, "MODIFIED");

    // No new finalizer may be added now.
    let refused = server
        .patch(
            &format!("{path}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/c"]}}),
        )
        .await
        .expect(422);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("no new finalizers can be added")
    );

    // Removing one keeps it; removing the last removes it.
    let one_left = server
        .patch(
            &format!("{path}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": ["example.com/b"]}}),
        )
        .await
        .expect(200);
    assert_eq!(one_left["metadata"]["finalizers"], json!(["example.com/b"]));
    assert_eq!(summary(&watch.next_event().await).0, "MODIFIED");
    server
        .patch(
            &format!("{path}/web"),
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/metadata/finalizers"}]),
        )
        .await
        .expect(200);
    server.get(&format!("{path}/web")).await.expect(404);
    assert_eq!(
        summary(&watch.next_event().await),
        ("DELETED".into(), "web".into())
    );
    server.stop().await;
}

fn owned_pod(name: &str, owners: &[&Value]) -> Value {
    let mut body = pod(name, json!({"app": "web"}));
    body["metadata"]["ownerReferences"] = Value::from(
        owners
            .iter()
            .map(|o| {
                json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
                       "uid": o["metadata"]["uid"], "controller": false, "blockOwnerDeletion": true})
            })
            .collect::<Vec<_>>(),
    );
    body
}

fn replica_set(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}
    })
}

const RS: &str = "/apis/apps/v1/namespaces/default/replicasets";

#[tokio::test]
async fn foreground_deletion_waits_for_the_collector() {
    let mut server = start().await;
    let owner = server.post(RS, &replica_set("web")).await.expect(201);
    server
        .post(PODS, &owned_pod("child", &[&owner]))
        .await
        .expect(201);

    let foreground = json!({"propagationPolicy": "Foreground"});
    let deleting = server
        .delete_with(&format!("{RS}/web"), &foreground)
        .await
        .expect(200);
    assert_eq!(
        deleting["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    server.get(&format!("{PODS}/child")).await.expect(200);
    server.get(&format!("{RS}/web")).await.expect(200);

    // What the garbage collector does: dependents first, then the
    // finalizer, and the owner is gone.
    server.delete(&format!("{PODS}/child")).await.expect(200);
    server
        .patch(
            &format!("{RS}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await
        .expect(200);
    server.get(&format!("{RS}/web")).await.expect(404);

    // With no dependents there is nothing to wait for.
    server.post(RS, &replica_set("lonely")).await.expect(201);
    let gone = server
        .delete_with(&format!("{RS}/lonely"), &foreground)
        .await
        .expect(200);
    assert!(gone["metadata"].get("finalizers").is_none());
    server.get(&format!("{RS}/lonely")).await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_without_the_reference() {
    let mut server = start().await;
    let owner = server.post(RS, &replica_set("web")).await.expect(201);
    let other = server.post(RS, &replica_set("other")).await.expect(201);
    server
        .post(PODS, &owned_pod("only", &[&owner]))
        .await
        .expect(201);
    server
        .post(PODS, &owned_pod("shared", &[&owner, &other]))
        .await
        .expect(201);
    server
        .post(PODS, &owned_pod("unrelated", &[&other]))
        .await
        .expect(201);

    server
        .delete(&format!("{RS}/web?propagationPolicy=Orphan"))
        .await
        .expect(200);
    server.get(&format!("{RS}/web")).await.expect(404);
    let only = server.get(&format!("{PODS}/only")).await.expect(200);
    assert!(only["metadata"].get("ownerReferences").is_none(), "{only}");
    let shared = server.get(&format!("{PODS}/shared")).await.expect(200);
    let refs = shared["metadata"]["ownerReferences"]
        .as_array()
        .expect("refs");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["uid"], other["metadata"]["uid"]);
    let unrelated = server.get(&format!("{PODS}/unrelated")).await.expect(200);
    assert_eq!(
        unrelated["metadata"]["ownerReferences"][0]["uid"],
        other["metadata"]["uid"]
    );

    // The legacy flag means the same; both together are refused.
    let refused = server
        .delete_with(
            &format!("{RS}/other"),
            &json!({"orphanDependents": true, "propagationPolicy": "Background"}),
        )
        .await
        .expect(422);
    assert_eq!(refused["details"]["kind"], "DeleteOptions");
    server
        .delete_with(&format!("{RS}/other"), &json!({"orphanDependents": true}))
        .await
        .expect(200);
    let unrelated = server.get(&format!("{PODS}/unrelated")).await.expect(200);
    assert!(unrelated["metadata"].get("ownerReferences").is_none());

    let bad = server
        .delete_with(
            &format!("{PODS}/only"),
            &json!({"propagationPolicy": "Sideways"}),
        )
        .await
        .expect(422);
    assert!(
        bad["message"]
            .as_str()
            .expect("message")
            .contains("Unsupported value")
    );
    let dry = server
        .delete_with(&format!("{PODS}/only"), &json!({"dryRun": ["All"]}))
        .await
        .expect(400);
    assert!(dry["message"].as_str().expect("message").contains("dryRun"));
    server.get(&format!("{PODS}/only")).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn namespace_waits_for_terminating_pods() {
    let mut server = start().await;
    add_node(&server, "node-1").await;
    server
        .post("/api/v1/namespaces", &namespace("team"))
        .await
        .expect(201);
    let team_pods = "/api/v1/namespaces/team/pods";
    server
        .post(team_pods, &pod("running", json!({})))
        .await
        .expect(201);
    server
        .post(
            &format!("{team_pods}/running/binding"),
            &json!({"metadata": {"name": "running"}, "target": {"kind": "Node", "name": "node-1"}}),
        )
        .await
        .expect(201);
    server
        .post(team_pods, &pod("pending", json!({})))
        .await
        .expect(201);

    let ns = server.delete("/api/v1/namespaces/team").await.expect(200);
    assert_eq!(ns["status"]["phase"], "Terminating");
    // The unbound pod is gone, the bound one is stopping, and the
    // namespace waits for it.
    assert_eq!(server.names(team_pods).await, ["running"]);
    let running = server
        .get(&format!("{team_pods}/running"))
        .await
        .expect(200);
    assert!(running["metadata"]["deletionTimestamp"].is_string());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.get("/api/v1/namespaces/team").await.expect(200);

    // The agent finishes: the namespace goes soon after.
    server
        .delete(&format!("{team_pods}/running?gracePeriodSeconds=0"))
        .await
        .expect(200);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let reply = server.get("/api/v1/namespaces/team").await;
        if reply.status.as_u16() == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace still there: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
