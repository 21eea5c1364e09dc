//! A restarted server over the same data directory (durable store) keeps
//! every acknowledged object and allocation, and never hands an allocated
//! ClusterIP or NodePort out twice.

mod api_support;

use std::collections::BTreeSet;

use api_support::{deployment, namespace, pod, service, start_durable};
use serde_json::{Value, json};
use skiff_control::store::{RedbStore, Store};

const SVCS: &str = "/api/v1/namespaces/default/services";

fn ips(list: &Value) -> BTreeSet<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_owned))
        .collect()
}

/// The Services of a list but the API server's own `kubernetes` Service
/// (whose target port follows the server's port).
fn user_services(list: &Value) -> Vec<Value> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["metadata"]["name"] != "kubernetes")
        .cloned()
        .collect()
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in base URL")
}

#[tokio::test]
async fn restart_keeps_objects_and_allocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_durable(dir.path()).await;
    server
        .post("/api/v1/namespaces", &namespace("team"))
        .await
        .expect(201);
    let p = server
        .post(
            "/api/v1/namespaces/team/pods",
            &pod("p", json!({"app": "x"})),
        )
        .await
        .expect(201);
    for i in 0..5 {
        server
            .post(
                SVCS,
                &service(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await
            .expect(201);
    }
    let np = server
        .post(
            SVCS,
            &service("np", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .expect(201);
    let node = server
        .post("/api/v1/nodes", &json!({"metadata": {"name": "n1"}}))
        .await
        .expect(201);
    server
        .post(
            "/apis/apps/v1/namespaces/team/deployments",
            &deployment("d", "d", 2),
        )
        .await
        .expect(201);
    let before_services = server.get(SVCS).await.expect(200);
    let before_ips = ips(&before_services);
    assert_eq!(before_ips.len(), 7, "six and the kubernetes Service");
    server.stop().await;

    let mut server = start_durable(dir.path()).await;
    let p_after = server
        .get("/api/v1/namespaces/team/pods/p")
        .await
        .expect(200);
    assert_eq!(p_after, p, "pod unchanged, same uid and resourceVersion");
    let after_services = server.get(SVCS).await.expect(200);
    assert_eq!(
        user_services(&after_services),
        user_services(&before_services)
    );
    // The kubernetes Service kept its ClusterIP and follows the new port.
    let api = server.get(&format!("{SVCS}/kubernetes")).await.expect(200);
    assert_eq!(api["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(api["spec"]["ports"][0]["targetPort"], port_of(&server.base));
    assert_eq!(server.get("/api/v1/nodes/n1").await.expect(200), node);
    assert_eq!(
        server
            .get("/apis/apps/v1/namespaces/team/deployments/d")
            .await
            .expect(200)["spec"]["replicas"],
        2
    );

    // New allocations avoid everything held before the restart.
    for i in 0..5 {
        let svc = server
            .post(
                SVCS,
                &service(&format!("t{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await
            .expect(201);
        let ip = svc["spec"]["clusterIP"].as_str().expect("ip").to_owned();
        assert!(!before_ips.contains(&ip), "ClusterIP {ip} handed out twice");
    }
    let all = ips(&server.get(SVCS).await.expect(200));
    assert_eq!(all.len(), 12, "all ClusterIPs distinct");
    let held_port = np["spec"]["ports"][0]["nodePort"].clone();
    let clash = server
        .post(
            SVCS,
            &service(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": held_port}]}),
            ),
        )
        .await
        .expect(422);
    assert!(
        clash["message"]
            .as_str()
            .expect("message")
            .contains("already allocated")
    );
    let taken_ip = before_ips.iter().next().expect("ip").clone();
    server
        .post(
            SVCS,
            &service(
                "dup",
                json!({"clusterIP": taken_ip, "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect(422);
    let n2 = server
        .post("/api/v1/nodes", &json!({"metadata": {"name": "n2"}}))
        .await
        .expect(201);
    assert_ne!(n2["spec"]["podCIDR"], node["spec"]["podCIDR"]);
    // Resource versions keep increasing across the restart.
    let newer: i64 = n2["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("rv");
    let older: i64 = node["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("rv");
    assert!(newer > older);
    server.stop().await;
}

#[tokio::test]
async fn startup_repairs_leaks_and_finishes_terminating_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_durable(dir.path()).await;
    let svc = server
        .post(
            SVCS,
            &service(
                "leaky",
                json!({"clusterIP": "10.96.50.50", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.50.50");
    server
        .post("/api/v1/namespaces", &namespace("half-gone"))
        .await
        .expect(201);
    server
        .post(
            "/api/v1/namespaces/half-gone/pods",
            &pod("orphan", json!({})),
        )
        .await
        .expect(201);
    // A client may write `phase: Terminating` into status; that alone must
    // not get the namespace deleted at startup.
    server
        .post("/api/v1/namespaces", &namespace("tricky"))
        .await
        .expect(201);
    server
        .patch(
            "/api/v1/namespaces/tricky/status",
            "application/merge-patch+json",
            &json!({"status": {"phase": "Terminating"}}),
        )
        .await
        .expect(200);
    server
        .post("/api/v1/namespaces/tricky/pods", &pod("kept", json!({})))
        .await
        .expect(403);
    server.stop().await;

    // Simulate a crash: the Service vanished without its ClusterIP being
    // released, and a namespace deletion stopped after marking it
    // Terminating.
    {
        let store = RedbStore::open(dir.path()).expect("open store");
        store
            .delete("/registry/services/default/leaky", None)
            .await
            .expect("delete service key");
        let (kv, _) = store
            .get("/registry/namespaces/half-gone")
            .await
            .expect("get");
        let mut ns: Value = serde_json::from_slice(&kv.expect("namespace").value).expect("json");
        ns["status"]["phase"] = json!("Terminating");
        ns["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        store
            .update(
                "/registry/namespaces/half-gone",
                serde_json::to_vec(&ns).expect("json"),
                None,
            )
            .await
            .expect("mark terminating");
    }

    let mut server = start_durable(dir.path()).await;
    server.get("/api/v1/namespaces/half-gone").await.expect(404);
    server
        .get("/api/v1/namespaces/half-gone/pods/orphan")
        .await
        .expect(404);
    server.get("/api/v1/namespaces/tricky").await.expect(200);
    let reused = server
        .post(
            SVCS,
            &service(
                "again",
                json!({"clusterIP": "10.96.50.50", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(
        reused["spec"]["clusterIP"], "10.96.50.50",
        "leaked address reclaimed at startup"
    );
    server.stop().await;
}
