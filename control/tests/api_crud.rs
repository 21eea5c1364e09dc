//! CRUD of every kind over HTTP, discovery, subresources and patches,
//! against a real server on loopback.

mod api_support;

use api_support::{deployment, namespace, pod, service, start};
use serde_json::json;

#[tokio::test]
async fn discovery_version_and_health() {
    let mut server = start().await;
    assert_eq!(
        server.get("/api").await.expect(200)["versions"],
        json!(["v1"])
    );
    let groups = server.get("/apis").await.expect(200);
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"]
    );
    let core = server.get("/api/v1").await.expect(200);
    let pods = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods")
        .clone();
    assert_eq!(pods["shortNames"], json!(["po"]));
    let apps = server.get("/apis/apps/v1").await.expect(200);
    assert!(
        apps["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    server.get("/apis/discovery.k8s.io/v1").await.expect(200);
    server.get("/apis/apps").await.expect(200);
    assert_eq!(server.get("/version").await.expect(200)["major"], "1");
    assert_eq!(server.get("/healthz").await.status.as_u16(), 200);
    assert_eq!(server.get("/readyz").await.status.as_u16(), 200);
    let missing = server.get("/apis/policy/v1").await.expect(404);
    assert_eq!(missing["kind"], "Status");
    server.get("/openapi/v2").await.expect(404);
    server.get("/api/v1/widgets").await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn default_namespaces_exist_and_are_protected() {
    let mut server = start().await;
    let names = server.names("/api/v1/namespaces").await;
    for ns in ["default", "kube-public", "kube-system", "kube-node-lease"] {
        assert!(names.contains(&ns.to_owned()), "{names:?}");
    }
    let status = server
        .delete("/api/v1/namespaces/default")
        .await
        .expect(403);
    assert_eq!(status["reason"], "Forbidden");
    server.stop().await;
}

#[tokio::test]
async fn pod_crud_with_server_fields() {
    let mut server = start().await;
    let path = "/api/v1/namespaces/default/pods";
    let created = server
        .post(path, &pod("web", json!({"app": "web"})))
        .await
        .expect(201);
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(meta["generation"], 1);
    let rv: i64 = meta["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert_eq!(created["status"]["phase"], "Pending");
    // Defaults were applied.
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    assert_eq!(
        created["spec"]["containers"][0]["ports"][0]["protocol"],
        "TCP"
    );

    let got = server.get(&format!("{path}/web")).await.expect(200);
    assert_eq!(got, created);

    let duplicate = server.post(path, &pod("web", json!({}))).await.expect(409);
    assert_eq!(duplicate["reason"], "AlreadyExists");
    assert_eq!(duplicate["message"], "pods \"web\" already exists");

    // Image change via PUT is allowed and bumps generation.
    let mut next = got.clone();
    next["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    let updated = server.put(&format!("{path}/web"), &next).await.expect(200);
    assert_eq!(updated["metadata"]["generation"], 2);
    let rv2: i64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("rv");
    assert!(rv2 > rv);

    // Stale resourceVersion: 409 Conflict.
    let stale = server.put(&format!("{path}/web"), &got).await.expect(409);
    assert_eq!(stale["reason"], "Conflict");
    assert!(
        stale["message"]
            .as_str()
            .expect("message")
            .contains("the object has been modified")
    );

    // Other spec changes are forbidden (binding goes through pods/binding).
    let mut moved = updated.clone();
    moved["spec"]["nodeName"] = json!("node-1");
    let forbidden = server.put(&format!("{path}/web"), &moved).await.expect(422);
    assert_eq!(forbidden["details"]["causes"][0]["field"], "spec");

    // List: PodList with resourceVersion; all-namespaces list too.
    let list = server.get(path).await.expect(200);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
    assert_eq!(list.get("continue"), None);
    assert_eq!(server.names("/api/v1/pods?limit=1").await, ["web"]);

    let deleted = server.delete(&format!("{path}/web")).await.expect(200);
    assert_eq!(deleted["metadata"]["name"], "web");
    let gone = server.get(&format!("{path}/web")).await.expect(404);
    assert_eq!(gone["message"], "pods \"web\" not found");
    assert_eq!(gone["details"]["kind"], "pods");
    server.delete(&format!("{path}/web")).await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let mut server = start().await;
    let path = "/api/v1/namespaces/default/pods/p";
    server
        .post("/api/v1/namespaces/default/pods", &pod("p", json!({})))
        .await
        .expect(201);

    let status = server
        .patch(&format!("{path}/status"), "application/merge-patch+json", &json!({"status": {"phase": "Running", "podIP": "10.244.0.5"}, "metadata": {"labels": {"ignored": "yes"}}}))
        .await
        .expect(200);
    assert_eq!(status["status"]["phase"], "Running");
    assert_eq!(
        status["metadata"]["labels"].get("ignored"),
        None,
        "status writes change only status"
    );
    assert_eq!(status["metadata"]["generation"], 1);

    // A main-resource write cannot change status.
    let mut body = status.clone();
    body["status"]["phase"] = json!("Failed");
    body["metadata"]["labels"] = json!({"tier": "web"});
    let main = server.put(path, &body).await.expect(200);
    assert_eq!(main["status"]["phase"], "Running");
    assert_eq!(main["metadata"]["labels"]["tier"], "web");
    assert_eq!(main["metadata"]["generation"], 1, "labels are not spec");

    // PUT on /status works too.
    let mut st = main.clone();
    st["status"]["phase"] = json!("Succeeded");
    let put = server.put(&format!("{path}/status"), &st).await.expect(200);
    assert_eq!(put["status"]["phase"], "Succeeded");
    assert_eq!(
        server.get(&format!("{path}/status")).await.expect(200)["status"]["phase"],
        "Succeeded"
    );
    server.stop().await;
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let mut server = start().await;
    server
        .post("/api/v1/namespaces/default/pods", &pod("p", json!({})))
        .await
        .expect(201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-1"}});
    let ok = server
        .post("/api/v1/namespaces/default/pods/p/binding", &binding)
        .await
        .expect(201);
    assert_eq!(ok["status"], "Success");
    let pod = server
        .get("/api/v1/namespaces/default/pods/p")
        .await
        .expect(200);
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    let again = server
        .post("/api/v1/namespaces/default/pods/p/binding", &binding)
        .await
        .expect(409);
    assert!(
        again["message"]
            .as_str()
            .expect("message")
            .contains("already assigned to node")
    );
    server.stop().await;
}

#[tokio::test]
async fn patch_kinds() {
    let mut server = start().await;
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    server
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("web", "web", 1),
        )
        .await
        .expect(201);

    let merged = server
        .patch(
            path,
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": "1"}}}),
        )
        .await
        .expect(200);
    assert_eq!(merged["metadata"]["labels"]["a"], "1");
    assert_eq!(merged["metadata"]["generation"], 1);

    let json_patched = server
        .patch(
            path,
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
        )
        .await
        .expect(200);
    assert_eq!(json_patched["spec"]["replicas"], 4);
    assert_eq!(json_patched["metadata"]["generation"], 2);

    // Strategic merge: containers merged by name, not replaced.
    let smp = server
        .patch(
            path,
            "application/strategic-merge-patch+json",
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy:1"}]}}}}),
        )
        .await
        .expect(200);
    let containers: Vec<&str> = smp["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(containers, ["app", "sidecar"]);

    // A patch that pins a stale resourceVersion conflicts.
    let stale = server
        .patch(
            path,
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 9}}),
        )
        .await
        .expect(409);
    assert_eq!(stale["reason"], "Conflict");

    let unsupported = server
        .patch(path, "application/apply-patch+yaml", &json!({}))
        .await
        .expect(415);
    assert_eq!(unsupported["reason"], "UnsupportedMediaType");
    let failing = server
        .patch(
            path,
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/spec/nope"}]),
        )
        .await
        .expect(400);
    assert_eq!(failing["reason"], "BadRequest");
    server
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/nope",
            "application/merge-patch+json",
            &json!({}),
        )
        .await
        .expect(404);
    server.stop().await;
}

#[tokio::test]
async fn scale_subresource() {
    let mut server = start().await;
    server
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("web", "web", 2),
        )
        .await
        .expect(201);
    let scale = server
        .get("/apis/apps/v1/namespaces/default/deployments/web/scale")
        .await
        .expect(200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    // kubectl scale sends a merge patch to the scale subresource.
    let scaled = server
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )
        .await
        .expect(200);
    assert_eq!(scaled["spec"]["replicas"], 5);
    let d = server
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await
        .expect(200);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    let mut put = scaled.clone();
    put["spec"]["replicas"] = json!(-1);
    assert_eq!(
        server
            .put(
                "/apis/apps/v1/namespaces/default/deployments/web/scale",
                &put
            )
            .await
            .expect(422)["reason"],
        "Invalid"
    );
    put["spec"]["replicas"] = json!(0);
    server
        .put(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &put,
        )
        .await
        .expect(200);
    // Stale scale resourceVersion conflicts.
    server
        .put(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &put,
        )
        .await
        .expect(409);

    let mut rs = deployment("rs", "rs", 1);
    rs["kind"] = json!("ReplicaSet");
    server
        .post("/apis/apps/v1/namespaces/default/replicasets", &rs)
        .await
        .expect(201);
    assert_eq!(
        server
            .get("/apis/apps/v1/namespaces/default/replicasets/rs/scale")
            .await
            .expect(200)["spec"]["replicas"],
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn every_kind_round_trips() {
    let mut server = start().await;
    server
        .post("/api/v1/namespaces", &namespace("team"))
        .await
        .expect(201);
    let ns = server.get("/api/v1/namespaces/team").await.expect(200);
    assert_eq!(ns["status"]["phase"], "Active");

    let node = server
        .post("/api/v1/nodes", &json!({"metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}}, "status": {"capacity": {"cpu": "2"}}}))
        .await
        .expect(201);
    assert_eq!(
        node["status"]["capacity"]["cpu"], "2",
        "node status kept on create"
    );
    assert!(
        node["spec"]["podCIDR"]
            .as_str()
            .is_some_and(|c| c.starts_with("10.244."))
    );
    assert_eq!(server.names("/api/v1/nodes").await, ["node-1"]);

    server
        .post(
            "/api/v1/namespaces/team/pods",
            &pod("p", json!({"app": "x"})),
        )
        .await
        .expect(201);
    server
        .post(
            "/api/v1/namespaces/team/services",
            &service(
                "svc",
                json!({"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .expect(201);
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "svc-abc", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
        "ports": [{"name": "", "port": 8080}]
    });
    let created = server
        .post(
            "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices",
            &slice,
        )
        .await
        .expect(201);
    assert_eq!(created["ports"][0]["protocol"], "TCP");
    server
        .post(
            "/apis/apps/v1/namespaces/team/deployments",
            &deployment("d", "d", 1),
        )
        .await
        .expect(201);
    let mut rs = deployment("rs", "rs", 1);
    rs["kind"] = json!("ReplicaSet");
    rs["spec"]["paused"] = json!(true);
    let unknown = server
        .post(
            "/apis/apps/v1/namespaces/team/replicasets?fieldValidation=Strict",
            &rs,
        )
        .await
        .expect(400);
    assert!(
        unknown["message"]
            .as_str()
            .expect("message")
            .contains("spec.paused"),
        "paused is a Deployment field only"
    );
    rs["spec"].as_object_mut().expect("spec").remove("paused");
    server
        .post("/apis/apps/v1/namespaces/team/replicasets", &rs)
        .await
        .expect(201);
    server
        .post("/api/v1/namespaces/team/events", &json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "team"}, "reason": "Started", "type": "Normal"}))
        .await
        .expect(201);

    for (path, name) in [
        ("/api/v1/namespaces/team/pods", "p"),
        ("/api/v1/namespaces/team/services", "svc"),
        ("/api/v1/namespaces/team/events", "e1"),
        (
            "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices",
            "svc-abc",
        ),
        ("/apis/apps/v1/namespaces/team/deployments", "d"),
        ("/apis/apps/v1/namespaces/team/replicasets", "rs"),
    ] {
        assert_eq!(server.names(path).await, [name], "{path}");
        let object = server.get(&format!("{path}/{name}")).await.expect(200);
        let mut relabeled = object.clone();
        relabeled["metadata"]["labels"] = json!({"touched": "yes"});
        let updated = server
            .put(&format!("{path}/{name}"), &relabeled)
            .await
            .expect(200);
        assert_eq!(updated["metadata"]["labels"]["touched"], "yes", "{path}");
        assert_ne!(
            updated["metadata"]["resourceVersion"],
            object["metadata"]["resourceVersion"]
        );
        server.delete(&format!("{path}/{name}")).await.expect(200);
        assert!(server.names(path).await.is_empty(), "{path}");
    }
    let mut node = server.get("/api/v1/nodes/node-1").await.expect(200);
    node["spec"]["unschedulable"] = json!(true);
    server.put("/api/v1/nodes/node-1", &node).await.expect(200);
    assert_eq!(
        server
            .names("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue")
            .await,
        ["node-1"]
    );
    server.delete("/api/v1/nodes/node-1").await.expect(200);
    server.delete("/api/v1/namespaces/team").await.expect(200);
    server.get("/api/v1/namespaces/team").await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn create_variants_yaml_no_content_type_generate_name_unknown_fields() {
    let mut server = start().await;
    let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: from-yaml\nspec:\n  ports:\n  - port: 53\n    protocol: UDP\n";
    let created = server
        .post_raw(
            "/api/v1/namespaces/default/services",
            Some("application/yaml"),
            yaml,
        )
        .await
        .expect(201);
    assert_eq!(created["spec"]["ports"][0]["protocol"], "UDP");

    let untyped =
        r#"{"metadata":{"name":"no-ctype"},"spec":{"containers":[{"name":"c","image":"x:1"}]}}"#;
    let created = server
        .post_raw("/api/v1/namespaces/default/pods", None, untyped)
        .await
        .expect(201);
    assert_eq!(created["kind"], "Pod", "kind filled in from the URL");

    let generated = server
        .post("/api/v1/namespaces/default/pods", &json!({"metadata": {"generateName": "worker-"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}))
        .await
        .expect(201);
    let name = generated["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("worker-") && name.len() == "worker-".len() + 5,
        "{name}"
    );

    let reply = server
        .post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "extra"}, "spec": {"containers": [{"name": "c", "image": "x:1", "sparkle": true}]}}))
        .await;
    assert_eq!(reply.status.as_u16(), 201);
    assert!(
        reply
            .warnings
            .iter()
            .any(|w| w.contains("spec.containers[0].sparkle")),
        "{:?}",
        reply.warnings
    );
    assert_eq!(
        reply.body["spec"]["containers"][0].get("sparkle"),
        None,
        "unknown fields are pruned"
    );
    let strict = server
        .post("/api/v1/namespaces/default/pods?fieldValidation=Strict", &json!({"metadata": {"name": "strict"}, "spec": {"containers": [{"name": "c", "image": "x:1"}], "bogus": 1}}))
        .await
        .expect(400);
    assert!(
        strict["message"]
            .as_str()
            .expect("message")
            .contains("unknown field \"spec.bogus\"")
    );
    server.stop().await;
}

#[tokio::test]
async fn selectors_filter_lists() {
    let mut server = start().await;
    let path = "/api/v1/namespaces/default/pods";
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({"app": "cache", "canary": "true"})),
    ] {
        server.post(path, &pod(name, labels)).await.expect(201);
    }
    let q = |s: &str| format!("{path}?labelSelector={}", urlencode(s));
    assert_eq!(server.names(&q("app=web")).await, ["a", "b"]);
    assert_eq!(server.names(&q("app!=web")).await, ["c", "d"]);
    assert_eq!(server.names(&q("app in (db,cache)")).await, ["c", "d"]);
    assert_eq!(server.names(&q("app notin (web),!canary")).await, ["c"]);
    assert_eq!(server.names(&q("tier")).await, ["a", "b"]);
    assert_eq!(server.names(&q("app=web,tier=back")).await, ["b"]);
    let bad = server.get(&q("app in (")).await.expect(400);
    assert_eq!(bad["reason"], "BadRequest");

    server
        .post(
            &format!("{path}/a/binding"),
            &json!({"target": {"name": "n1"}}),
        )
        .await
        .expect(201);
    let f = |s: &str| format!("{path}?fieldSelector={}", urlencode(s));
    assert_eq!(server.names(&f("spec.nodeName=n1")).await, ["a"]);
    assert_eq!(
        server.names(&f("spec.nodeName!=n1,metadata.name!=d")).await,
        ["b", "c"]
    );
    assert_eq!(
        server.names(&f("status.phase=Pending")).await,
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        server
            .names(&format!(
                "/api/v1/pods?fieldSelector={}",
                urlencode("metadata.namespace=default,metadata.name=c")
            ))
            .await,
        ["c"]
    );
    let unsupported = server.get(&f("spec.hostname=x")).await.expect(400);
    assert!(
        unsupported["message"]
            .as_str()
            .expect("message")
            .contains("spec.hostname"),
        "{unsupported}"
    );

    // deletecollection honours the selector.
    let deleted = server.delete(&q("app=web")).await.expect(200);
    assert_eq!(deleted["items"].as_array().expect("items").len(), 2);
    assert_eq!(server.names(path).await, ["c", "d"]);
    server.stop().await;
}

