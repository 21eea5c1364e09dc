//! The tc program on crafted packets (`BPF_PROG_TEST_RUN`) and attached for
//! real to a veth in a throwaway namespace.

use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_ebpf_common::{
    CtEntry4, CtKey4, NodeConfig, PROTO_TCP, PROTO_UDP, Reason, RevNat4, SCOPE_EXTERNAL,
    SNAT_PORT_MAX_DEFAULT, SNAT_PORT_MIN_DEFAULT, Svc4Key, ct_dir, ct_flags, svc_flags,
};
use skiff_proxy::ebpf::ServiceSpec;

use crate::fixtures::*;
use crate::harness::KernelEnv;
use crate::packets::{Flags, Seen, icmp_error, parse_checked, parse_icmp_checked, tcp, udp};
use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_syn_to_nodeport_is_dnatted_tracked_and_reply_reverse_natted() {
    let mut env = KernelEnv::new("dnat");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let backend = pod(5, 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        7,
        &[Backend {
            id: 1,
            addr: backend,
            local: true,
        }],
    );

    let syn = tcp(CLIENT, frontend, Flags::Syn, b"");
    let run = env.run_tc(&syn);
    assert_eq!(run.verdict, TC_ACT_OK);
    let seen = parse_checked(&run.packet);
    assert_eq!(
        seen,
        Seen {
            src: CLIENT,
            dst: backend,
            payload: vec![]
        },
        "SYN must be DNAT'd to the local backend with the client address kept"
    );

    let ct = env.maps.conntrack_entries();
    assert_eq!(ct.len(), 2, "one ORIGINAL and one REPLY entry: {ct:?}");
    assert!(ct.iter().any(|(k, v)| k.dir == ct_dir::ORIGINAL
        && k.daddr_be == be(NODE)
        && v.backend_id == 1
        && v.rev_nat_id == 7));
    assert!(ct.iter().any(|(k, _)| k.dir == ct_dir::REPLY
        && k.saddr_be == be(*backend.ip())
        && k.daddr_be == be(*CLIENT.ip())));

    // The backend's SYN-ACK, with data so the checksum covers a payload.
    let reply = tcp(backend, CLIENT, Flags::SynAck, b"hello");
    let run = env.run_tc(&reply);
    assert_eq!(run.verdict, TC_ACT_OK);
    assert_eq!(
        parse_checked(&run.packet),
        Seen {
            src: frontend,
            dst: CLIENT,
            payload: b"hello".to_vec()
        },
        "reply must come from the NodePort frontend"
    );
    assert_eq!(counter(&env, Reason::Translated), 1);
    assert_eq!(counter(&env, Reason::ReverseTranslated), 1);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_nodeport_to_remote_backend_is_snatted_and_reply_restored() {
    let mut env = KernelEnv::new("snat");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 0, 0))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let run = env.run_tc(&tcp(CLIENT, frontend, Flags::Syn, b""));
    assert_eq!(run.verdict, TC_ACT_OK);
    let out = parse_checked(&run.packet);
    assert_eq!(out.dst, remote);
    assert_eq!(
        *out.src.ip(),
        NODE,
        "traffic to a remote backend must leave with the node's address"
    );
    assert!(
        (SNAT_PORT_MIN_DEFAULT..=SNAT_PORT_MAX_DEFAULT).contains(&out.src.port()),
        "with a port of the SNAT range: {}",
        out.src
    );
    // Later packets of the flow keep that port.
    let again = parse_checked(&env.run_tc(&tcp(CLIENT, frontend, Flags::Syn, b"")).packet);
    assert_eq!(again.src, out.src);

    // The remote backend answers the node; the reply goes back to the client.
    let reply = tcp(remote, out.src, Flags::SynAck, b"");
    let run = env.run_tc(&reply);
    let back = parse_checked(&run.packet);
    assert_eq!(back.src, frontend);
    assert_eq!(back.dst, CLIENT);
}

