//! Bad input gets a 4xx `Status` naming the problem, as Kubernetes words it.

mod api_support;

use api_support::{deployment, pod, service, start};
use serde_json::json;

#[tokio::test]
async fn invalid_service_port_names_the_field() {
    let mut server = start().await;
    let status = server
        .post(
            "/api/v1/namespaces/default/services",
            &service(
                "web",
                json!({"ports": [{"port": 70000, "targetPort": 8080}]}),
            ),
        )
        .await
        .expect(422);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);
    assert_eq!(
        status["message"],
        "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    assert_eq!(status["details"]["name"], "web");
    assert_eq!(status["details"]["kind"], "Service");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.ports[0].port"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
    server.stop().await;
}

#[tokio::test]
async fn names_protocols_types_and_containers() {
    let mut server = start().await;
    let bad_name = server
        .post("/api/v1/namespaces/default/pods", &pod("Web_1", json!({})))
        .await
        .expect(422);
    assert_eq!(bad_name["details"]["causes"][0]["field"], "metadata.name");
    assert!(
        bad_name["message"]
            .as_str()
            .expect("message")
            .contains("RFC 1123 subdomain")
    );

    // Service names are DNS-1035 labels: no leading digit.
    let svc = server
        .post(
            "/api/v1/namespaces/default/services",
            &service("1web", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect(422);
    assert!(
        svc["message"]
            .as_str()
            .expect("message")
            .contains("DNS-1035")
    );

    let proto = server
        .post(
            "/api/v1/namespaces/default/services",
            &service("p", json!({"ports": [{"port": 80, "protocol": "ICMP"}]})),
        )
        .await
        .expect(422);
    assert!(
        proto["message"]
            .as_str()
            .expect("message")
            .contains("spec.ports[0].protocol: Unsupported value: \"ICMP\"")
    );

    let ty = server
        .post(
            "/api/v1/namespaces/default/services",
            &service("t", json!({"type": "Magic", "ports": [{"port": 80}]})),
        )
        .await
        .expect(422);
    assert_eq!(ty["details"]["causes"][0]["field"], "spec.type");

    let no_ports = server
        .post(
            "/api/v1/namespaces/default/services",
            &service("n", json!({})),
        )
        .await
        .expect(422);
    assert!(
        no_ports["message"]
            .as_str()
            .expect("message")
            .contains("spec.ports: Required value")
    );

    let empty = server
        .post(
            "/api/v1/namespaces/default/pods",
            &json!({"metadata": {"name": "e"}, "spec": {"containers": []}}),
        )
        .await
        .expect(422);
    assert!(
        empty["message"]
            .as_str()
            .expect("message")
            .contains("spec.containers: Required value")
    );

    let dup = server
        .post(
            "/api/v1/namespaces/default/pods",
            &json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "a", "image": "y:1"}]}}),
        )
        .await
        .expect(422);
    assert!(
        dup["message"]
            .as_str()
            .expect("message")
            .contains("spec.containers[1].name: Duplicate value: \"a\"")
    );

    let labels = server
        .post(
            "/api/v1/namespaces/default/pods",
            &pod("l", json!({"app": "has space"})),
        )
        .await
        .expect(422);
    assert_eq!(labels["details"]["causes"][0]["field"], "metadata.labels");

    let mut mismatched = deployment("m", "web", 1);
    mismatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let d = server
        .post("/apis/apps/v1/namespaces/default/deployments", &mismatched)
        .await
        .expect(422);
    assert!(
        d["message"]
            .as_str()
            .expect("message")
            .contains("`selector` does not match template `labels`")
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let mut server = start().await;
    let wrong_ns = server
        .post("/api/v1/namespaces/default/pods", &{
            let mut p = pod("p", json!({}));
            p["metadata"]["namespace"] = json!("other");
            p
        })
        .await
        .expect(400);
    assert!(
        wrong_ns["message"]
            .as_str()
            .expect("message")
            .contains("does not match the namespace")
    );

    let wrong_kind = server
        .post(
            "/api/v1/namespaces/default/pods",
            &service("s", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect(400);
    assert_eq!(wrong_kind["reason"], "BadRequest");

    let wrong_type = server
        .post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1", "ports": [{"containerPort": "http"}]}]}}))
        .await
        .expect(400);
    assert!(
        wrong_type["message"]
            .as_str()
            .expect("message")
            .contains("spec.containers[0].ports[0].containerPort"),
        "{wrong_type}"
    );

    let not_json = server
        .post_raw(
            "/api/v1/namespaces/default/pods",
            Some("application/json"),
            "{nope",
        )
        .await
        .expect(400);
    assert_eq!(not_json["reason"], "BadRequest");

    let protobuf = server
        .post_raw(
            "/api/v1/namespaces/default/pods",
            Some("application/vnd.kubernetes.protobuf"),
            "x",
        )
        .await
        .expect(415);
    assert_eq!(protobuf["reason"], "UnsupportedMediaType");

    server
        .post("/api/v1/namespaces/default/pods", &pod("p", json!({})))
        .await
        .expect(201);
    let renamed = server
        .put("/api/v1/namespaces/default/pods/p", &pod("q", json!({})))
        .await
        .expect(400);
    assert!(
        renamed["message"]
            .as_str()
            .expect("message")
            .contains("does not match the name on the URL")
    );

    let with_rv = server
        .post("/api/v1/namespaces/default/pods", &{
            let mut p = pod("r", json!({}));
            p["metadata"]["resourceVersion"] = json!("5");
            p
        })
        .await
        .expect(400);
    assert!(
        with_rv["message"]
            .as_str()
            .expect("message")
            .contains("resourceVersion")
    );

    let dry = server
        .post(
            "/api/v1/namespaces/default/pods?dryRun=All",
            &pod("dry", json!({})),
        )
        .await
        .expect(400);
    assert!(dry["message"].as_str().expect("message").contains("dryRun"));

    let bad_rv = server
        .get("/api/v1/pods?watch=1&resourceVersion=abc")
        .await
        .expect(400);
    assert!(bad_rv["message"].as_str().expect("message").contains("abc"));

    // All-namespaces POST of a namespaced kind is not a thing.
    server
        .post("/api/v1/pods", &pod("x", json!({})))
        .await
        .expect(405);
    // Unknown subresource.
    server
        .get("/api/v1/namespaces/default/pods/p/exec")
        .await
        .expect(404);
    // Cluster-scoped create ignores no namespace; namespaced object without namespace path is 404.
    server.get("/api/v1/pods/p").await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn immutable_fields_on_update() {
    let mut server = start().await;
    let svc = server
        .post(
            "/api/v1/namespaces/default/services",
            &service("s", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect(201);
    let mut moved = svc.clone();
    moved["spec"]["clusterIP"] = json!("10.96.100.100");
    moved["spec"]["clusterIPs"] = json!(["10.96.100.100"]);
    let refused = server
        .put("/api/v1/namespaces/default/services/s", &moved)
        .await
        .expect(422);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("spec.clusterIP: Invalid value: \"10.96.100.100\": field is immutable")
    );

    let d = server
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("d", "web", 1),
        )
        .await
        .expect(201);
    let mut reselect = d.clone();
    reselect["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    reselect["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let refused = server
        .put("/apis/apps/v1/namespaces/default/deployments/d", &reselect)
        .await
        .expect(422);
    assert_eq!(refused["details"]["causes"][0]["field"], "spec.selector");
    server.stop().await;
}
