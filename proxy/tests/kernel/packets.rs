//! Crafting and checking test packets (etherparse), so assertions are about
//! what a real stack would parse, checksums included.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

pub enum Flags {
    Syn,
    SynAck,
    /// FIN+ACK: one side closes.
    Fin,
}

pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 64240);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::SynAck => b.syn().ack(1001),
        Flags::Fin => b.fin().ack(1001),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building TCP packet");
    out
}

pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building UDP packet");
    out
}

/// What a packet says, after checking its IPv4 and L4 checksums.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Parses an Ethernet/IPv4/TCP-or-UDP frame and panics unless both
/// checksums are correct.
pub fn parse_checked(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("output packet parses");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("output is not IPv4")
    };
    let hdr = ip.header().to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IPv4 header checksum is wrong"
    );
    let src_ip = Ipv4Addr::from(hdr.source);
    let dst_ip = Ipv4Addr::from(hdr.destination);
    match p.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&hdr, tcp.payload())
                .expect("tcp checksum calc");
            assert_eq!(tcp.checksum(), expected, "TCP checksum is wrong");
            Seen {
                src: SocketAddrV4::new(src_ip, tcp.source_port()),
                dst: SocketAddrV4::new(dst_ip, tcp.destination_port()),
                payload: tcp.payload().to_vec(),
            }
        }
        Some(TransportSlice::Udp(udp)) => {
            let expected = udp
                .to_header()
                .calc_checksum_ipv4(&hdr, udp.payload())
                .expect("udp checksum calc");
            assert_eq!(udp.checksum(), expected, "UDP checksum is wrong");
            Seen {
                src: SocketAddrV4::new(src_ip, udp.source_port()),
                dst: SocketAddrV4::new(dst_ip, udp.destination_port()),
                payload: udp.payload().to_vec(),
            }
        }
        _ => panic!("output is neither TCP nor UDP"),
    }
}

/// An ICMP error from `src` to `dst` quoting `quoted` (an IP packet, or
/// its first bytes).
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: etherparse::Icmpv4Type,
    quoted: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(kind);
    let mut out = Vec::with_capacity(b.size(quoted.len()));
    b.write(&mut out, quoted).expect("building ICMP packet");
    out
}

/// What an ICMP packet says, after checking its IPv4 and ICMP checksums.
#[derive(Debug)]
pub struct IcmpSeen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// Bytes 5-8 of the ICMP header (e.g. the next-hop MTU).
    pub rest: [u8; 4],
    /// What the error quotes.
    pub quoted: Vec<u8>,
}

/// Parses an Ethernet/IPv4/ICMP frame and panics unless both checksums
/// are correct.
pub fn parse_icmp_checked(frame: &[u8]) -> IcmpSeen {
    let p = SlicedPacket::from_ethernet(frame).expect("output packet parses");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("output is not IPv4")
    };
    let hdr = ip.header().to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IPv4 header checksum is wrong"
    );
    assert_eq!(
        usize::from(hdr.total_len),
        frame.len() - 14,
        "IPv4 total length must match the frame"
    );
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("output is not ICMPv4")
    };
    assert_eq!(
        icmp.checksum(),
        icmp.header().icmp_type.calc_checksum(icmp.payload()),
        "ICMP checksum is wrong"
    );
    IcmpSeen {
        src: Ipv4Addr::from(hdr.source),
        dst: Ipv4Addr::from(hdr.destination),
        icmp_type: icmp.type_u8(),
        code: icmp.code_u8(),
        rest: icmp.bytes5to8(),
        quoted: icmp.payload().to_vec(),
    }
}
