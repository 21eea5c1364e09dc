//! The eBPF dataplane driven through its `Dataplane` interface, attached
//! for real, surviving a restart of the proxy: pinned links keep the
//! programs attached, pinned maps keep conntrack, and the new instance
//! adopts the state instead of rewriting it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use skiff_proxy::dataplane::Dataplane;
use skiff_proxy::ebpf::{EbpfConfig, EbpfDataplane};
use skiff_proxy::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};
use skiff_tests::netns::{Netns, link_veth};

fn state(node_ip: Ipv4Addr, backend: SocketAddrV4) -> DesiredState {
    let key = ServicePortKey::new("default", "web", "http");
    let entry = ServiceEntry {
        key: key.clone(),
        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 80)),
        port: 80,
        protocol: Protocol::Tcp,
        node_port: Some(30090),
        external_local: false,
        internal_local: false,
        affinity_timeout_secs: None,
        endpoints: vec![Endpoint {
            addr: *backend.ip(),
            port: backend.port(),
            node_name: Some("n1".into()),
            is_local: true,
            ready: true,
            serving: true,
            terminating: false,
        }],
    };
    DesiredState {
        services: BTreeMap::from([(key, entry)]),
        node_name: "n1".into(),
        node_ips: vec![node_ip],
        cluster_cidr: None,
    }
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("send");
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).expect("echo");
    buf
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn restarting_the_ebpf_proxy_keeps_an_established_nodeport_connection() {
    let node = Netns::new("ktrn").expect("node netns");
    let client = Netns::new("ktrc").expect("client netns");
    link_veth(&node, "eth0", &client, "eth0").expect("veth");
    node.add_addr("eth0", "192.0.2.20/24".parse().expect("cidr"))
        .expect("node addr");
    client
        .add_addr("eth0", "192.0.2.21/24".parse().expect("cidr"))
        .expect("client addr");
    node.add_addr("lo", "10.244.1.9/32".parse().expect("cidr"))
        .expect("backend addr");
    let node_ip = Ipv4Addr::new(192, 0, 2, 20);
    let backend = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 9), 8080);
    let nodeport = SocketAddrV4::new(node_ip, 30090);

    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/skiff-test-{}-restart",
        std::process::id()
    ));
    struct Unpin(PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unpin = Unpin(pin_root.clone());
    let config = EbpfConfig {
        node_name: "n1".into(),
        pin_root,
        cgroup: None,
        interfaces: vec!["eth0".into()],
        node_addr: Some(node_ip),
    };
    let desired = state(node_ip, backend);

    let listener = node
        .run_in(|| TcpListener::bind(backend))
        .expect("setns")
        .expect("bind");
    let echo = std::thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = listener.accept().expect("accept");
            handles.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
    });

    let mut first = node
        .run_in(|| EbpfDataplane::start(&config))
        .expect("setns")
        .expect("starting the eBPF dataplane");
    let report = first.sync(&desired).expect("first sync");
    assert!(
        report.services_changed >= 2,
        "ClusterIP and NodePort frontends written"
    );

    let mut conn = client
        .run_in(|| TcpStream::connect_timeout(&nodeport.into(), Duration::from_secs(5)))
        .expect("setns")
        .expect("connect to NodePort");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(roundtrip(&mut conn, b"before"), b"before");

    // The proxy process goes away: nothing but the pins holds the programs.
    drop(first);
    assert_eq!(
        roundtrip(&mut conn, b"while-down"),
        b"while-down",
        "pinned links and maps must keep the flow alive while the proxy is down"
    );

    let mut second = node
        .run_in(|| EbpfDataplane::start(&config))
        .expect("setns")
        .expect("restarting the eBPF dataplane");
    let report = second.sync(&desired).expect("sync after restart");
    assert_eq!(
        (report.objects_written, report.objects_removed),
        (0, 0),
        "the restarted proxy must adopt the pinned state, not rewrite it"
    );
    assert_eq!(roundtrip(&mut conn, b"after"), b"after");

    // From the adopted state on, syncs are incremental: a second endpoint
    // rewrites exactly the service's two frontends, and the same state
    // again writes nothing.
    let mut grown = desired.clone();
    for entry in grown.services.values_mut() {
        let mut extra = entry.endpoints[0].clone();
        extra.addr = Ipv4Addr::new(10, 244, 1, 10);
        entry.endpoints.push(extra);
    }
    let report = second.sync(&grown).expect("sync with a second endpoint");
    assert_eq!(report.services_changed, 2, "{report:?}");
    assert_eq!(report.objects_removed, 0, "{report:?}");
    let report = second.sync(&grown).expect("same state again");
    assert_eq!(
        (report.services_changed, report.objects_written),
        (0, 0),
        "{report:?}"
    );
    second.sync(&desired).expect("back to one endpoint");

    let mut fresh = client
        .run_in(|| TcpStream::connect_timeout(&nodeport.into(), Duration::from_secs(5)))
        .expect("setns")
        .expect("new connection after restart");
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(roundtrip(&mut fresh, b"new"), b"new");
    drop(conn);
    drop(fresh);
    echo.join().expect("echo thread");

    second.cleanup().expect("cleanup");
    assert!(
        !config.pin_root.join("n1").exists(),
        "cleanup removes the pins"
    );
}
