//! Socket-level load balancing attached to a throwaway cgroup, exercised by
//! real TCP and UDP sockets inside a throwaway network namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use skiff_ebpf_common::{PROTO_TCP, PROTO_UDP, Reason};

use crate::fixtures::*;
use crate::harness::{CgroupGuard, KernelEnv};

/// Backends on the namespace's loopback, each answering one line with its
/// own address for exactly `conns` connections.
fn tcp_backends(
    env: &KernelEnv,
    addrs: &[SocketAddrV4],
    conns: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    addrs
        .iter()
        .map(|addr| {
            env.netns
                .add_addr("lo", format!("{}/32", addr.ip()).parse().expect("cidr"))
                .expect("backend addr");
            let l = env
                .netns
                .run_in(|| TcpListener::bind(addr))
                .expect("setns")
                .expect("bind backend");
            let me = *addr;
            std::thread::spawn(move || {
                for _ in 0..conns {
                    let Ok((mut c, _)) = l.accept() else { return };
                    let _ = c.write_all(me.to_string().as_bytes());
                }
            })
        })
        .collect()
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn socket_lb_clusterip_round_robin_is_exact_and_peer_is_the_service() {
    let mut env = KernelEnv::new("sockrr");
    let cg = CgroupGuard::enter("sockrr");
    env.loaded
        .attach_socket_lb(cg.path(), false)
        .expect("attaching socket-LB");
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 50), 80);
    let addrs: Vec<SocketAddrV4> = (1..=3).map(|i| pod(10 + i, 8080)).collect();
    let backends: Vec<Backend> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Backend {
            id: 100 + i as u32,
            addr: *a,
            local: true,
        })
        .collect();
    install(&mut env, vip, PROTO_TCP, 0, 21, &backends);
    let servers = tcp_backends(&env, &addrs, 10);

    let answers: Vec<(String, SocketAddr)> = env
        .netns
        .run_in(|| {
            (0..30)
                .map(|_| {
                    let mut s = TcpStream::connect_timeout(&vip.into(), Duration::from_secs(3))
                        .expect("connect to ClusterIP");
                    s.set_read_timeout(Some(Duration::from_secs(3)))
                        .expect("timeout");
                    let mut who = String::new();
                    s.read_to_string(&mut who).expect("read");
                    (who, s.peer_addr().expect("peer"))
                })
                .collect()
        })
        .expect("setns");
    for s in servers {
        s.join().expect("backend thread");
    }
    for a in &addrs {
        let n = answers
            .iter()
            .filter(|(who, _)| *who == a.to_string())
            .count();
        assert_eq!(n, 10, "backend {a} must get exactly 10 of 30: {answers:?}");
    }
    assert!(
        answers
            .iter()
            .all(|(_, peer)| *peer == SocketAddr::from(vip)),
        "getpeername must show the ClusterIP"
    );
    assert_eq!(counter(&env, Reason::SockTranslated), 30);
    assert!(
        env.maps.conntrack_entries().is_empty(),
        "socket-LB needs no conntrack"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn socket_lb_service_without_backends_refuses_the_connection() {
    let mut env = KernelEnv::new("sockrefuse");
    let cg = CgroupGuard::enter("sockrefuse");
    env.loaded
        .attach_socket_lb(cg.path(), false)
        .expect("attaching socket-LB");
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 51), 80);
    install(&mut env, vip, PROTO_TCP, 0, 22, &[]);
    let err = env
        .netns
        .run_in(|| TcpStream::connect_timeout(&vip.into(), Duration::from_secs(3)))
        .expect("setns")
        .expect_err("connect must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(counter(&env, Reason::SockRefused), 1);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn socket_lb_unconnected_udp_replies_come_from_the_service() {
    let mut env = KernelEnv::new("sockudp");
    let cg = CgroupGuard::enter("sockudp");
    env.loaded
        .attach_socket_lb(cg.path(), false)
        .expect("attaching socket-LB");
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let backend = pod(53, 5353);
    install(
        &mut env,
        vip,
        PROTO_UDP,
        0,
        23,
        &[Backend {
            id: 7,
            addr: backend,
            local: true,
        }],
    );
    env.netns
        .add_addr("lo", "10.244.1.53/32".parse().expect("cidr"))
        .expect("backend addr");
    let server = env
        .netns
        .run_in(|| UdpSocket::bind(backend))
        .expect("setns")
        .expect("bind");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).expect("server recv");
        server.send_to(&buf[..n], from).expect("server send");
    });
    let (reply, from) = env
        .netns
        .run_in(|| {
            let c = UdpSocket::bind("0.0.0.0:0").expect("client bind");
            c.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            c.send_to(b"query", vip).expect("sendto ClusterIP");
            let mut buf = [0u8; 64];
            let (n, from) = c.recv_from(&mut buf).expect("recv reply");
            (buf[..n].to_vec(), from)
        })
        .expect("setns");
    echo.join().expect("echo thread");
    assert_eq!(reply, b"query");
    assert_eq!(
        from,
        SocketAddr::from(vip),
        "recvmsg must show the ClusterIP"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn socket_lb_client_ip_affinity_keeps_a_pod_on_one_backend() {
    let mut env = KernelEnv::new("sockaff");
    let cg = CgroupGuard::enter("sockaff");
    env.loaded
        .attach_socket_lb(cg.path(), false)
        .expect("attaching socket-LB");
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 52), 80);
    let addrs: Vec<SocketAddrV4> = (1..=3).map(|i| pod(60 + i, 8080)).collect();
    let backends: Vec<Backend> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Backend {
            id: 200 + i as u32,
            addr: *a,
            local: true,
        })
        .collect();
    install_with_affinity(
        &mut env,
        vip,
        PROTO_TCP,
        skiff_ebpf_common::svc_flags::AFFINITY,
        24,
        &backends,
        600,
    );
    let conns = 12;
    let servers = tcp_backends(&env, &addrs, conns);
    let answers: Vec<String> = env
        .netns
        .run_in(|| {
            (0..conns)
                .map(|_| {
                    let mut s = TcpStream::connect_timeout(&vip.into(), Duration::from_secs(3))
                        .expect("connect to ClusterIP");
                    let mut who = String::new();
                    s.read_to_string(&mut who).expect("read");
                    who
                })
                .collect()
        })
        .expect("setns");
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every connection from one pod (netns) goes to the same backend: {answers:?}"
    );
    // The unchosen backends' threads wait in accept() for connections that
    // never come; they end with the test process (not joined on purpose).
    drop(servers);
}
