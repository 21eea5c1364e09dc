//! The iptables dataplane applied for real, with real sockets, inside
//! throwaway network namespaces (root; never touches the root namespace's
//! rules: every iptables/conntrack command runs under `ip netns exec`).
//!
//! Run with `cargo test -p skiff-proxy --test iptables_netns -- --ignored
//! --test-threads=1` (or via `cargo xtask test --kernel`).
//!
//! Topology built per test (all deleted by the guards, also on panic):
//!
//! ```text
//!  client ns                 node ns (rules under test)             pods ns
//!  10.100.0.2 eth0 ─veth─ cl0 10.100.0.1                                       
//!  route 10.96/16 via node    pods0 10.244.1.1 ─veth─ eth0 10.244.1.2,.3,.4 (backends)
//!                             svc0 (dummy): route 10.96.0.0/16, src 10.100.0.1
//! ```
//!
//! Backends answer each connection (or datagram) with their own name and
//! the source address they saw, so tests can tell where traffic went and
//! whether it was masqueraded.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_proxy::dataplane::Dataplane;
use skiff_proxy::iptables::{Backend, CommandExecutor, IptablesDataplane};
use skiff_proxy::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};
use skiff_tests::netns::{Netns, link_veth};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
const NODE_POD_SIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 1, 2),
    Ipv4Addr::new(10, 244, 1, 3),
    Ipv4Addr::new(10, 244, 1, 4),
];
const BACKEND_PORT: u16 = 8080;
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_PORT: u16 = 30080;
const TIMEOUT: Duration = Duration::from_secs(2);

struct Topology {
    node: Netns,
    client: Netns,
    pods: Netns,
}

impl Topology {
    fn build() -> Topology {
        let node = Netns::new("t").expect("node netns");
        let client = Netns::new("t").expect("client netns");
        let pods = Netns::new("t").expect("pods netns");
        link_veth(&node, "cl0", &client, "eth0").expect("client veth");
        link_veth(&node, "pods0", &pods, "eth0").expect("pods veth");
        node.add_addr("cl0", "10.100.0.1/24".parse().expect("net"))
            .expect("addr");
        client
            .add_addr("eth0", "10.100.0.2/24".parse().expect("net"))
            .expect("addr");
        node.add_addr("pods0", "10.244.1.1/24".parse().expect("net"))
            .expect("addr");
        for ip in BACKENDS {
            pods.add_addr("eth0", format!("{ip}/24").parse().expect("net"))
                .expect("addr");
        }
        pods.ip(["route", "add", "default", "via", "10.244.1.1"])
            .expect("pods default route");
        client
            .add_route("10.96.0.0/16".parse().expect("net"), NODE_IP.into())
            .expect("client service route");
        // The service range must be routable on the node for locally
        // originated connections to reach the OUTPUT hook at all. It points
        // at a veth whose peer stays down (this kernel has no dummy
        // driver), which swallows anything the rules do not translate.
        node.ip([
            "link", "add", "svc0", "type", "veth", "peer", "name", "svc0p",
        ])
        .expect("sink veth");
        node.set_up("svc0").expect("svc0 up");
        node.ip([
            "route",
            "add",
            "10.96.0.0/16",
            "dev",
            "svc0",
            "src",
            "10.100.0.1",
        ])
        .expect("node service route");
        node.set_sysctl("net.ipv4.ip_forward", "1")
            .expect("forwarding");
        Topology { node, client, pods }
    }

    fn dataplane(&self, backend: Option<Backend>) -> IptablesDataplane {
        let mut exec = CommandExecutor::new().in_netns(self.node.name());
        if let Some(backend) = backend {
            exec = exec.with_backend(backend);
        }
        IptablesDataplane::with_executor(exec)
    }

    fn node_iptables_save(&self) -> String {
        let mut all = String::new();
        for table in ["nat", "filter"] {
            let out = self
                .node
                .exec("iptables-save", ["-t", table])
                .expect("iptables-save");
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        all
    }
}

/// Servers that stop (bounded) when dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn name_of(ip: Ipv4Addr) -> String {
    format!("be{}", ip.octets()[3] - 1)
}

/// TCP backends on `ips` in the pods namespace: each connection gets
/// "<name> <peer ip>\n", then the server closes it.
fn tcp_backends(topo: &Topology, ips: &[Ipv4Addr]) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for ip in ips {
        let addr = SocketAddr::from((*ip, BACKEND_PORT));
        let listener = topo
            .pods
            .run_in(|| TcpListener::bind(addr))
            .expect("enter pods netns")
            .expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = stop.clone();
        let name = name_of(*ip);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    Servers { stop, threads }
}

