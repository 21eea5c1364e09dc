//! The workload and configuration kinds over HTTP: DaemonSet, StatefulSet,
//! Job, ConfigMap, Secret, Lease: discovery, defaults, validation,
//! subresources, and the Job's generated selector and orphaning default.

mod api_support;

use api_support::*;
use serde_json::{Value, json};

fn template(labels: Value, restart: &str) -> Value {
    json!({"metadata": {"labels": labels},
           "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

fn daemon_set(name: &str, selector: Value, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": selector}, "template": template(labels, "Always")}})
}

fn stateful_set(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
           "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                    "template": template(json!({"app": name}), "Always")}})
}

fn job(name: &str, restart: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
           "spec": {"template": template(json!({"app": name}), restart)}})
}

fn message(body: &Value) -> &str {
    body["message"].as_str().expect("message")
}

fn resource<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == name)
}

#[tokio::test]
async fn discovery_lists_the_new_kinds() {
    let mut server = start().await;
    let groups = server.get("/apis").await.expect(200);
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for group in ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"] {
        assert!(names.contains(&group), "{names:?}");
    }
    let apps = server.get("/apis/apps/v1").await.expect(200);
    assert_eq!(
        resource(&apps, "daemonsets").expect("ds")["shortNames"],
        json!(["ds"])
    );
    assert_eq!(
        resource(&apps, "statefulsets").expect("sts")["shortNames"],
        json!(["sts"])
    );
    assert!(resource(&apps, "daemonsets/status").is_some());
    assert!(resource(&apps, "daemonsets/scale").is_none());
    assert!(resource(&apps, "statefulsets/scale").is_some());
    let batch = server.get("/apis/batch/v1").await.expect(200);
    let jobs = resource(&batch, "jobs").expect("jobs");
    assert!(jobs.get("shortNames").is_none());
    assert_eq!(jobs["categories"], json!(["all"]));
    assert!(resource(&batch, "jobs/status").is_some());
    let coordination = server.get("/apis/coordination.k8s.io/v1").await.expect(200);
    assert_eq!(
        resource(&coordination, "leases").expect("leases")["namespaced"],
        true
    );
    let core = server.get("/api/v1").await.expect(200);
    assert_eq!(
        resource(&core, "configmaps").expect("cm")["shortNames"],
        json!(["cm"])
    );
    assert!(resource(&core, "secrets").is_some());
    server.stop().await;
}

#[tokio::test]
async fn daemon_sets_are_validated_like_kubernetes() {
    let mut server = start().await;
    let path = "/apis/apps/v1/namespaces/default/daemonsets";
    let created = server
        .post(
            path,
            &daemon_set("agent", json!({"app": "agent"}), json!({"app": "agent"})),
        )
        .await
        .expect(201);
    assert_eq!(created["status"]["numberReady"], 0);
    assert_eq!(created["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        created["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );

    let mismatch = server
        .post(
            path,
            &daemon_set("bad", json!({"app": "x"}), json!({"app": "y"})),
        )
        .await
        .expect(422);
    assert!(
        message(&mismatch).contains("`selector` does not match template `labels`"),
        "{mismatch}"
    );
    let mut never = daemon_set("never", json!({"app": "n"}), json!({"app": "n"}));
    never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let refused = server.post(path, &never).await.expect(422);
    assert!(message(&refused).contains("spec.template.spec.restartPolicy"));
    let mut invalid_name = daemon_set("Agent", json!({"app": "a"}), json!({"app": "a"}));
    invalid_name["metadata"]["name"] = json!("Agent_1");
    server.post(path, &invalid_name).await.expect(422);

    // The selector is immutable; the status subresource is separate.
    let mut moved = created.clone();
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "agent", "tier": "x"}});
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let immutable = server
        .put(&format!("{path}/agent"), &moved)
        .await
        .expect(422);
    assert!(message(&immutable).contains("field is immutable"));
    let status = server
        .patch(
            &format!("{path}/agent/status"),
            "application/merge-patch+json",
            &json!({"status": {"desiredNumberScheduled": 3, "numberReady": 2}}),
        )
        .await
        .expect(200);
    assert_eq!(status["status"]["desiredNumberScheduled"], 3);
    let main = server
        .patch(
            &format!("{path}/agent"),
            "application/merge-patch+json",
            &json!({"status": {"numberReady": 99}}),
        )
        .await
        .expect(200);
    assert_eq!(
        main["status"]["numberReady"], 2,
        "status only changes through /status"
    );
    server.stop().await;
}