/// Two clients using the same source port towards one remote backend: each
/// SNAT'd flow gets a port of its own (a shared one would send both flows'
/// replies to whichever client conntrack saw last), and each reply goes
/// back to its own client. A configured range is honoured.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_snat_gives_clients_with_the_same_source_port_distinct_ports() {
    let mut env = KernelEnv::new("snatport");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 40_000, 40_003))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let clients: Vec<SocketAddrV4> = (1..=4u8)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, i), 50_000))
        .collect();
    let mut ports = Vec::new();
    for c in &clients {
        let out = parse_checked(&env.run_tc(&tcp(*c, frontend, Flags::Syn, b"")).packet);
        assert_eq!(*out.src.ip(), NODE);
        assert!((40_000..=40_003).contains(&out.src.port()), "{}", out.src);
        ports.push(out.src.port());
    }
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        4,
        "every flow needs its own port: {ports:?}"
    );
    for (c, port) in clients.iter().zip(&ports) {
        let reply = tcp(remote, SocketAddrV4::new(NODE, *port), Flags::SynAck, b"");
        let back = parse_checked(&env.run_tc(&reply).packet);
        assert_eq!((back.src, back.dst), (frontend, *c));
    }
    // The range is exhausted: a fifth client is not translated (the stack
    // gets the packet) rather than stealing a live flow's port.
    let fifth = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 5), 50_000);
    let before = counter(&env, Reason::ConntrackFull);
    let run = env.run_tc(&tcp(fifth, frontend, Flags::Syn, b""));
    assert_eq!(parse_checked(&run.packet).dst, frontend);
    assert_eq!(counter(&env, Reason::ConntrackFull), before + 1);
}

/// `bpf_ktime_get_ns()` as seen from userspace (CLOCK_MONOTONIC).
fn ktime_now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    u64::try_from(t.tv_sec()).expect("secs") * 1_000_000_000
        + u64::try_from(t.tv_nsec()).expect("nsecs")
}

