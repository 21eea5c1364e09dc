//! NodePort from the outside namespace on every node's address; with
//! `externalTrafficPolicy: Local` only local replicas answer and they see
//! the client's own address.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cluster::{apply, node_ips, ready_endpoints, wait_endpoints, web_pods};
use crate::harness::{Dataplane, Options, Up};
use crate::traffic::{count_names, curl_outside};

const LOCAL_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web-local
  namespace: default
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: 30081
"#;

pub fn nodeport_from_outside(dataplane: Dataplane) {
    let up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    let all: BTreeSet<String> = web.iter().map(|p| p.name.clone()).collect();
    let ips = node_ips(&up);
    assert_eq!(ips.len(), 3, "node addresses: {ips:?}");
    let outside = up.outside_ip();

    // Cluster policy (the example web-nodeport on 30080): every node
    // reaches every replica (round-robin: 6 requests, 2 each).
    for (node, ip) in &ips {
        let results = curl_outside(&up, &format!("http://{ip}:30080/"), 6);
        let counts = count_names(&results);
        assert_eq!(
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            all,
            "NodePort on {node} ({ip}): {counts:?}"
        );
        // A replica on another node sees this node as the client (SNAT, so
        // its reply comes back the same way).
        for a in results.iter().flatten() {
            let on = web.iter().find(|p| p.name == a.name).map(|p| &p.node);
            if on != Some(node) {
                assert_eq!(
                    a.peer.ip(),
                    std::net::IpAddr::V4(*ip),
                    "{} on another node than {node} must see {ip}",
                    a.name
                );
            }
        }
    }

    apply(&up, LOCAL_SERVICE);
    let endpoints: BTreeSet<_> = web.iter().filter_map(|p| p.ip).collect();
    wait_endpoints(&up, "web-local", &endpoints, Duration::from_secs(30));
    assert_eq!(ready_endpoints(&up, "web-local").len(), 3);
    for (node, ip) in &ips {
        let local: BTreeSet<String> = web
            .iter()
            .filter(|p| &p.node == node)
            .map(|p| p.name.clone())
            .collect();
        let url = format!("http://{ip}:30081/");
        // The proxies pick the new Service up asynchronously.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let results = loop {
            let results = curl_outside(&up, &url, 4);
            if results.iter().all(Result::is_ok) || local.is_empty() {
                break results;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Local NodePort on {node}: {results:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        if local.is_empty() {
            assert!(
                results.iter().all(Result::is_err),
                "{node} has no replica, yet Local NodePort answered: {results:?}"
            );
            continue;
        }
        for r in &results {
            let a = r.as_ref().expect("answer");
            assert!(
                local.contains(&a.name),
                "Local NodePort on {node} answered by {} (local: {local:?})",
                a.name
            );
            assert_eq!(
                a.peer.ip(),
                std::net::IpAddr::V4(outside),
                "Local must keep the client address"
            );
        }
    }
    up.shutdown();
}
