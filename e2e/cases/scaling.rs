//! Scaling the Deployment 3 → 5 → 2 changes the set of answering backends.

use std::time::Duration;

use crate::cluster::{client_pod, scale, wait_pods, web_pods};
use crate::harness::{Dataplane, Options, Up};
use crate::traffic::{count_names, curl_in, until_answered_by};

pub fn scaling_changes_backends(dataplane: Dataplane) {
    let up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    client_pod(&up, "client", &up.node_names()[0]);
    let names: Vec<String> = web.iter().map(|p| p.name.clone()).collect();
    let url = "http://web/";
    until_answered_by(&up, "client", url, &names, 6, Duration::from_secs(60));

    for replicas in [5usize, 2] {
        scale(&up, "web", u32::try_from(replicas).expect("small"));
        let now = wait_pods(&up, "app=web", replicas, Duration::from_secs(90), |_| true);
        let names: Vec<String> = now.iter().map(|p| p.name.clone()).collect();
        // Once the proxies have caught up (an even round over exactly
        // these names)...
        until_answered_by(
            &up,
            "client",
            url,
            &names,
            replicas,
            Duration::from_secs(60),
        );
        // ...round-robin is exact: 3×replicas requests reach each 3 times.
        let counts = count_names(&curl_in(&up, "client", url, 3 * replicas));
        assert_eq!(
            counts.keys().cloned().collect::<Vec<_>>(),
            names,
            "{replicas} replicas: {counts:?}"
        );
        assert!(
            counts.values().all(|c| *c == 3),
            "{replicas} replicas, 3 rounds: {counts:?}"
        );
    }
    up.shutdown();
}