#[tokio::test]
async fn delete_preconditions() {
    let mut server = start().await;
    let created = server
        .post("/api/v1/namespaces/default/pods", &pod("p", json!({})))
        .await
        .expect(201);
    let wrong_uid =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-it"}});
    let refused = server
        .delete_with("/api/v1/namespaces/default/pods/p", &wrong_uid)
        .await
        .expect(409);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("Precondition failed")
    );
    let right = json!({"preconditions": {"uid": created["metadata"]["uid"], "resourceVersion": created["metadata"]["resourceVersion"]}});
    server
        .delete_with("/api/v1/namespaces/default/pods/p", &right)
        .await
        .expect(200);
    server.stop().await;
}

#[tokio::test]
async fn namespace_deletion_cascades() {
    let mut server = start().await;
    server
        .post("/api/v1/namespaces", &namespace("doomed"))
        .await
        .expect(201);
    server
        .post("/api/v1/namespaces/doomed/pods", &pod("p", json!({})))
        .await
        .expect(201);
    let svc = server
        .post(
            "/api/v1/namespaces/doomed/services",
            &service("s", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .expect(201);
    let node_port = svc["spec"]["ports"][0]["nodePort"].clone();
    server
        .post(
            "/apis/apps/v1/namespaces/doomed/deployments",
            &deployment("d", "d", 1),
        )
        .await
        .expect(201);
    server
        .post(
            "/api/v1/namespaces/default/pods",
            &pod("survivor", json!({})),
        )
        .await
        .expect(201);

    let deleted = server.delete("/api/v1/namespaces/doomed").await.expect(200);
    assert_eq!(deleted["status"]["phase"], "Terminating");
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    server.get("/api/v1/namespaces/doomed").await.expect(404);
    assert!(
        server
            .names("/api/v1/namespaces/doomed/pods")
            .await
            .is_empty()
    );
    assert!(
        server
            .names("/api/v1/namespaces/doomed/services")
            .await
            .is_empty()
    );
    assert!(
        server
            .names("/apis/apps/v1/namespaces/doomed/deployments")
            .await
            .is_empty()
    );
    assert_eq!(server.names("/api/v1/pods").await, ["survivor"]);

    // The NodePort went back to the pool: it can be requested again.
    server
        .post("/api/v1/namespaces", &namespace("reborn"))
        .await
        .expect(201);
    server
        .post(
            "/api/v1/namespaces/reborn/services",
            &service(
                "s",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}),
            ),
        )
        .await
        .expect(201);
    // Creating in a namespace that does not exist fails.
    let missing = server
        .post("/api/v1/namespaces/doomed/pods", &pod("p", json!({})))
        .await
        .expect(404);
    assert_eq!(missing["message"], "namespaces \"doomed\" not found");
    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