/// Moves `last_seen_ns` of every REPLY conntrack entry naming SNAT port
/// `port` `ago` into the past, through the pinned map, as if that much
/// time had passed without packets.
fn age_reply_entries(env: &KernelEnv, port: u16, ago: std::time::Duration) {
    use aya::maps::{HashMap, Map, MapData};
    let data = MapData::from_pin(env.pin_dir().join(skiff_ebpf_common::MAP_CONNTRACK))
        .expect("pinned conntrack map");
    let mut ct: HashMap<MapData, CtKey4, CtEntry4> =
        HashMap::try_from(Map::LruHashMap(data)).expect("conntrack map");
    let aged: Vec<(CtKey4, CtEntry4)> = ct
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| k.dir == ct_dir::REPLY && k.dport_be == port.to_be())
        .collect();
    assert!(!aged.is_empty(), "no REPLY entry for port {port}");
    let then = ktime_now_ns().saturating_sub(u64::try_from(ago.as_nanos()).expect("ns"));
    for (k, mut v) in aged {
        v.last_seen_ns = then;
        ct.insert(k, v, 0).expect("ageing an entry");
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_snat_port_of_a_closed_flow_goes_to_a_new_flow() {
    let mut env = KernelEnv::new("snatreuse");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 40_000, 40_001))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let client = |i: u8| SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, i), 50_000);
    let mut ports = Vec::new();
    for i in 1..=2 {
        let out = parse_checked(
            &env.run_tc(&tcp(client(i), frontend, Flags::Syn, b""))
                .packet,
        );
        ports.push(out.src.port());
    }
    let third = client(3);
    let before = counter(&env, Reason::ConntrackFull);
    env.run_tc(&tcp(third, frontend, Flags::Syn, b""));
    assert_eq!(
        counter(&env, Reason::ConntrackFull),
        before + 1,
        "range full"
    );

    // Client 1 closes; its flow's REPLY entry is marked.
    let out = parse_checked(
        &env.run_tc(&tcp(client(1), frontend, Flags::Fin, b""))
            .packet,
    );
    assert_eq!(
        out.src,
        SocketAddrV4::new(NODE, ports[0]),
        "FIN still translated"
    );
    assert!(
        env.maps
            .conntrack_entries()
            .iter()
            .any(|(k, v)| k.dir == ct_dir::REPLY
                && k.dport_be == ports[0].to_be()
                && v.flags & ct_flags::CLOSING != 0)
    );
    // Not reusable at once (late segments may still come)...
    env.run_tc(&tcp(third, frontend, Flags::Syn, b""));
    assert_eq!(counter(&env, Reason::ConntrackFull), before + 2);
    // ...but once the grace has passed, the new flow gets the closed one's
    // port, while the open flow of client 2 keeps its own.
    age_reply_entries(&env, ports[0], std::time::Duration::from_secs(11));
    let out = parse_checked(&env.run_tc(&tcp(third, frontend, Flags::Syn, b"")).packet);
    assert_eq!(out.src, SocketAddrV4::new(NODE, ports[0]));
    let reply = tcp(
        remote,
        SocketAddrV4::new(NODE, ports[0]),
        Flags::SynAck,
        b"",
    );
    assert_eq!(parse_checked(&env.run_tc(&reply).packet).dst, third);

    // An open TCP flow's port is not taken after an hour of silence.
    age_reply_entries(&env, ports[1], std::time::Duration::from_secs(3600));
    let fourth = client(4);
    let full = counter(&env, Reason::ConntrackFull);
    env.run_tc(&tcp(fourth, frontend, Flags::Syn, b""));
    assert_eq!(counter(&env, Reason::ConntrackFull), full + 1);
    // (Its 6 h idle timeout is not exercised here: the monotonic clock of
    // a freshly booted machine may not reach back that far.)
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_local_policy_does_not_snat() {
    let mut env = KernelEnv::new("local");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 0, 0))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT | svc_flags::EXT_LOCAL,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let out = parse_checked(&env.run_tc(&tcp(CLIENT, frontend, Flags::Syn, b"")).packet);
    assert_eq!(out.src, CLIENT, "Local policy keeps the client address");
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_round_robin_cycles_backends_exactly() {
    let mut env = KernelEnv::new("rr");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 20), 80);
    let backends: Vec<Backend> = (0..3u8)
        .map(|i| Backend {
            id: 10 + u32::from(i),
            addr: pod(20 + i, 8080),
            local: true,
        })
        .collect();
    install(&mut env, frontend, PROTO_TCP, 0, 9, &backends);

    let mut picked = Vec::new();
    for i in 0..9u16 {
        let client = SocketAddrV4::new(*CLIENT.ip(), 41000 + i);
        let run = env.run_tc(&tcp(client, frontend, Flags::Syn, b""));
        picked.push(parse_checked(&run.packet).dst);
    }
    let expected: Vec<SocketAddrV4> = (0..9).map(|i| backends[i % 3].addr).collect();
    assert_eq!(picked, expected, "new flows must cycle through slots 1,2,3");

    // A tracked flow keeps its backend whatever the cursor says.
    let first = SocketAddrV4::new(*CLIENT.ip(), 41000);
    let again = parse_checked(&env.run_tc(&tcp(first, frontend, Flags::Syn, b"")).packet);
    assert_eq!(again.dst, backends[0].addr);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_service_without_backends_is_refused_with_a_rst_and_counted() {
    let mut env = KernelEnv::new("nobe");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(&mut env, frontend, PROTO_TCP, svc_flags::NODEPORT, 2, &[]);
    let syn = tcp(CLIENT, frontend, Flags::Syn, b"");
    let run = env.run_tc(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the RST goes back out the ingress interface"
    );
    let seen = parse_checked(&run.packet);
    assert_eq!(
        (seen.src, seen.dst),
        (frontend, CLIENT),
        "addresses and ports swapped"
    );
    let rst = rst_fields(&run.packet);
    assert_eq!(
        rst,
        (true, true, 0, 1001),
        "RST|ACK, seq 0, ack = SYN seq + 1"
    );
    assert_eq!(
        &run.packet[..6],
        &syn[6..12],
        "sent back to the sender's MAC"
    );
    assert_eq!(counter(&env, Reason::NoBackend), 1);
    assert!(env.maps.conntrack_entries().is_empty());
}

