//! The whole proxy path: a real Skiff API server (in-process, loopback),
//! Services and EndpointSlices written through the Kubernetes API, the
//! proxy loop watching them and driving the eBPF dataplane, and real
//! connections through socket-LB in a throwaway namespace and cgroup.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use skiff_control::api::ServerConfig;
use skiff_proxy::ebpf::{EbpfConfig, EbpfDataplane};
use skiff_proxy::sync::{self, ProxyConfig};
use skiff_tests::netns::Netns;

use crate::harness::CgroupGuard;

fn service() -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

fn slice(ips: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": "n1"}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .expect("slice")
}

/// Connects `n` times; returns which backend answered each time. Retries
/// the first connection until the proxy has programmed the service.
fn who_answers(ns: &Netns, vip: SocketAddrV4, n: usize) -> Vec<String> {
    ns.run_in(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            match TcpStream::connect_timeout(&vip.into(), Duration::from_secs(2)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(3)))
                        .expect("timeout");
                    let mut who = String::new();
                    s.read_to_string(&mut who).expect("read");
                    out.push(who);
                }
                Err(e) => {
                    assert!(
                        out.is_empty() && Instant::now() < deadline,
                        "connect failed: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        out
    })
    .expect("setns")
}

fn counts(answers: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.clone()).or_default() += 1;
    }
    m
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn proxy_loop_follows_the_api_into_the_ebpf_dataplane() {
    let ns = Netns::new("ktsync").expect("netns");
    let cg = CgroupGuard::enter("sync");
    let backends: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 244, 7, i)).collect();
    let mut servers = Vec::new();
    for ip in &backends {
        ns.add_addr("lo", format!("{ip}/32").parse().expect("cidr"))
            .expect("backend addr");
        let l = ns
            .run_in(|| TcpListener::bind(SocketAddrV4::new(*ip, 8080)))
            .expect("setns")
            .expect("bind");
        let me = ip.to_string();
        servers.push(std::thread::spawn(move || {
            // Serve until the listener is closed by the test's end.
            l.set_nonblocking(false).expect("blocking");
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                if c.write_all(me.as_bytes()).is_err() {
                    return;
                }
            }
        }));
    }
    let data = tempfile::tempdir().expect("tempdir");
    let pin_root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/skiff-test-{}-sync",
        std::process::id()
    ));
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unpin = Unpin(pin_root.clone());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (server, client) = rt.block_on(async {
        let server = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data.path())
            .build()
            .await
            .expect("API server")
            .spawn();
        let client = kube::Client::try_from(kube::Config::new(server.url().parse().expect("url")))
            .expect("client");
        (server, client)
    });
    let svc = rt
        .block_on(
            Api::<Service>::namespaced(client.clone(), "default")
                .create(&PostParams::default(), &service()),
        )
        .expect("create service");
    let vip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("ClusterIP allocated")
        .parse()
        .expect("ipv4");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    rt.block_on(slices.create(&PostParams::default(), &slice(&backends)))
        .expect("create slice");

    let dataplane = EbpfDataplane::start(&EbpfConfig {
        node_name: "n1".into(),
        pin_root,
        cgroup: Some(cg.path().to_owned()),
        interfaces: Vec::new(),
        node_addr: None,
    })
    .expect("eBPF dataplane");
    let stop = shutdown_pair();
    let proxy = rt.spawn(sync::run(
        client.clone(),
        Box::new(dataplane),
        ProxyConfig {
            node_name: "n1".into(),
            node_ips: Vec::new(),
            cluster_cidr: None,
            resync_period: Duration::from_secs(30),
        },
        stop.1,
    ));

    let target = SocketAddrV4::new(vip, 80);
    let first = counts(&who_answers(&ns, target, 30));
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(
        first.values().all(|n| *n == 10),
        "exact round-robin: {first:?}"
    );

    // Remove one backend through the API; new connections must move away.
    let mut two = slice(&backends[..2]);
    let current = rt.block_on(slices.get("web-1")).expect("get slice");
    two.metadata.resource_version = current.metadata.resource_version;
    rt.block_on(slices.replace("web-1", &PostParams::default(), &two))
        .expect("replace slice");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = counts(&who_answers(&ns, target, 6));
        if !seen.contains_key(&backends[2].to_string()) {
            assert_eq!(seen.len(), 2, "{seen:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "removed backend still answering: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let _ = stop.0.send(());
    rt.block_on(proxy).expect("proxy task").expect("proxy loop");
    rt.block_on(server.shutdown()).expect("server shutdown");
    drop(servers);
}

/// A oneshot-backed shutdown future.
fn shutdown_pair() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}
