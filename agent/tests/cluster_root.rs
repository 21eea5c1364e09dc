//! Root tests of the whole agent: a real API server (skiff-control) and two
//! agents on a `skiff_tests::Cluster` of network namespaces, running real
//! pods whose containers are the in-repo `skiff-agent-testpod` binary
//! (a tiny HTTP server/client) and `sh`.
//! Run by `cargo xtask test --kernel`, or by hand:
//! `cargo test -p skiff-agent --test cluster_root -- --ignored --test-threads=1`.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::DeleteParams;
use serde_json::json;
use skiff_tests::{Cluster, ClusterSpec};
use support::cluster::Harness;
use support::*;

fn cluster() -> Cluster {
    Cluster::build(ClusterSpec {
        nodes: 2,
        ..Default::default()
    })
    .expect("cluster")
}

fn status_of<'p>(pod: &'p Pod, container: &str) -> Option<&'p ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn pid_of(pod: &Pod, container: &str) -> Option<i32> {
    status_of(pod, container)?
        .container_id
        .as_deref()?
        .strip_prefix("skiff://")?
        .parse()
        .ok()
}

fn server(port: u16, body: &str) -> serde_json::Value {
    json!({"name": "web", "command": [TESTPOD, "serve", port.to_string(), body],
           "ports": [{"name": "http", "containerPort": port}],
           "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1}})
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn pods_reach_each_other_across_nodes_and_leave_the_cluster_masqueraded() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    block_on_in(cluster.outside().netns().path(), || async {
        let h = Harness::start(&cluster, tmp.path()).await;
        // The Node as registered: address, labels, capacity, a live heartbeat.
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(h.client.clone());
        let heartbeat = |n: &k8s_openapi::api::core::v1::Node| {
            n.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?
                .last_heartbeat_time
                .clone()
        };
        let n0 = nodes.get(&h.node_name(0)).await.expect("node");
        assert_eq!(
            skiff_agent::network::internal_ip(&n0),
            Some(cluster.nodes()[0].addr())
        );
        assert_eq!(
            n0.metadata.labels.as_ref().expect("labels")["kubernetes.io/hostname"],
            h.node_name(0)
        );
        let cap = n0
            .status
            .as_ref()
            .and_then(|s| s.capacity.clone())
            .expect("capacity");
        assert!(
            cap["cpu"].0.parse::<u32>().expect("cpu") >= 1
                && cap["memory"].0.ends_with("Ki")
                && cap["pods"].0 == "110"
        );
        let first = heartbeat(&n0).expect("heartbeat");
        h.wait_pod_free("heartbeat advances", Duration::from_secs(10), || {
            let nodes = nodes.clone();
            let name = h.node_name(0);
            let first = first.clone();
            async move {
                nodes
                    .get(&name)
                    .await
                    .ok()
                    .as_ref()
                    .and_then(heartbeat)
                    .filter(|t| t.0 > first.0)
                    .map(drop)
            }
        })
        .await;
        h.create_pod(
            "a",
            0,
            json!({"containers": [server(8080, "hello-from-a")]}),
        )
        .await;
        h.create_pod(
            "b",
            1,
            json!({"containers": [server(8080, "hello-from-b")]}),
        )
        .await;
        let ip_a = h
            .wait_pod("a", "a ready", Duration::from_secs(30), |p| {
                is_ready(p).then(|| pod_ip(p)).flatten()
            })
            .await;
        let ip_b = h
            .wait_pod("b", "b ready", Duration::from_secs(30), |p| {
                is_ready(p).then(|| pod_ip(p)).flatten()
            })
            .await;
        let cidr0 = h
            .wait_pod("a", "a", Duration::from_secs(1), |p| {
                p.status.as_ref()?.host_ip.clone()
            })
            .await;
        assert_eq!(
            cidr0,
            cluster.nodes()[0].addr().to_string(),
            "hostIP is the node's InternalIP"
        );
        assert_ne!(
            ip_a.rsplit_once('.').map(|x| x.0),
            ip_b.rsplit_once('.').map(|x| x.0),
            "pods on different node CIDRs"
        );

        // A client pod on node 0 fetches from b (node 1) by pod IP, and b's
        // client fetches from a: cross-node routing both ways.
        for (name, node, target, want) in [
            ("c0", 0, &ip_b, "hello-from-b"),
            ("c1", 1, &ip_a, "hello-from-a"),
        ] {
            h.create_pod(
                name,
                node,
                json!({"restartPolicy": "Never", "containers": [
                {"name": "get", "command": [TESTPOD, "get", format!("{target}:8080")]}]}),
            )
            .await;
            let ph = h
                .wait_pod(name, "client done", Duration::from_secs(30), |p| {
                    matches!(phase(p), Some("Succeeded" | "Failed"))
                        .then(|| phase(p).map(str::to_owned))
                        .flatten()
                })
                .await;
            let log = skiff_agent::logs(&h.agents[node].cfg.data_dir, "default", name, None, None)
                .await
                .expect("logs");
            assert_eq!(ph, "Succeeded", "client {name} failed; log: {log}");
            assert_eq!(log, want, "`skiff logs` shows what the container printed");
        }

        // Leaving the cluster CIDR: the outside host has no route to pods,
        // so an answer proves masquerade; the peer address proves it too.
        let listener = TcpListener::bind((cluster.outside().addr(), 0)).expect("bind outside");
        let port = listener.local_addr().expect("addr").port();
        let accept = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().expect("accept");
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\noutside",
            )
            .expect("write");
            peer.ip()
        });
        h.create_pod("egress", 1, json!({"restartPolicy": "Never", "containers": [
            {"name": "get", "command": [TESTPOD, "get", format!("{}:{port}", cluster.outside().addr())]}]})).await;
        let ph = h
            .wait_pod("egress", "egress done", Duration::from_secs(30), |p| {
                matches!(phase(p), Some("Succeeded" | "Failed"))
                    .then(|| phase(p).map(str::to_owned))
                    .flatten()
            })
            .await;
        assert_eq!(ph, "Succeeded");
        let peer = accept.join().expect("accept thread");
        assert_eq!(
            peer,
            std::net::IpAddr::V4(cluster.nodes()[1].addr()),
            "source NATed to node 1's address"
        );
        h.finish().await;
    });
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn readiness_gates_ready_and_crash_loops_back_off() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    block_on_in(cluster.outside().netns().path(), || async {
        let h = Harness::start(&cluster, tmp.path()).await;
        // Serves only after 2 s: Running but not Ready until then.
        h.create_pod("slow", 0, json!({"containers": [{
            "name": "web", "command": ["sh", "-c", format!("sleep 2; exec {TESTPOD} serve 8080 slow")],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]})).await;
        h.create_pod("crash", 1, json!({"containers": [{"name": "boom", "command": ["sh", "-c", "echo crashing; exit 3"]}]})).await;
        // Serves 8080 but its liveness probe checks 9999: killed and restarted.
        h.create_pod("unhealthy", 0, json!({"terminationGracePeriodSeconds": 5, "containers": [{
            "name": "web", "command": [TESTPOD, "serve", "8080", "x"],
            "livenessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2}}]})).await;

        let running_at = h
            .wait_pod("slow", "slow running", Duration::from_secs(20), |p| {
                (phase(p) == Some("Running")).then(Instant::now)
            })
            .await;
        let p = h.pods().get("slow").await.expect("get");
        assert!(!is_ready(&p), "not Ready before the probe passes");
        assert!(!status_of(&p, "web").expect("status").ready);
        let ready_at = h
            .wait_pod("slow", "slow ready", Duration::from_secs(20), |p| {
                is_ready(p).then(Instant::now)
            })
            .await;
        assert!(
            ready_at - running_at >= Duration::from_millis(1000),
            "readiness waited for the server"
        );

        // Crash loop: restarts with growing delays, CrashLoopBackOff, exit code.
        let mut seen_backoff = false;
        let mut increments: Vec<(i32, Instant)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while increments.last().is_none_or(|(n, _)| *n < 5) {
            assert!(
                Instant::now() < deadline,
                "no 5 restarts in time: {increments:?}"
            );
            if let Ok(p) = h.pods().get("crash").await
                && let Some(cs) = status_of(&p, "boom")
            {
                let waiting = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref());
                if waiting == Some("CrashLoopBackOff") {
                    seen_backoff = true;
                    let last = cs
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .expect("lastState");
                    assert_eq!(last.exit_code, 3);
                    assert_eq!(last.reason.as_deref(), Some("Error"));
                }
                if increments.last().is_none_or(|(n, _)| cs.restart_count > *n) {
                    increments.push((cs.restart_count, Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(seen_backoff, "CrashLoopBackOff was reported");
        let at = |n: i32| {
            increments
                .iter()
                .find(|(c, _)| *c >= n)
                .map(|(_, t)| *t)
                .expect("increment")
        };
        let early = at(2) - at(1);
        let late = at(5) - at(4);
        assert!(
            late >= Duration::from_millis(600),
            "4th→5th restart waited the back-off ({late:?}); {increments:?}"
        );
        assert!(late > early, "back-off grows: {early:?} then {late:?}");
        let last = h
            .wait_pod(
                "unhealthy",
                "liveness restart",
                Duration::from_secs(30),
                |p| {
                    let cs = status_of(p, "web")?;
                    (cs.restart_count >= 1)
                        .then(|| cs.last_state.as_ref()?.terminated.clone())
                        .flatten()
                },
            )
            .await;
        assert_eq!(
            (last.exit_code, last.signal),
            (143, Some(15)),
            "liveness failure stops the container with SIGTERM"
        );
        let log = skiff_agent::logs(
            &h.agents[1].cfg.data_dir,
            "default",
            "crash",
            Some("boom"),
            None,
        )
        .await
        .expect("logs");
        assert!(
            log.lines().filter(|l| *l == "crashing").count() >= 5,
            "every run appends to the log: {log}"
        );
        h.finish().await;
    });
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn containers_of_a_pod_share_localhost_and_an_empty_dir() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mp = mount_point(tmp.path(), "mnt-shared");
    block_on_in(cluster.outside().netns().path(), || async {
        let h = Harness::start(&cluster, tmp.path()).await;
        let d = mp.display().to_string();
        let pod = h
            .create_pod("duo", 1, json!({
                "volumes": [{"name": "shared", "emptyDir": {}}],
                "containers": [
                    {"name": "writer", "command": ["sh", "-c", format!("echo note-from-writer > {d}/note; exec {TESTPOD} serve 9000 served-by-writer")],
                     "volumeMounts": [{"name": "shared", "mountPath": d}]},
                    {"name": "reader", "command": ["sh", "-c", format!(
                        "until {TESTPOD} get 127.0.0.1:9000 > {d}/fetched; do sleep 0.1; done; cat {d}/note > {d}/seen; echo $MY_POD $MY_IP > {d}/env; exec sleep 600")],
                     "env": [{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                     "volumeMounts": [{"name": "shared", "mountPath": d}]}
                ]}))
            .await;
        let ip = h
            .wait_pod("duo", "duo ready", Duration::from_secs(30), |p| {
                is_ready(p).then(|| pod_ip(p)).flatten()
            })
            .await;
        let uid = pod.metadata.uid.expect("uid");
        let vol = h.agents[1].cfg.pod_dir(&uid).join("volumes/shared");
        let read = |f: &str| {
            std::fs::read_to_string(vol.join(f))
                .ok()
                .filter(|s| !s.is_empty())
        };
        let seen = wait_for("reader done", Duration::from_secs(20), || read("seen"));
        assert_eq!(
            read("fetched").as_deref(),
            Some("served-by-writer"),
            "reader reached writer over localhost"
        );
        assert_eq!(
            seen.trim(),
            "note-from-writer",
            "reader saw writer's file in the emptyDir"
        );
        assert_eq!(
            read("env").expect("env").trim(),
            format!("duo {ip}"),
            "fieldRef env"
        );
        assert!(
            std::fs::read_dir(&mp).expect("mp").next().is_none(),
            "the node's directory is untouched"
        );
        h.finish().await;
    });
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn deletion_drains_gracefully_and_kills_after_the_grace_period() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_dir = tmp.path().join("host-out");
    let mp = mount_point(tmp.path(), "mnt-out");
    block_on_in(cluster.outside().netns().path(), || async {
        let h = Harness::start(&cluster, tmp.path()).await;
        let d = mp.display().to_string();
        let vols = json!([{"name": "out", "hostPath": {"path": host_dir.display().to_string(), "type": "DirectoryOrCreate"}}]);
        let mount = json!([{"name": "out", "mountPath": d}]);
        let polite = h
            .create_pod("polite", 0, json!({"volumes": vols, "terminationGracePeriodSeconds": 10, "containers": [
                {"name": "web", "command": [TESTPOD, "serve", "8080", "polite", "--on-term", format!("{d}/term")], "volumeMounts": mount}]}))
            .await;
        let stubborn = h
            .create_pod("stubborn", 0, json!({"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "sh", "command": ["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 0.2; done"]}]}))
            .await;
        let pid_polite = h
            .wait_pod("polite", "polite running", Duration::from_secs(30), |p| {
                pid_of(p, "web")
            })
            .await;
        let pid_stubborn = h
            .wait_pod(
                "stubborn",
                "stubborn running",
                Duration::from_secs(30),
                |p| pid_of(p, "sh"),
            )
            .await;

        let t0 = Instant::now();
        h.pods()
            .delete("polite", &DeleteParams::default())
            .await
            .expect("delete");
        let polite_dir = h.agents[0]
            .cfg
            .pod_dir(polite.metadata.uid.as_deref().expect("uid"));
        wait_for("polite torn down", Duration::from_secs(15), || {
            (!polite_dir.exists()).then_some(())
        });
        assert_eq!(
            std::fs::read_to_string(host_dir.join("term"))
                .expect("term file")
                .trim(),
            "TERM",
            "process saw SIGTERM and exited cleanly"
        );
        assert!(!alive(pid_polite));
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "a process that exits on SIGTERM does not wait out the grace period"
        );

        let t1 = Instant::now();
        h.pods()
            .delete("stubborn", &DeleteParams::default())
            .await
            .expect("delete");
        let uid = stubborn.metadata.uid.clone().expect("uid");
        let stubborn_dir = h.agents[0].cfg.pod_dir(&uid);
        wait_for("stubborn torn down", Duration::from_secs(20), || {
            (!stubborn_dir.exists()).then_some(())
        });
        let took = t1.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "SIGKILL only after the 2 s grace period ({took:?})"
        );
        assert!(
            took < Duration::from_secs(10),
            "but not much later ({took:?})"
        );
        assert!(!alive(pid_stubborn));
        assert_pod_gone(&h.agents[0].cfg.data_dir, &uid);
        h.finish().await;
    });
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn restarted_agent_adopts_running_pods() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    block_on_in(cluster.outside().netns().path(), || async {
        let mut h = Harness::start(&cluster, tmp.path()).await;
        h.create_pod(
            "keep",
            1,
            json!({"containers": [server(8080, "still-here")]}),
        )
        .await;
        let (ip, pid) = h
            .wait_pod("keep", "keep ready", Duration::from_secs(30), |p| {
                Some((pod_ip(p)?, pid_of(p, "web")?)).filter(|_| is_ready(p))
            })
            .await;

        h.agents[1].stop();
        assert!(alive(pid), "the container outlives its agent");
        h.agents[1].restart();
        // The new agent reports the same process and IP, without a restart.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let p = h
            .wait_pod("keep", "keep ready again", Duration::from_secs(30), |p| {
                is_ready(p).then(|| p.clone())
            })
            .await;
        assert_eq!(pod_ip(&p).as_deref(), Some(ip.as_str()), "same IP");
        assert_eq!(pid_of(&p, "web"), Some(pid), "same process");
        assert_eq!(
            status_of(&p, "web").expect("status").restart_count,
            0,
            "not restarted"
        );
        // Exactly one process in the container's cgroup: no duplicate.
        let uid = p.metadata.uid.clone().expect("uid");
        let cg = h.agents[1]
            .cfg
            .node_cgroup()
            .join(format!("pod-{uid}"))
            .join("web")
            .join("cgroup.procs");
        let procs = std::fs::read_to_string(&cg).expect("cgroup.procs");
        assert_eq!(
            procs.split_whitespace().collect::<Vec<_>>(),
            [pid.to_string()],
            "one server process"
        );
        // Still reachable from another node's pod.
        h.create_pod(
            "probe",
            0,
            json!({"restartPolicy": "Never", "containers": [
            {"name": "get", "command": [TESTPOD, "get", format!("{ip}:8080")]}]}),
        )
        .await;
        let ph = h
            .wait_pod("probe", "probe done", Duration::from_secs(30), |p| {
                matches!(phase(p), Some("Succeeded" | "Failed"))
                    .then(|| phase(p).map(str::to_owned))
                    .flatten()
            })
            .await;
        assert_eq!(ph, "Succeeded");
        // A new pod on the restarted agent gets a fresh IP (no double allocation).
        h.create_pod("next", 1, json!({"containers": [server(8081, "next")]}))
            .await;
        let ip2 = h
            .wait_pod("next", "next ip", Duration::from_secs(30), pod_ip)
            .await;
        assert_ne!(ip2, ip, "restored allocator does not hand out a used IP");
        h.finish().await;
    });
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn cleanup_removes_running_pods_and_node_setup() {
    let cluster = cluster();
    let tmp = tempfile::tempdir().expect("tempdir");
    block_on_in(cluster.outside().netns().path(), || async {
        let mut h = Harness::start(&cluster, tmp.path()).await;
        let pod = h
            .create_pod("left", 0, json!({"containers": [server(8080, "left")]}))
            .await;
        let pid = h
            .wait_pod("left", "left running", Duration::from_secs(30), |p| {
                pid_of(p, "web").filter(|_| is_ready(p))
            })
            .await;
        let uid = pod.metadata.uid.expect("uid");
        let node0 = cluster.nodes()[0].netns();
        let routes = || node0.ip(["route", "show", "proto", "158"]).expect("routes");
        wait_for(
            "route to node 1's pod CIDR",
            Duration::from_secs(10),
            || (!routes().trim().is_empty()).then_some(()),
        );

        // `skiff agent cleanup` with the agent stopped and the pod running.
        h.agents[0].stop();
        let report = h.agents[0].cleanup();
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.killed, [pid]);
        assert_eq!(report.pods, std::slice::from_ref(&uid));
        assert!(!alive(pid), "container killed");
        assert_pod_gone(&h.agents[0].cfg.data_dir, &uid);
        assert!(!h.agents[0].cfg.data_dir.exists(), "state removed");
        assert!(!h.agents[0].cfg.node_cgroup().exists(), "cgroups removed");
        assert!(routes().trim().is_empty(), "routes removed");
        assert!(
            links_in(node0, "skiff0").is_empty() && links_in(node0, "skv").is_empty(),
            "bridge and veths removed"
        );
        let nat = node0
            .exec("iptables", ["-t", "nat", "-S"])
            .expect("iptables");
        assert!(
            !String::from_utf8_lossy(&nat.stdout).contains("SKIFF-AGENT"),
            "chains removed"
        );
        // A second run finds nothing.
        let again = h.agents[0].cleanup();
        assert!(
            again.pods.is_empty() && again.killed.is_empty() && again.errors.is_empty(),
            "{again:?}"
        );
        h.agents[0].restart();
        h.finish().await;
    });
}