/// UDP has no RST: a datagram to a service without backends is answered
/// with an ICMP port unreachable from the service address, quoting the
/// datagram's IP header and UDP header, whatever its length.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_udp_to_service_without_backends_gets_icmp_port_unreachable() {
    let mut env = KernelEnv::new("noudp");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(&mut env, frontend, PROTO_UDP, svc_flags::NODEPORT, 3, &[]);
    let long = [0x5a; 300];
    for payload in [&b""[..], &b"query"[..], &long[..]] {
        let dgram = udp(CLIENT, frontend, payload);
        let run = env.run_tc(&dgram);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "the error goes back out the ingress interface"
        );
        assert_eq!(&run.packet[..6], &dgram[6..12], "to the sender's MAC");
        assert_eq!(
            &run.packet[6..12],
            &dgram[..6],
            "from the MAC it was sent to"
        );
        assert_eq!(run.packet.len(), 14 + 20 + 8 + 28, "IP + ICMP + quote");
        let seen = parse_icmp_checked(&run.packet);
        assert_eq!((seen.src, seen.dst), (NODE, *CLIENT.ip()));
        assert_eq!(
            (seen.icmp_type, seen.code),
            (3, 3),
            "destination unreachable / port unreachable"
        );
        assert_eq!(
            seen.quoted,
            dgram[14..14 + 28],
            "quotes the datagram's IP header and UDP header as sent"
        );
    }
    assert_eq!(counter(&env, Reason::NoBackend), 3);
    assert!(env.maps.conntrack_entries().is_empty());
}

/// A router between the node and a remote backend cannot forward a
/// NodePort flow's (DNAT'd and SNAT'd) packet and says so. The client must
/// get the error about the packet it sent: from the NodePort address, to
/// itself, quoting its own packet, every checksum right.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_icmp_error_about_a_snatted_flow_is_translated_back_to_the_client() {
    let mut env = KernelEnv::new("icmpsnat");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 0, 0))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let syn = tcp(CLIENT, frontend, Flags::Syn, b"");
    let sent = env.run_tc(&syn).packet;
    assert_eq!(*parse_checked(&sent).src.ip(), NODE);

    // The router quotes the whole packet as it left the node (Linux quotes
    // up to 576 bytes), so the quoted TCP checksum must be fixed too.
    let router = Ipv4Addr::new(10, 244, 2, 1);
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
    let run = env.run_tc(&icmp_error(router, NODE, kind.clone(), &sent[14..]));
    assert_eq!(run.verdict, TC_ACT_OK, "no route to the client here");
    let seen = parse_icmp_checked(&run.packet);
    assert_eq!(
        (seen.src, seen.dst),
        (NODE, *CLIENT.ip()),
        "from the service address, back to the client"
    );
    assert_eq!((seen.icmp_type, seen.code), (3, 4));
    assert_eq!(seen.rest, [0, 0, 0x05, 0x78], "the MTU is kept");
    assert_eq!(
        seen.quoted,
        syn[14..],
        "the quote must be the client's own packet, checksums included"
    );
    assert_eq!(counter(&env, Reason::ReverseTranslated), 1);

    // An error about a flow we never translated is left alone.
    let stranger = tcp(SocketAddrV4::new(NODE, 40001), remote, Flags::Syn, b"");
    let other = icmp_error(router, NODE, kind, &stranger[14..]);
    let run = env.run_tc(&other);
    assert_eq!(run.verdict, TC_ACT_OK);
    assert_eq!(run.packet, other);
}

