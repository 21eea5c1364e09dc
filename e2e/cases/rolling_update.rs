//! A rolling update under steady client load completes with zero failed
//! requests.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cluster::{client_pod, cluster_ip, pods, rolled_out, touch_template, web_pods};
use crate::harness::{Dataplane, Options, Up, stop_group};
use crate::traffic::{parse_answer, until_answered_by};

/// Requests one after another (fresh connection each, 20 ms apart) until
/// stdin closes, at most 3,000.
fn load_script(url: &str) -> String {
    format!(
        "n=0; while [ $n -lt 3000 ]; do n=$((n+1)); \
         r=$(curl -s --max-time 3 {url}) && echo \"OK $r\" || echo \"FAIL $?\"; \
         read -t 0.02 _; [ $? -eq 1 ] && break; done; echo DONE"
    )
}

pub fn rolling_update_under_load(dataplane: Dataplane) {
    let up = Up::start(Options::new(dataplane));
    let web = web_pods(&up);
    let old_hash = web[0].template_hash.clone();
    client_pod(&up, "client", &up.node_names()[0]);
    let url = format!("http://{}/", cluster_ip(&up, "web"));
    let names: Vec<String> = web.iter().map(|p| p.name.clone()).collect();
    until_answered_by(&up, "client", &url, &names, 6, Duration::from_secs(60));

    let mut load = up.spawn_in("client", &load_script(&url));
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let out = load.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                lines.lock().unwrap_or_else(PoisonError::into_inner).push(l);
            }
        })
    };
    let count = |prefix: &str| {
        lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    let wait_for = |ok: usize, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while count("OK") < ok {
            assert!(
                Instant::now() < deadline,
                "load stalled at {} OK",
                count("OK")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(20, Duration::from_secs(30));

    touch_template(&up, "web", "1");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !rolled_out(&up, "web") || pods(&up, "app=web").len() != 3 {
        assert!(
            Instant::now() < deadline,
            "rollout not complete in 120 s: {:#?}",
            pods(&up, "app=web")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let new = pods(&up, "app=web");
    assert!(new.iter().all(|p| p.template_hash != old_hash && p.ready));
    // Keep the load on a little after the last old pod is gone.
    let after = count("OK") + 20;
    wait_for(after, Duration::from_secs(30));
    drop(load.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("DONE") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_group(&mut load);
    let _ = reader.join();

    let lines = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    let served: std::collections::BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("OK "))
        .filter_map(parse_answer)
        .map(|a| a.name)
        .collect();
    eprintln!(
        "rolling update: {} requests, {} failed, served by {served:?}",
        lines.len() - 1,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the rollout: {failed:?}"
    );
    for p in web.iter().chain(new.iter()) {
        assert!(served.contains(&p.name), "{} never answered", p.name);
    }
    up.shutdown();
}
