//! NodePort to a backend on another node, through the real eBPF dataplane
//! on a namespace cluster: the client's traffic is DNAT'd and SNAT'd to the
//! node address on ingress and routed by the program itself (the kernel
//! would drop a packet "from" its own address arriving on an interface),
//! and the reply is reverse-translated on its way back.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use skiff_proxy::dataplane::Dataplane;
use skiff_proxy::ebpf::{EbpfConfig, EbpfDataplane};
use skiff_proxy::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};
use skiff_tests::{Cluster, ClusterSpec};

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn nodeport_reaches_a_backend_on_another_node_via_snat() {
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        ..Default::default()
    })
    .expect("cluster");
    let (node0, node1, outside) = (&cluster.nodes()[0], &cluster.nodes()[1], cluster.outside());
    let backend = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 9), 8080);
    node0
        .netns()
        .add_addr("lo", "10.244.0.9/32".parse().expect("cidr"))
        .expect("backend addr");
    node1
        .netns()
        .add_route("10.244.0.9/32".parse().expect("cidr"), node0.addr().into())
        .expect("route to the remote pod");

    let listener = node0
        .netns()
        .run_in(|| TcpListener::bind(backend))
        .expect("setns")
        .expect("bind backend");
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).expect("request");
        c.write_all(format!("peer={}", peer.ip()).as_bytes())
            .expect("reply");
    });

    let key = ServicePortKey::new("default", "web", "");
    let desired = DesiredState {
        services: BTreeMap::from([(
            key.clone(),
            ServiceEntry {
                key,
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 90)),
                port: 80,
                protocol: Protocol::Tcp,
                node_port: Some(30095),
                external_local: false,
                internal_local: false,
                affinity_timeout_secs: None,
                endpoints: vec![Endpoint {
                    addr: *backend.ip(),
                    port: backend.port(),
                    node_name: Some(node0.name().to_owned()),
                    is_local: false,
                    ready: true,
                    serving: true,
                    terminating: false,
                }],
            },
        )]),
        node_name: node1.name().to_owned(),
        node_ips: vec![node1.addr()],
        cluster_cidr: None,
    };
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/skiff-test-{}-xnode",
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
        node_name: node1.name().to_owned(),
        pin_root,
        cgroup: None,
        interfaces: vec![Cluster::UNDERLAY_IF.to_owned()],
        node_addr: Some(node1.addr()),
    };
    let mut dp = node1
        .netns()
        .run_in(|| EbpfDataplane::start(&config))
        .expect("setns")
        .expect("eBPF dataplane on node1");
    dp.sync(&desired).expect("sync");

    let nodeport = SocketAddrV4::new(node1.addr(), 30095);
    let (reply, peer) = outside
        .netns()
        .run_in(|| {
            let mut s = TcpStream::connect_timeout(&nodeport.into(), Duration::from_secs(5))
                .expect("connect to node1's NodePort");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"ping").expect("send");
            let mut reply = String::new();
            s.read_to_string(&mut reply).expect("reply");
            (reply, s.peer_addr().expect("peer"))
        })
        .expect("setns");
    server.join().expect("backend thread");
    assert_eq!(
        peer,
        std::net::SocketAddr::from(nodeport),
        "the reply comes from the NodePort"
    );
    assert_eq!(
        reply,
        format!("peer={}", node1.addr()),
        "Cluster policy: the remote backend sees node1's address (SNAT)"
    );
    dp.cleanup().expect("cleanup");
}