/// A router on the client's side cannot take a (reverse-NAT'd) reply of a
/// SNAT'd NodePort flow and sends "fragmentation needed" to the NodePort
/// address. The remote backend must get it about the reply it sent, or
/// path-MTU discovery black-holes the flow: to the backend, from the node
/// address, quoting the backend's own packet, every checksum right.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_icmp_error_about_a_reply_is_translated_for_the_backend() {
    let mut env = KernelEnv::new("icmpback");
    env.maps
        .set_node_config(NodeConfig::new(be(NODE), 0, 0))
        .expect("node config");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 8080);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        3,
        &[Backend {
            id: 4,
            addr: remote,
            local: false,
        }],
    );
    let sent = parse_checked(&env.run_tc(&tcp(CLIENT, frontend, Flags::Syn, b"")).packet);
    // The backend's reply, with data, as it arrives at the node...
    let reply = tcp(remote, sent.src, Flags::SynAck, &[0x42; 64]);
    let out = env.run_tc(&reply).packet;
    assert_eq!(parse_checked(&out).src, frontend);
    // ...and, as it left towards the client, quoted by a router there.
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 576,
    });
    let run = env.run_tc(&icmp_error(router, NODE, kind, &out[14..]));
    assert_eq!(run.verdict, TC_ACT_OK, "no route to the backend here");
    let seen = parse_icmp_checked(&run.packet);
    assert_eq!(
        (seen.src, seen.dst),
        (NODE, *remote.ip()),
        "to the backend, from the address it knows the flow by"
    );
    assert_eq!(
        (seen.icmp_type, seen.code, seen.rest),
        (3, 4, [0, 0, 0x02, 0x40])
    );
    assert_eq!(
        seen.quoted,
        reply[14..],
        "the quote must be the backend's own reply, checksums included"
    );
}

/// A local backend with no socket on the port answers a DNAT'd datagram
/// with a port unreachable quoting only the minimum (IP header + 8 bytes).
/// The client sees it come from the ClusterIP, about its own datagram.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_icmp_error_from_a_local_backend_is_translated_back() {
    let mut env = KernelEnv::new("icmplocal");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let backend = pod(53, 5353);
    install(
        &mut env,
        frontend,
        PROTO_UDP,
        0,
        5,
        &[Backend {
            id: 2,
            addr: backend,
            local: true,
        }],
    );
    let dgram = udp(CLIENT, frontend, b"query");
    let sent = env.run_tc(&dgram).packet;
    assert_eq!(parse_checked(&sent).dst, backend);
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let run = env.run_tc(&icmp_error(
        *backend.ip(),
        *CLIENT.ip(),
        kind,
        &sent[14..14 + 28],
    ));
    assert_eq!(run.verdict, TC_ACT_OK);
    let seen = parse_icmp_checked(&run.packet);
    assert_eq!((seen.src, seen.dst), (*frontend.ip(), *CLIENT.ip()));
    assert_eq!((seen.icmp_type, seen.code), (3, 3));
    assert_eq!(
        seen.quoted,
        dgram[14..14 + 28],
        "IP header and UDP header exactly as the client sent them"
    );
}

