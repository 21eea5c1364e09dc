//! Golden-file tests of the iptables payloads (unprivileged).
//!
//! Each case renders a desired state to an `iptables-restore --noflush`
//! payload and compares it byte for byte with `tests/golden/<case>.txt`.
//! After an intended change to the rule layout, regenerate the files with
//!
//! ```text
//! SKIFF_BLESS=1 cargo test -p skiff-proxy --test iptables_golden
//! ```
//!
//! and review the diff like code: it is exactly what changes on nodes.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use skiff_proxy::iptables::Ruleset;
use skiff_proxy::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey, diff};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("SKIFF_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}; run with SKIFF_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "payload differs from {} (SKIFF_BLESS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

fn ep(addr: [u8; 4], node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addr: Ipv4Addr::from(addr),
        port: 8080,
        node_name: Some(node.to_string()),
        is_local: node == "node-a",
        ready,
        serving,
        terminating,
    }
}

fn ready(addr: [u8; 4], node: &str) -> Endpoint {
    ep(addr, node, true, true, false)
}

fn service(ns: &str, name: &str, cluster_ip: [u8; 4], endpoints: Vec<Endpoint>) -> ServiceEntry {
    ServiceEntry {
        key: ServicePortKey::new(ns, name, "http"),
        cluster_ip: Some(Ipv4Addr::from(cluster_ip)),
        port: 80,
        protocol: Protocol::Tcp,
        node_port: None,
        external_local: false,
        internal_local: false,
        affinity_timeout_secs: None,
        endpoints,
    }
}

fn state(entries: Vec<ServiceEntry>) -> DesiredState {
    DesiredState {
        services: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
        node_name: "node-a".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 10, 1)],
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    }
}

fn full(state: &DesiredState) -> String {
    Ruleset::render(state).full_payload(None).text
}

fn three_endpoints() -> Vec<Endpoint> {
    vec![
        ready([10, 244, 1, 2], "node-a"),
        ready([10, 244, 2, 2], "node-b"),
        ready([10, 244, 3, 2], "node-c"),
    ]
}

#[test]
fn single_service_three_endpoints() {
    let s = state(vec![service(
        "default",
        "web",
        [10, 96, 0, 10],
        three_endpoints(),
    )]);
    golden("single_service_three_endpoints", &full(&s));
}

#[test]
fn nodeport_cluster_policy() {
    let mut svc = service("default", "web", [10, 96, 0, 10], three_endpoints());
    svc.node_port = Some(30080);
    golden("nodeport_cluster_policy", &full(&state(vec![svc])));
}

#[test]
fn nodeport_local_policy() {
    let mut svc = service("default", "web", [10, 96, 0, 10], three_endpoints());
    svc.node_port = Some(30080);
    svc.external_local = true;
    golden("nodeport_local_policy", &full(&state(vec![svc])));
}

#[test]
fn no_endpoints() {
    let mut tcp = service("default", "empty", [10, 96, 0, 20], vec![]);
    tcp.node_port = Some(30020);
    let mut udp = service("default", "empty-dns", [10, 96, 0, 21], vec![]);
    udp.key.port_name = "dns".into();
    udp.protocol = Protocol::Udp;
    udp.port = 53;
    // Not ready and not serving: unusable, so still "no endpoints".
    udp.endpoints = vec![ep([10, 244, 1, 9], "node-a", false, false, false)];
    golden("no_endpoints", &full(&state(vec![tcp, udp])));
}

#[test]
fn affinity() {
    let mut svc = service("default", "sticky", [10, 96, 0, 30], three_endpoints());
    svc.affinity_timeout_secs = Some(10800);
    golden("affinity", &full(&state(vec![svc])));
}

#[test]
fn terminating_only_fallback() {
    let svc = service(
        "default",
        "draining",
        [10, 96, 0, 40],
        vec![
            // Terminating but still serving: used, since nothing is ready.
            ep([10, 244, 1, 5], "node-a", false, true, true),
            ep([10, 244, 2, 5], "node-b", false, true, true),
            // Terminating and no longer serving: never used.
            ep([10, 244, 3, 5], "node-c", false, false, true),
        ],
    );
    golden("terminating_only_fallback", &full(&state(vec![svc])));
}

#[test]
fn incremental_one_of_three() {
    let old = state(vec![
        service("default", "alpha", [10, 96, 0, 51], three_endpoints()),
        service("default", "beta", [10, 96, 0, 52], three_endpoints()),
        service("default", "gamma", [10, 96, 0, 53], three_endpoints()),
    ]);
    // beta loses one endpoint and gains another; alpha and gamma are
    // untouched and must not appear in the payload.
    let mut new = old.clone();
    let beta = new
        .services
        .get_mut(&ServicePortKey::new("default", "beta", "http"))
        .expect("beta");
    beta.endpoints.remove(1);
    beta.endpoints.push(ready([10, 244, 4, 2], "node-d"));

    let installed = Ruleset::render(&old);
    let changes = diff(&old, &new);
    assert_eq!(changes.updated.len(), 1);
    let update = installed.incremental(&new, changes.keys());
    let text = update.payload.text.clone();
    assert!(!text.contains("alpha") && !text.contains("gamma"), "{text}");
    golden("incremental_one_of_three", &text);

    // The incremental result is what a full render of the new state gives.
    let mut applied = installed.clone();
    applied.commit(update);
    assert_eq!(applied.tables(), Ruleset::render(&new).tables());
}
