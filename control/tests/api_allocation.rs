//! ClusterIP and NodePort allocation through the API: dynamic, requested,
//! conflicting, released on delete; node pod CIDRs.

mod api_support;

use std::collections::BTreeSet;

use api_support::{service, start};
use serde_json::json;

const SVCS: &str = "/api/v1/namespaces/default/services";

#[tokio::test]
async fn cluster_ips_are_unique_and_requested_ones_honoured() {
    let mut server = start().await;
    let mut ips = BTreeSet::new();
    for i in 0..10 {
        let svc = server
            .post(
                SVCS,
                &service(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await
            .expect(201);
        let ip = svc["spec"]["clusterIP"]
            .as_str()
            .expect("clusterIP")
            .to_owned();
        assert!(ip.starts_with("10.9"), "{ip}");
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.clone()]));
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert!(ips.insert(ip), "duplicate ClusterIP");
    }

    let requested = server
        .post(
            SVCS,
            &service(
                "dns",
                json!({"clusterIP": "10.96.100.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(requested["spec"]["clusterIP"], "10.96.100.10");
    let taken = server
        .post(
            SVCS,
            &service(
                "dns2",
                json!({"clusterIP": "10.96.100.10", "ports": [{"port": 53}]}),
            ),
        )
        .await
        .expect(422);
    assert_eq!(taken["details"]["causes"][0]["field"], "spec.clusterIP");
    assert!(
        taken["message"]
            .as_str()
            .expect("message")
            .contains("provided IP is already allocated"),
        "{taken}"
    );
    let outside = server
        .post(
            SVCS,
            &service(
                "far",
                json!({"clusterIP": "192.168.1.1", "ports": [{"port": 53}]}),
            ),
        )
        .await
        .expect(422);
    assert!(
        outside["message"]
            .as_str()
            .expect("message")
            .contains("The range of valid IPs is 10.96.0.0/12"),
        "{outside}"
    );

    // Delete releases: the address can be requested again.
    server.delete(&format!("{SVCS}/dns")).await.expect(200);
    server
        .post(
            SVCS,
            &service(
                "dns3",
                json!({"clusterIP": "10.96.100.10", "ports": [{"port": 53}]}),
            ),
        )
        .await
        .expect(201);
    server.stop().await;
}

#[tokio::test]
async fn headless_and_external_name_get_no_ip() {
    let mut server = start().await;
    let headless = server
        .post(
            SVCS,
            &service("h", json!({"clusterIP": "None", "selector": {"app": "x"}})),
        )
        .await
        .expect(201);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let external = server
        .post(
            SVCS,
            &service(
                "e",
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(external["spec"].get("clusterIP"), None);
    server.stop().await;
}

#[tokio::test]
async fn node_ports_dynamic_requested_conflicting_and_out_of_range() {
    let mut server = start().await;
    let svc = server
        .post(SVCS, &service("np", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443, "nodePort": 30443}]})))
        .await
        .expect(201);
    let first = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("nodePort");
    assert!((30000..=32767).contains(&first), "{first}");
    assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30443);
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");

    let clash = server
        .post(
            SVCS,
            &service(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30443}]}),
            ),
        )
        .await
        .expect(422);
    assert_eq!(
        clash["message"],
        "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30443: provided port is already allocated"
    );
    let out = server
        .post(
            SVCS,
            &service(
                "np3",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            ),
        )
        .await
        .expect(422);
    assert!(
        out["message"]
            .as_str()
            .expect("message")
            .contains("The range of valid ports is 30000-32767"),
        "{out}"
    );
    // The failed creates took nothing: np3 with a free port works, and np2's
    // ClusterIP was returned.
    let ok = server
        .post(
            SVCS,
            &service(
                "np4",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30444}]}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(ok["spec"]["ports"][0]["nodePort"], 30444);

    // nodePort on a ClusterIP service is forbidden.
    let forbidden = server
        .post(
            SVCS,
            &service("cip", json!({"ports": [{"port": 80, "nodePort": 30500}]})),
        )
        .await
        .expect(422);
    assert!(
        forbidden["message"]
            .as_str()
            .expect("message")
            .contains("may not be used when `type` is 'ClusterIP'")
    );

    // Switching to ClusterIP releases the ports (PUT without them).
    let mut current = server.get(&format!("{SVCS}/np")).await.expect(200);
    current["spec"]["type"] = json!("ClusterIP");
    let switched = server
        .put(&format!("{SVCS}/np"), &current)
        .await
        .expect(200);
    assert_eq!(switched["spec"]["ports"][0].get("nodePort"), None);
    assert_eq!(
        switched["spec"]["clusterIP"], svc["spec"]["clusterIP"],
        "ClusterIP kept"
    );
    server
        .post(
            SVCS,
            &service(
                "np5",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30443}]}),
            ),
        )
        .await
        .expect(201);

    // A PUT of the original manifest (no allocated fields) keeps what it has.
    let manifest = service("np4", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    let mut with_rv = manifest.clone();
    with_rv["metadata"]["resourceVersion"] = ok["metadata"]["resourceVersion"].clone();
    let kept = server
        .put(&format!("{SVCS}/np4"), &with_rv)
        .await
        .expect(200);
    assert_eq!(kept["spec"]["ports"][0]["nodePort"], 30444);
    assert_eq!(kept["spec"]["clusterIP"], ok["spec"]["clusterIP"]);
    assert_eq!(
        kept["metadata"]["resourceVersion"], ok["metadata"]["resourceVersion"],
        "no-op update writes nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs() {
    let mut server = start().await;
    let mut cidrs = BTreeSet::new();
    for i in 0..5 {
        let node = server
            .post(
                "/api/v1/nodes",
                &json!({"metadata": {"name": format!("n{i}")}}),
            )
            .await
            .expect(201);
        let cidr = node["spec"]["podCIDR"]
            .as_str()
            .expect("podCIDR")
            .to_owned();
        assert_eq!(node["spec"]["podCIDRs"], json!([cidr.clone()]));
        assert!(
            cidr.starts_with("10.244.") && cidr.ends_with("/24"),
            "{cidr}"
        );
        assert!(cidrs.insert(cidr));
    }
    let taken = cidrs.iter().next().expect("one").clone();
    let clash = server
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": "dup"}, "spec": {"podCIDR": taken}}),
        )
        .await
        .expect(422);
    assert_eq!(clash["details"]["causes"][0]["field"], "spec.podCIDR");
    let mut node = server.get("/api/v1/nodes/n0").await.expect(200);
    node["spec"]["podCIDR"] = json!("10.244.200.0/24");
    node["spec"]["podCIDRs"] = json!(["10.244.200.0/24"]);
    server.put("/api/v1/nodes/n0", &node).await.expect(422);
    server.stop().await;
}