/// (rst, ack flag, sequence, acknowledgment) of a TCP frame.
fn rst_fields(frame: &[u8]) -> (bool, bool, u32, u32) {
    let p = etherparse::SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    (
        t.rst(),
        t.ack(),
        t.sequence_number(),
        t.acknowledgment_number(),
    )
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_udp_is_dnatted_with_correct_checksum() {
    let mut env = KernelEnv::new("udp");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let backend = pod(53, 5353);
    install(
        &mut env,
        frontend,
        PROTO_UDP,
        0,
        5,
        &[Backend {
            id: 2,
            addr: backend,
            local: true,
        }],
    );
    let run = env.run_tc(&udp(CLIENT, frontend, b"query"));
    assert_eq!(run.verdict, TC_ACT_OK);
    let seen = parse_checked(&run.packet);
    assert_eq!(seen.dst, backend);
    assert_eq!(seen.payload, b"query");
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_leaves_other_traffic_untouched() {
    let mut env = KernelEnv::new("pass");
    install(
        &mut env,
        SocketAddrV4::new(NODE, NODEPORT),
        PROTO_TCP,
        svc_flags::NODEPORT,
        1,
        &[Backend {
            id: 1,
            addr: pod(5, 8080),
            local: true,
        }],
    );
    // Same address, another port; and the service port over UDP.
    for pkt in [
        tcp(CLIENT, SocketAddrV4::new(NODE, 22), Flags::Syn, b"x"),
        udp(CLIENT, SocketAddrV4::new(NODE, NODEPORT), b"x"),
    ] {
        let run = env.run_tc(&pkt);
        assert_eq!(run.verdict, TC_ACT_OK);
        assert_eq!(run.packet, pkt, "non-service packets must not change");
    }
    assert!(env.maps.conntrack_entries().is_empty());
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn removing_a_backend_drops_its_flows_and_new_flows_avoid_it() {
    let mut env = KernelEnv::new("rmbe");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 30), 80);
    let a = Backend {
        id: 1,
        addr: pod(31, 80),
        local: true,
    };
    let b = Backend {
        id: 2,
        addr: pod(32, 80),
        local: true,
    };
    let key = install(&mut env, frontend, PROTO_TCP, 0, 4, &[a, b]);
    for port in [42000, 42001] {
        env.run_tc(&tcp(
            SocketAddrV4::new(*CLIENT.ip(), port),
            frontend,
            Flags::Syn,
            b"",
        ));
    }
    // Shrink to backend 2 only, then delete backend 1: slots before entry,
    // backend last.
    env.maps
        .upsert_service(
            &ServiceSpec {
                key,
                rev_nat_id: 4,
                rev_nat: RevNat4::new(be(*frontend.ip()), frontend.port().to_be()),
                flags: 0,
                affinity_secs: 0,
                backend_ids: vec![2],
            },
            2,
        )
        .expect("shrinking service");
    assert!(env.maps.service_entry(key.with_slot(2)).is_none());
    let dropped = env.maps.remove_backend(1).expect("removing backend");
    assert_eq!(
        dropped, 2,
        "the flow to backend 1 had two conntrack entries"
    );
    for port in 43000..43004 {
        let out = parse_checked(
            &env.run_tc(&tcp(
                SocketAddrV4::new(*CLIENT.ip(), port),
                frontend,
                Flags::Syn,
                b"",
            ))
            .packet,
        );
        assert_eq!(out.dst, pod(32, 80));
    }
}

/// What a sync does when a backend goes: its entry is removed without a
/// conntrack walk. The flow's next packet finds its backend id dangling and
/// moves to a live backend; the stale entries' ids stay visible, so a
/// restarted proxy allocates above them.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn a_flow_to_a_removed_backend_moves_at_its_next_packet() {
    let mut env = KernelEnv::new("lazy");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 31), 80);
    let gone = Backend {
        id: 7,
        addr: pod(37, 80),
        local: true,
    };
    let live = Backend {
        id: 1,
        addr: pod(31, 80),
        local: true,
    };
    let key = install(&mut env, frontend, PROTO_TCP, 0, 4, &[gone, live]);
    let client = SocketAddrV4::new(*CLIENT.ip(), 42100);
    let syn = tcp(client, frontend, Flags::Syn, b"");
    assert_eq!(parse_checked(&env.run_tc(&syn).packet).dst, pod(37, 80));

    env.maps
        .upsert_service(
            &ServiceSpec {
                key,
                rev_nat_id: 4,
                rev_nat: RevNat4::new(be(*frontend.ip()), frontend.port().to_be()),
                flags: 0,
                affinity_secs: 0,
                backend_ids: vec![1],
            },
            2,
        )
        .expect("shrinking service");
    env.maps
        .remove_backend_entries(&[7])
        .expect("removing backend 7");
    assert_eq!(env.maps.conntrack_entries().len(), 2, "nothing walked");
    assert_eq!(env.maps.max_backend_id_referenced(), 7);

    let out = parse_checked(&env.run_tc(&syn).packet);
    assert_eq!(out.dst, pod(31, 80), "the flow moves to the live backend");
    assert!(
        env.maps
            .conntrack_entries()
            .iter()
            .any(|(k, v)| k.dir == ct_dir::ORIGINAL && v.backend_id == 1),
        "and is tracked to it"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn maps_survive_a_reload_from_the_pin_directory() {
    let mut env = KernelEnv::new("pin");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        6,
        &[Backend {
            id: 1,
            addr: pod(5, 8080),
            local: true,
        }],
    );
    env.run_tc(&tcp(CLIENT, frontend, Flags::Syn, b""));
    // A second load (as a restarted proxy would do) sees the same maps.
    let mut again = skiff_proxy::ebpf::Loaded::load(env.pin_dir()).expect("reload");
    let maps = skiff_proxy::ebpf::ServiceMaps::take(&mut again.ebpf).expect("maps");
    assert_eq!(maps.conntrack_entries().len(), 2);
    let key = Svc4Key::new(be(NODE), NODEPORT.to_be(), PROTO_TCP, SCOPE_EXTERNAL, 0);
    assert_eq!(maps.service_entry(key).map(|v| v.count), Some(1));
}

