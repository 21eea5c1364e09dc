//! DNS from a pod: service names through the search path, headless names,
//! SRV, and a name outside the cluster forwarded to a loopback upstream.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use crate::cluster::{client_pod, cluster_ip, web_pods};
use crate::harness::{Dataplane, Options, Up};
use crate::upstream::{EXTERNAL_ADDR, EXTERNAL_NAME, UPSTREAM, Upstreams};

/// The addresses `getent ahostsv4 NAME` prints (first column).
fn lookup(up: &Up, pod: &str, name: &str) -> BTreeSet<Ipv4Addr> {
    up.bash_in(pod, &format!("getent ahostsv4 {name}"))
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn dns_from_a_pod(dataplane: Dataplane) {
    let mut opts = Options::new(dataplane);
    opts.dns_upstream = Some(UPSTREAM);
    let up = Up::start(opts);
    let upstreams = Upstreams::start(up.record.nodes.iter().map(|n| n.netns.as_str()));
    let web = web_pods(&up);
    let node1 = &up.node_names()[1];
    client_pod(&up, "client", node1);

    let vip = BTreeSet::from([cluster_ip(&up, "web")]);
    for name in [
        "web",
        "web.default",
        "web.default.svc",
        "web.default.svc.cluster.local",
    ] {
        assert_eq!(lookup(&up, "client", name), vip, "{name}");
    }
    let pod_ips: BTreeSet<Ipv4Addr> = web.iter().filter_map(|p| p.ip).collect();
    assert_eq!(lookup(&up, "client", "web-headless"), pod_ips, "headless");

    let srv = up.bash_in(
        "client",
        "dig +short SRV _http._tcp.web.default.svc.cluster.local",
    );
    let records: Vec<Vec<&str>> = srv
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(records.len(), 1, "SRV of web: {srv}");
    assert_eq!(records[0][2], "80", "SRV port: {srv}");
    assert_eq!(
        records[0][3], "web.default.svc.cluster.local.",
        "SRV target: {srv}"
    );
    let headless_srv = up.bash_in(
        "client",
        "dig +short SRV _http._tcp.web-headless.default.svc.cluster.local",
    );
    assert_eq!(
        headless_srv
            .lines()
            .filter(|l| l.contains(" 8080 "))
            .count(),
        3,
        "one SRV record per ready pod: {headless_srv}"
    );

    let external = EXTERNAL_NAME.trim_end_matches('.');
    assert_eq!(
        lookup(&up, "client", external),
        BTreeSet::from([EXTERNAL_ADDR]),
        "forwarded name"
    );
    assert!(
        upstreams.external_queries.load(Ordering::Relaxed) >= 1,
        "the upstream never saw the query"
    );
    drop(upstreams);
    up.shutdown();
}
