//! Killing a node's agent and its pods: the pods come back on the other
//! nodes and, once the endpoints have updated, no request fails.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster::{client_pod, pods, ready_endpoints, wait_pods, web_pods};
use crate::harness::{Dataplane, Options, Up};
use crate::traffic::{count_names, curl_in, until_answered_by};

pub fn node_loss_recreates_pods(dataplane: Dataplane) {
    let mut opts = Options::new(dataplane);
    opts.fast_node_loss = true;
    let mut up = Up::start(opts);
    let web = web_pods(&up);
    let nodes = up.node_names();
    client_pod(&up, "client", &nodes[0]);
    let names: Vec<String> = web.iter().map(|p| p.name.clone()).collect();
    let url = "http://web/";
    until_answered_by(&up, "client", url, &names, 6, Duration::from_secs(60));

    let victim = nodes[1..]
        .iter()
        .rev()
        .find(|n| web.iter().any(|p| &p.node == *n))
        .expect("a replica on a node other than the client's")
        .clone();
    let lost: BTreeSet<_> = web
        .iter()
        .filter(|p| p.node == victim)
        .filter_map(|p| p.ip)
        .collect();
    up.kill_agent(&victim);
    // The node's pods die with it: every process below its cgroup.
    std::fs::write(up.node_cgroup(&victim).join("cgroup.kill"), "1").expect("cgroup.kill");
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(60);
    while !ready_endpoints(&up, "web").is_disjoint(&lost) {
        assert!(Instant::now() < deadline, "endpoints still list {lost:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "node loss: endpoints updated {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // The proxies apply the endpoint change within moments of the API.
    std::thread::sleep(Duration::from_secs(1));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut requests = 0;
    loop {
        let results = curl_in(&up, "client", url, 6);
        requests += results.len();
        count_names(&results); // panics on any failed request
        let all = pods(&up, "app=web");
        let replaced = all
            .iter()
            .filter(|p| !p.terminating && p.ready && p.node != victim)
            .count()
            == 3;
        if replaced {
            break;
        }
        assert!(Instant::now() < deadline, "pods not recreated: {all:#?}");
    }
    let now = wait_pods(&up, "app=web", 3, Duration::from_secs(10), |ps| {
        ps.iter().all(|p| p.node != victim)
    });
    eprintln!(
        "node loss: 3 replicas ready elsewhere {:.1} s after the kill ({requests} requests, none failed)",
        killed.elapsed().as_secs_f64()
    );
    let names: Vec<String> = now.iter().map(|p| p.name.clone()).collect();
    until_answered_by(&up, "client", url, &names, 3, Duration::from_secs(30));
    let counts = count_names(&curl_in(&up, "client", url, 9));
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|c| *c == 3), "{counts:?}");

    // The dead node's pods stay Terminating (nobody confirms their
    // shutdown) until the Node is deleted; then they are force-deleted.
    let stuck = pods(&up, "app=web")
        .into_iter()
        .filter(|p| p.node == victim)
        .count();
    assert!(stuck > 0, "the victim's pods should still be listed");
    let out = up.skiff(&["delete"], &["node", &victim]);
    assert!(
        out.status.success(),
        "skiff delete node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods(&up, "").iter().any(|p| p.node == victim) {
        assert!(
            Instant::now() < deadline,
            "pods of the deleted node {victim} remain: {:#?}",
            pods(&up, "")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    up.shutdown();
}