#[tokio::test]
async fn stateful_sets_scale_and_keep_their_identity_fields() {
    let mut server = start().await;
    let path = "/apis/apps/v1/namespaces/default/statefulsets";
    let created = server.post(path, &stateful_set("db", 3)).await.expect(201);
    assert_eq!(created["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        created["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    assert_eq!(created["status"]["replicas"], 0);

    let scale = server.get(&format!("{path}/db/scale")).await.expect(200);
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=db");
    server
        .patch(
            &format!("{path}/db/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )
        .await
        .expect(200);
    let scaled = server.get(&format!("{path}/db")).await.expect(200);
    assert_eq!(scaled["spec"]["replicas"], 5);

    let renamed = server
        .patch(
            &format!("{path}/db"),
            "application/merge-patch+json",
            &json!({"spec": {"serviceName": "other"}}),
        )
        .await
        .expect(422);
    assert!(message(&renamed).contains("updates to statefulset spec for fields other than"));
    let retemplated = server
        .patch(
            &format!("{path}/db"),
            "application/merge-patch+json",
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}}),
        )
        .await
        .expect(200);
    assert_eq!(
        retemplated["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    let mut bad = stateful_set("web", 1);
    bad["spec"]["podManagementPolicy"] = json!("Sometimes");
    let refused = server.post(path, &bad).await.expect(422);
    assert!(message(&refused).contains("spec.podManagementPolicy"));
    server.stop().await;
}

#[tokio::test]
async fn jobs_get_a_generated_selector_and_orphan_by_default() {
    let mut server = start().await;
    let path = "/apis/batch/v1/namespaces/default/jobs";
    let created = server.post(path, &job("pi", "Never")).await.expect(201);
    let uid = created["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        created["spec"]["selector"]["matchLabels"],
        json!({"batch.kubernetes.io/controller-uid": uid})
    );
    let labels = &created["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(created["spec"]["completions"], 1);
    assert_eq!(created["spec"]["backoffLimit"], 6);
    assert_eq!(created["metadata"]["labels"]["app"], "pi");
    assert_eq!(created["status"], json!({}));

    let always = server.post(path, &job("loop", "Always")).await.expect(422);
    assert!(
        message(&always).contains(r#"Unsupported value: "Always""#),
        "{always}"
    );
    let mut wrong_uid = job("forged", "Never");
    wrong_uid["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] =
        json!("someone-else");
    let forged = server.post(path, &wrong_uid).await.expect(422);
    assert!(message(&forged).contains("controller-uid"), "{forged}");
    let mut indexed = job("indexed", "Never");
    indexed["spec"]["completionMode"] = json!("Indexed");
    indexed["spec"]["parallelism"] = json!(2);
    let no_completions = server.post(path, &indexed).await.expect(422);
    assert!(message(&no_completions).contains("spec.completions"));

    // The template is immutable, parallelism is not.
    server
        .patch(
            &format!("{path}/pi"),
            "application/merge-patch+json",
            &json!({"spec": {"parallelism": 3}}),
        )
        .await
        .expect(200);
    let retemplate = server
        .patch(
            &format!("{path}/pi"),
            "application/merge-patch+json",
            &json!({"spec": {"template": {"metadata": {"labels": {"extra": "1"}}}}}),
        )
        .await
        .expect(422);
    assert!(message(&retemplate).contains("spec.template"));

    // A pod of the job, as the job controller would make it.
    let mut child = pod("pi-abcde", labels.clone());
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
        "name": "pi", "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    child["spec"]["restartPolicy"] = json!("Never");
    server
        .post("/api/v1/namespaces/default/pods", &child)
        .await
        .expect(201);
    // No policy: the pods are orphaned, with Kubernetes' warning.
    let reply = server.delete(&format!("{path}/pi")).await;
    assert!(
        reply
            .warnings
            .iter()
            .any(|w| w.contains("child pods are preserved by default")),
        "{:?}",
        reply.warnings
    );
    reply.expect(200);
    server.get(&format!("{path}/pi")).await.expect(404);
    let orphan = server
        .get("/api/v1/namespaces/default/pods/pi-abcde")
        .await
        .expect(200);
    assert!(orphan["metadata"].get("ownerReferences").is_none());

    // With a policy: no warning.
    server
        .post(path, &job("quiet", "OnFailure"))
        .await
        .expect(201);
    let reply = server
        .delete_with(
            &format!("{path}/quiet"),
            &json!({"propagationPolicy": "Background"}),
        )
        .await;
    assert!(reply.warnings.is_empty(), "{:?}", reply.warnings);
    reply.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn config_maps_and_secrets() {
    let mut server = start().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm =
        json!({"metadata": {"name": "settings"}, "data": {"app.conf": "x=1"}, "immutable": true});
    server.post(cms, &cm).await.expect(201);
    let bad_key = server
        .post(
            cms,
            &json!({"metadata": {"name": "bad"}, "data": {"no/slash": "x"}}),
        )
        .await
        .expect(422);
    assert!(
        message(&bad_key).contains("a valid config key"),
        "{bad_key}"
    );
    let both = server
        .post(
            cms,
            &json!({"metadata": {"name": "both"}, "data": {"k": "x"}, "binaryData": {"k": "eA=="}}),
        )
        .await
        .expect(422);
    assert!(message(&both).contains("duplicate of key present in binaryData"));
    let frozen = server
        .patch(
            &format!("{cms}/settings"),
            "application/merge-patch+json",
            &json!({"data": {"app.conf": "x=2"}}),
        )
        .await
        .expect(422);
    assert!(message(&frozen).contains("field is immutable when `immutable` is set"));

    let secrets = "/api/v1/namespaces/default/secrets";
    let created = server
        .post(
            secrets,
            &json!({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
        )
        .await
        .expect(201);
    assert_eq!(created["type"], "Opaque");
    assert_eq!(created["data"]["password"], "aHVudGVyMg==");
    assert!(created.get("stringData").is_none());
    let tls = server
        .post(
            secrets,
            &json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
        )
        .await
        .expect(422);
    assert!(message(&tls).contains("data[tls.key]"), "{tls}");
    let retyped = server
        .patch(
            &format!("{secrets}/creds"),
            "application/merge-patch+json",
            &json!({"type": "kubernetes.io/basic-auth"}),
        )
        .await
        .expect(422);
    assert!(message(&retyped).contains("type"));
    let by_type = server
        .names(&format!("{secrets}?fieldSelector=type%3DOpaque"))
        .await;
    assert_eq!(by_type, ["creds"]);
    server.stop().await;
}

#[tokio::test]
async fn leases_carry_node_heartbeats() {
    let mut server = start().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let lease = json!({"metadata": {"name": "node-1"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}});
    let created = server.post(path, &lease).await.expect(201);
    assert_eq!(created["spec"]["holderIdentity"], "node-1");
    let renewed = server
        .patch(
            &format!("{path}/node-1"),
            "application/merge-patch+json",
            &json!({"spec": {"renewTime": "2026-01-01T00:00:10.000000Z"}}),
        )
        .await
        .expect(200);
    assert_eq!(renewed["spec"]["renewTime"], "2026-01-01T00:00:10.000000Z");
    let bad = server
        .post(
            path,
            &json!({"metadata": {"name": "node-2"}, "spec": {"leaseDurationSeconds": 0}}),
        )
        .await
        .expect(422);
    assert!(message(&bad).contains("spec.leaseDurationSeconds"));
    server.stop().await;
}
