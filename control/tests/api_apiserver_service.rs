//! The `kubernetes` Service the API server keeps in `default`, as
//! kube-apiserver does.

mod api_support;

use std::sync::Arc;

use api_support::*;
use serde_json::json;
use skiff_control::store::{MemStore, Store};

const SVC: &str = "/api/v1/namespaces/default/services/kubernetes";
const SLICE: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes";

fn port_of(server: &TestServer) -> u16 {
    server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in base URL")
}

#[tokio::test]
async fn created_at_startup_with_the_first_cluster_ip() {
    let mut server = start().await;
    let svc = server.get(SVC).await.expect(200);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["port"].as_i64()),
        (Some("https"), Some(443))
    );
    assert_eq!(port["targetPort"], port_of(&server));
    assert!(svc["spec"].get("selector").is_none());
    // Listening on loopback: pods could not reach it, so no endpoints.
    server.get(SLICE).await.expect(404);
    // Its ClusterIP is held.
    let clash = server
        .post(
            "/api/v1/namespaces/default/services",
            &service(
                "squatter",
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect(422);
    assert!(
        clash["message"]
            .as_str()
            .expect("message")
            .contains("already allocated"),
        "{clash}"
    );
    server.stop().await;
}

#[tokio::test]
async fn endpoint_slice_follows_the_advertised_address() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut config = config(std::path::Path::new("/nonexistent"));
    config.service_cidr = "10.100.0.0/16".parse().expect("cidr");
    config.advertise_address = Some("192.0.2.10".parse().expect("ip"));
    let mut server = start_with(config.clone(), store.clone()).await;
    let svc = server.get(SVC).await.expect(200);
    assert_eq!(svc["spec"]["clusterIP"], "10.100.0.1");
    let slice = server.get(SLICE).await.expect(200);
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["192.0.2.10"]));
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(slice["ports"][0]["name"], "https");
    assert_eq!(slice["ports"][0]["port"], port_of(&server));
    let first_uid = svc["metadata"]["uid"].clone();
    server.stop().await;

    // Restarted elsewhere: same Service, slice moved.
    config.advertise_address = Some("192.0.2.11".parse().expect("ip"));
    let mut server = start_with(config.clone(), store.clone()).await;
    let svc = server.get(SVC).await.expect(200);
    assert_eq!(svc["metadata"]["uid"], first_uid, "kept, not recreated");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_of(&server));
    let slice = server.get(SLICE).await.expect(200);
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["192.0.2.11"]));
    assert_eq!(slice["ports"][0]["port"], port_of(&server));
    server.stop().await;

    // Restarted on loopback only: the stale slice goes.
    config.advertise_address = None;
    let mut server = start_with(config, store).await;
    server.get(SVC).await.expect(200);
    server.get(SLICE).await.expect(404);
    server.stop().await;
}