/// A client namespace on a veth to the node's `eth0`: node 192.0.2.10/24,
/// client 192.0.2.7/24.
fn client_over_veth(env: &KernelEnv, name: &str) -> skiff_tests::netns::Netns {
    let client_ns = skiff_tests::netns::Netns::new(name).expect("client netns");
    skiff_tests::netns::link_veth(&env.netns, "eth0", &client_ns, "eth0").expect("veth");
    env.netns
        .add_addr("eth0", "192.0.2.10/24".parse().expect("cidr"))
        .expect("node addr");
    client_ns
        .add_addr("eth0", "192.0.2.7/24".parse().expect("cidr"))
        .expect("client addr");
    client_ns
}

/// Attaches the tc program to the node's `eth0` in the given directions.
fn attach_tc(env: &mut KernelEnv, directions: &[aya::programs::TcAttachType]) {
    let netns = &env.netns;
    let prog = env.loaded.tc_program().expect("tc program");
    netns
        .run_in(|| {
            // clsact may already exist (tcx does not need it); ignore "exists".
            let _ = aya::programs::tc::qdisc_add_clsact("eth0");
            for direction in directions {
                prog.attach("eth0", *direction).expect("attach tc");
            }
        })
        .expect("enter node netns");
}

/// The tc program attached for real: a client namespace connects over a
/// veth to the node's NodePort; the program DNATs to a backend listening in
/// the node namespace and reverse-NATs the reply on egress. Real sockets,
/// real kernel path, checksums checked by the receiving stacks.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_attached_nodeport_carries_a_real_tcp_connection() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use aya::programs::TcAttachType;

    let mut env = KernelEnv::new("attach");
    let client_ns = client_over_veth(&env, "ktc");
    // The backend's address is local to the node (this kernel has no dummy
    // link type; loopback holds it just as well).
    env.netns
        .add_addr("lo", "10.244.1.5/32".parse().expect("cidr"))
        .expect("pod addr");
    // The client reaches the pod network only through the node, like any
    // outside host; the test asserts it still sees the NodePort address.
    let backend = pod(5, 8080);
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::NODEPORT,
        11,
        &[Backend {
            id: 1,
            addr: backend,
            local: true,
        }],
    );

    let listener = env
        .netns
        .run_in(|| TcpListener::bind(backend))
        .expect("enter node netns")
        .expect("bind backend");
    attach_tc(&mut env, &[TcAttachType::Ingress, TcAttachType::Egress]);

    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read request");
        conn.write_all(format!("peer={peer}").as_bytes())
            .expect("write reply");
    });
    let (reply, local, remote) = client_ns
        .run_in(|| {
            let mut s = TcpStream::connect_timeout(&frontend.into(), Duration::from_secs(5))
                .expect("connect to NodePort");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"ping").expect("send");
            let mut reply = String::new();
            s.read_to_string(&mut reply).expect("read reply");
            (
                reply,
                s.local_addr().expect("local"),
                s.peer_addr().expect("peer"),
            )
        })
        .expect("enter client netns");
    server.join().expect("server thread");
    assert_eq!(remote, std::net::SocketAddr::from(frontend));
    assert_eq!(
        reply,
        format!("peer={local}"),
        "the backend must see the real client address (local backend, no SNAT)"
    );
    assert!(
        counter(&env, Reason::Translated) >= 3,
        "SYN, ACK, data went through DNAT"
    );
    assert!(counter(&env, Reason::ReverseTranslated) >= 2);
}

