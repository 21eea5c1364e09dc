//! ClusterIP from a pod on another node: exact round-robin over 3 replicas.

use std::time::Duration;

use crate::cluster::{client_pod, cluster_ip, web_pods};
use crate::harness::{Dataplane, Options, Up};
use crate::traffic::{count_names, curl_in, until_answered_by};

pub fn clusterip_round_robin(dataplane: Dataplane) {
    let up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    let names: Vec<String> = web.iter().map(|p| p.name.clone()).collect();
    let node0 = &up.node_names()[0];
    let client = client_pod(&up, "client", node0);
    assert!(
        web.iter().any(|p| p.node != client.node),
        "no replica on another node than the client: {web:?}"
    );

    // By name (DNS, search path) and by address: both through the proxy.
    let by_name = "http://web/";
    until_answered_by(&up, "client", by_name, &names, 6, Duration::from_secs(60));
    let counts = count_names(&curl_in(&up, "client", by_name, 30));
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "30 new connections over 3 replicas: {counts:?}"
    );
    let by_ip = format!("http://{}/", cluster_ip(&up, "web"));
    let counts = count_names(&curl_in(&up, "client", &by_ip, 30));
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "by ClusterIP: {counts:?}"
    );

    // The `kubernetes` Service leads pods to the API server (plain HTTP on
    // its port 443: Skiff serves no TLS).
    let version = up.bash_in(
        "client",
        "curl -s --max-time 3 http://kubernetes.default.svc.cluster.local:443/version",
    );
    assert!(version.contains("gitVersion"), "{version}");
    up.shutdown();
}