/// UDP backends: each datagram is answered with "<name> <peer ip>".
fn udp_backends(topo: &Topology, ips: &[Ipv4Addr], port: u16) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for ip in ips {
        let addr = SocketAddr::from((*ip, port));
        let socket = topo
            .pods
            .run_in(|| UdpSocket::bind(addr))
            .expect("enter pods netns")
            .expect("bind udp backend");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = stop.clone();
        let name = name_of(*ip);
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        }));
    }
    Servers { stop, threads }
}

/// One connection: which backend answered and what source it saw.
fn ask(addr: SocketAddrV4) -> std::io::Result<(String, Ipv4Addr)> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let mut words = reply.split_whitespace();
    let name = words.next().unwrap_or_default().to_string();
    let peer = words
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad reply {reply:?}")))?;
    Ok((name, peer))
}

/// `count` connections from inside `ns`.
fn ask_many(ns: &Netns, addr: SocketAddrV4, count: usize) -> Vec<(String, Ipv4Addr)> {
    ns.run_in(|| {
        (0..count)
            .map(|i| ask(addr).unwrap_or_else(|err| panic!("connection {i} to {addr}: {err}")))
            .collect()
    })
    .expect("enter netns")
}

fn counts(replies: &[(String, Ipv4Addr)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (name, _) in replies {
        *counts.entry(name.clone()).or_default() += 1;
    }
    counts
}

fn endpoint(ip: Ipv4Addr, port: u16, local: bool) -> Endpoint {
    Endpoint {
        addr: ip,
        port,
        node_name: Some(if local { "node-a" } else { "node-b" }.to_string()),
        is_local: local,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn web(endpoints: Vec<Endpoint>) -> ServiceEntry {
    ServiceEntry {
        key: ServicePortKey::new("default", "web", "http"),
        cluster_ip: Some(CLUSTER_IP),
        port: 80,
        protocol: Protocol::Tcp,
        node_port: None,
        external_local: false,
        internal_local: false,
        affinity_timeout_secs: None,
        endpoints,
    }
}

fn all_backends() -> Vec<Endpoint> {
    BACKENDS
        .iter()
        .map(|ip| endpoint(*ip, BACKEND_PORT, false))
        .collect()
}

fn desired(entries: Vec<ServiceEntry>) -> DesiredState {
    DesiredState {
        services: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
        node_name: "node-a".into(),
        node_ips: vec![NODE_IP],
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    }
}

fn cluster_addr() -> SocketAddrV4 {
    SocketAddrV4::new(CLUSTER_IP, 80)
}

fn round_robin_is_exact(backend: Option<Backend>) {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let mut dp = topo.dataplane(backend);
    let report = dp.sync(&desired(vec![web(all_backends())])).expect("sync");
    assert!(report.full);
    if let Some(backend) = backend {
        assert_eq!(dp.backend().expect("backend"), backend);
    }
    assert!(
        dp.drift().expect("drift").is_empty(),
        "rendered rules must read back identically:\n{}",
        topo.node_iptables_save()
    );

    // Locally originated (nat OUTPUT), then forwarded (nat PREROUTING).
    for (ns, what) in [(&topo.node, "node"), (&topo.client, "client")] {
        let replies = ask_many(ns, cluster_addr(), 30);
        let expected: BTreeMap<String, usize> =
            BACKENDS.iter().map(|ip| (name_of(*ip), 10)).collect();
        assert_eq!(counts(&replies), expected, "from {what}: {replies:?}");
        for block in replies.chunks(3) {
            let names: std::collections::BTreeSet<_> = block.iter().map(|r| &r.0).collect();
            assert_eq!(names.len(), 3, "from {what}: not a cycle: {replies:?}");
        }
        // Not from the pod network: masqueraded to the node's pod-side address.
        assert!(
            replies.iter().all(|r| r.1 == NODE_POD_SIDE),
            "from {what}: {replies:?}"
        );
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn round_robin_is_exact_default_backend() {
    round_robin_is_exact(None);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn round_robin_is_exact_nft() {
    round_robin_is_exact(Some(Backend::Nft));
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn round_robin_is_exact_legacy() {
    round_robin_is_exact(Some(Backend::Legacy));
}

fn refused(ns: &Netns, addr: SocketAddrV4) {
    let start = Instant::now();
    let result = ns
        .run_in(|| TcpStream::connect_timeout(&addr.into(), TIMEOUT))
        .expect("enter netns");
    match result {
        Err(err) => assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{addr}: expected refusal, got {err} after {:?}",
            start.elapsed()
        ),
        Ok(_) => panic!("{addr}: connected, expected refusal"),
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn no_endpoints_refuses_connections() {
    let topo = Topology::build();
    // A listener on the node port shows that the REJECT rule, not an
    // unbound port, refuses NodePort connections.
    let _decoy = topo
        .node
        .run_in(|| TcpListener::bind((NODE_IP, NODE_PORT)))
        .expect("enter node netns")
        .expect("bind decoy");
    let mut svc = web(vec![]);
    svc.node_port = Some(NODE_PORT);
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![svc.clone()])).expect("sync");

    // Without rules these would time out (dummy device) or reach the decoy.
    refused(&topo.node, cluster_addr());
    refused(&topo.client, cluster_addr());
    refused(&topo.client, SocketAddrV4::new(NODE_IP, NODE_PORT));

    // The first endpoint turns refusal into service.
    let _servers = tcp_backends(&topo, &BACKENDS[..1]);
    svc.endpoints = vec![endpoint(BACKENDS[0], BACKEND_PORT, false)];
    let report = dp.sync(&desired(vec![svc])).expect("sync");
    assert!(!report.full);
    assert_eq!(ask_many(&topo.node, cluster_addr(), 1)[0].0, "be1");
    assert_eq!(
        ask_many(&topo.client, SocketAddrV4::new(NODE_IP, NODE_PORT), 1)[0].0,
        "be1"
    );
    assert!(dp.drift().expect("drift").is_empty());
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn endpoint_removal_moves_new_connections() {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![web(all_backends())])).expect("sync");
    let before = counts(&ask_many(&topo.node, cluster_addr(), 6));
    assert_eq!(before.get("be2"), Some(&2), "{before:?}");

    let mut remaining = all_backends();
    remaining.remove(1);
    let report = dp.sync(&desired(vec![web(remaining)])).expect("sync");
    assert!(!report.full, "{report:?}");
    assert_eq!(
        report.objects_removed, 1,
        "exactly be2's endpoint chain goes: {report:?}"
    );
    assert!(
        dp.drift().expect("drift").is_empty(),
        "{}",
        topo.node_iptables_save()
    );

    let after = counts(&ask_many(&topo.node, cluster_addr(), 20));
    let expected: BTreeMap<String, usize> =
        [("be1".to_string(), 10), ("be3".to_string(), 10)].into();
    assert_eq!(after, expected);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn nodeport_from_outside_reaches_backends() {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let mut svc = web(all_backends());
    svc.node_port = Some(NODE_PORT);
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![svc])).expect("sync");

    let replies = ask_many(&topo.client, SocketAddrV4::new(NODE_IP, NODE_PORT), 9);
    let expected: BTreeMap<String, usize> = BACKENDS.iter().map(|ip| (name_of(*ip), 3)).collect();
    assert_eq!(counts(&replies), expected);
    // Cluster policy: masqueraded, so replies from another node would come back here.
    assert!(replies.iter().all(|r| r.1 == NODE_POD_SIDE), "{replies:?}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn local_policy_preserves_client_source() {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    // Only be1 runs on this node.
    let mut eps = all_backends();
    eps[0].is_local = true;
    eps[0].node_name = Some("node-a".into());
    let mut svc = web(eps);
    svc.node_port = Some(NODE_PORT);
    svc.external_local = true;
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![svc])).expect("sync");

    let replies = ask_many(&topo.client, SocketAddrV4::new(NODE_IP, NODE_PORT), 6);
    assert!(
        replies.iter().all(|r| r == &("be1".to_string(), CLIENT_IP)),
        "only the local endpoint, with the client's own address: {replies:?}"
    );
    // ClusterIP traffic ignores externalTrafficPolicy.
    assert_eq!(counts(&ask_many(&topo.client, cluster_addr(), 3)).len(), 3);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn affinity_sticks() {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let mut svc = web(all_backends());
    svc.affinity_timeout_secs = Some(60);
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![svc])).expect("sync");

    for (ns, what) in [(&topo.node, "node"), (&topo.client, "client")] {
        let replies = ask_many(ns, cluster_addr(), 10);
        assert_eq!(
            counts(&replies).len(),
            1,
            "{what} must stick to one backend: {replies:?}"
        );
    }
    assert!(
        dp.drift().expect("drift").is_empty(),
        "{}",
        topo.node_iptables_save()
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn udp_flows_to_removed_endpoint_are_flushed() {
    let topo = Topology::build();
    let port = 5353;
    let _servers = udp_backends(&topo, &BACKENDS[..2], port);
    let dns = |eps: Vec<Endpoint>| {
        let mut svc = web(eps);
        svc.key = ServicePortKey::new("kube-system", "dns", "dns");
        svc.cluster_ip = Some(Ipv4Addr::new(10, 96, 0, 53));
        svc.port = 53;
        svc.protocol = Protocol::Udp;
        svc
    };
    let eps: Vec<Endpoint> = BACKENDS[..2]
        .iter()
        .map(|ip| endpoint(*ip, port, false))
        .collect();
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![dns(eps.clone())])).expect("sync");

    let socket = topo
        .node
        .run_in(|| -> std::io::Result<UdpSocket> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect("10.96.0.53:53")?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            Ok(socket)
        })
        .expect("enter node netns")
        .expect("udp client");
    let query = |socket: &UdpSocket| -> String {
        socket.send(b"q").expect("send");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("reply");
        String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let first = query(&socket);
    assert_eq!(query(&socket), first, "one UDP flow stays on one endpoint");

    let kept: Vec<Endpoint> = eps
        .into_iter()
        .filter(|e| name_of(e.addr) != first)
        .collect();
    let other = name_of(kept[0].addr);
    let report = dp.sync(&desired(vec![dns(kept)])).expect("sync");
    assert!(report.flows_flushed >= 1, "{report:?}");
    // The removed backend still runs: only the flush moves this flow.
    assert_eq!(query(&socket), other);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn full_resync_repairs_drift_and_cleanup_removes_everything() {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let svc = web(all_backends());
    let svc_chain = skiff_proxy::iptables::render::svc_chain(&svc);
    let mut dp = topo.dataplane(None);
    dp.sync(&desired(vec![svc])).expect("sync");
    assert_eq!(ask_many(&topo.node, cluster_addr(), 3).len(), 3);

    // Someone flushes our service chain and adds a stray chain.
    for args in [
        vec!["-t", "nat", "-F", svc_chain.as_str()],
        vec!["-t", "nat", "-N", "SKIFF-SEP-STRAY"],
    ] {
        let out = topo.node.exec("iptables", &args).expect("iptables");
        assert!(out.status.success(), "iptables {args:?}: {out:?}");
    }
    let drift = dp.drift().expect("drift");
    assert_eq!(drift.differing.len(), 1, "{drift:?}");
    assert_eq!(drift.unexpected.len(), 1, "{drift:?}");
    let broken = topo
        .node
        .run_in(|| TcpStream::connect_timeout(&cluster_addr().into(), Duration::from_millis(300)))
        .expect("enter netns");
    assert!(broken.is_err(), "flushed chain cannot forward");

    let report = dp.full_resync().expect("resync");
    assert_eq!(
        (report.objects_written, report.objects_removed),
        (1, 1),
        "{report:?}"
    );
    assert!(dp.drift().expect("drift").is_empty());
    assert_eq!(ask_many(&topo.node, cluster_addr(), 3).len(), 3);

    dp.cleanup().expect("cleanup");
    let saved = topo.node_iptables_save();
    assert!(!saved.contains("SKIFF"), "left behind:\n{saved}");
    dp.cleanup().expect("cleanup twice is harmless");
}

/// 260 filler services of 10 endpoints (over 3,000 chains, so the restore
/// is split into several calls) plus `web`: the real iptables-restore
/// accepts every part in order, the rules read back exactly, and `web`
/// still round-robins. Then all filler endpoints move, which rewrites and
/// deletes thousands of chains in split parts.
fn split_restore_is_accepted(backend: Backend) {
    let topo = Topology::build();
    let _servers = tcp_backends(&topo, &BACKENDS);
    let filler = |base: u8| -> Vec<ServiceEntry> {
        (0..260u16)
            .map(|i| {
                let mut svc = web((0..10u8)
                    .map(|e| endpoint(Ipv4Addr::new(10, 244, base, e + 1), 80, false))
                    .collect());
                svc.key = ServicePortKey::new("filler", format!("s{i}"), "http");
                let [a, b] = i.to_be_bytes();
                svc.cluster_ip = Some(Ipv4Addr::new(10, 97, a, b));
                svc.node_port = Some(31000 + i);
                svc
            })
            .collect()
    };
    let mut dp = topo.dataplane(Some(backend));
    for base in [100, 101] {
        let mut services = filler(base);
        services.push(web(all_backends()));
        dp.sync(&desired(services)).expect("split sync");
        assert!(
            dp.drift().expect("drift").is_empty(),
            "{backend}: split restore must leave exactly the rendered rules"
        );
        let replies = ask_many(&topo.client, cluster_addr(), 9);
        assert_eq!(counts(&replies).values().collect::<Vec<_>>(), [&3, &3, &3]);
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn split_restore_is_accepted_nft() {
    split_restore_is_accepted(Backend::Nft);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn split_restore_is_accepted_legacy() {
    split_restore_is_accepted(Backend::Legacy);
}