/// A NodePort without endpoints, attached for real: the client's connect()
/// fails at once with "connection refused" (the RST), not after SYN
/// retransmission timeouts.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_attached_nodeport_without_backends_refuses_at_once() {
    use std::io::ErrorKind;
    use std::net::TcpStream;
    use std::time::Duration;

    use aya::programs::TcAttachType;

    let mut env = KernelEnv::new("attrst");
    let client_ns = client_over_veth(&env, "ktr");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(&mut env, frontend, PROTO_TCP, svc_flags::NODEPORT, 12, &[]);
    // Something listens on the NodePort: without the RST it would answer.
    let decoy = env
        .netns
        .run_in(|| std::net::TcpListener::bind(frontend))
        .expect("setns")
        .expect("bind decoy");
    attach_tc(&mut env, &[TcAttachType::Ingress]);
    let err = client_ns
        .run_in(|| TcpStream::connect_timeout(&frontend.into(), Duration::from_secs(5)))
        .expect("setns")
        .expect_err("connect must be refused");
    // A black hole would end in TimedOut; the decoy would have accepted.
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    drop(decoy);
}

/// UDP to a NodePort without endpoints, attached for real: a connected UDP
/// socket gets ECONNREFUSED from the ICMP port unreachable the program
/// sends. A socket is bound on the NodePort so that the node's own stack
/// would not refuse the datagram: only the program can.
#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_attached_udp_nodeport_without_backends_refuses_a_connected_socket() {
    use std::io::ErrorKind;
    use std::net::UdpSocket;
    use std::time::Duration;

    use aya::programs::TcAttachType;

    let mut env = KernelEnv::new("attudp");
    let client_ns = client_over_veth(&env, "ktu");
    let frontend = SocketAddrV4::new(NODE, NODEPORT);
    install(&mut env, frontend, PROTO_UDP, svc_flags::NODEPORT, 14, &[]);
    let decoy = env
        .netns
        .run_in(|| UdpSocket::bind(frontend))
        .expect("setns")
        .expect("bind decoy");
    attach_tc(&mut env, &[TcAttachType::Ingress]);
    let err = client_ns
        .run_in(|| {
            let s = UdpSocket::bind("192.0.2.7:0")?;
            s.connect(frontend)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.send(b"anyone?")?;
            let mut buf = [0u8; 64];
            s.recv(&mut buf)
        })
        .expect("setns")
        .expect_err("the datagram must be refused");
    // Without the error the recv would time out (WouldBlock).
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let mut buf = [0u8; 64];
    decoy.set_nonblocking(true).expect("nonblocking decoy");
    assert!(
        decoy.recv(&mut buf).is_err(),
        "the datagram must not have reached the node's socket"
    );
    assert_eq!(counter(&env, Reason::NoBackend), 1);
}

#[test]
#[ignore = "needs root: run by cargo xtask test --kernel"]
fn tc_client_ip_affinity_sticks_per_client_and_round_robins_across_clients() {
    let mut env = KernelEnv::new("aff");
    let frontend = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 40), 80);
    let backends: Vec<Backend> = (0..3u8)
        .map(|i| Backend {
            id: 40 + u32::from(i),
            addr: pod(40 + i, 8080),
            local: true,
        })
        .collect();
    install_with_affinity(
        &mut env,
        frontend,
        PROTO_TCP,
        svc_flags::AFFINITY,
        13,
        &backends,
        600,
    );
    let pick = |env: &mut KernelEnv, client: Ipv4Addr, port: u16| {
        let c = SocketAddrV4::new(client, port);
        parse_checked(&env.run_tc(&tcp(c, frontend, Flags::Syn, b"")).packet).dst
    };
    let a = Ipv4Addr::new(198, 51, 100, 1);
    let b = Ipv4Addr::new(198, 51, 100, 2);
    let first_a = pick(&mut env, a, 50000);
    for port in 50001..50010 {
        assert_eq!(
            pick(&mut env, a, port),
            first_a,
            "client A must stick to its backend"
        );
    }
    let first_b = pick(&mut env, b, 50000);
    assert_ne!(
        first_a, first_b,
        "a new client takes the next round-robin turn"
    );
    for port in 50001..50005 {
        assert_eq!(pick(&mut env, b, port), first_b);
    }
}
