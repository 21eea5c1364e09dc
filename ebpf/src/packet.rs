//! Header access through the bounds-checked skb load/store helpers, and
//! rewrites that keep the IPv4 and TCP/UDP checksums correct.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use aya_ebpf::programs::TcContext;
use skiff_ebpf_common::{PROTO_TCP, PROTO_UDP, Reason};

const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// Fragment offset bits and "more fragments" in the IPv4 flags/offset field.
const IP_FRAG_MASK_BE: u16 = 0x3fffu16.to_be();

/// The parts of an IPv4 TCP/UDP packet the load balancer needs. Addresses
/// and ports are kept in network byte order, exactly as on the wire.
#[derive(Clone, Copy)]
pub struct Packet {
    pub l4_off: usize,
    pub proto: u8,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
}

/// TCP FIN and RST bits of [`Packet::tcp_flags`]: the flow is ending.
pub const TCP_FIN_OR_RST: u8 = 0x01 | 0x04;

impl Packet {
    fn l4_csum_off(&self) -> usize {
        if self.proto == PROTO_TCP {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }

    fn l4_csum_flags(&self) -> u64 {
        // A zero UDP checksum means "none": leave it zero.
        if self.proto == PROTO_UDP {
            BPF_F_MARK_MANGLED_0 as u64
        } else {
            0
        }
    }
}

/// Parses Ethernet + IPv4 + TCP/UDP. `Ok(None)` for anything else (other
/// ethertypes, other protocols, non-first fragments): not ours to touch.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Option<Packet>, Reason> {
    let ethertype: u16 = ctx.load(12).map_err(|_| Reason::Truncated)?;
    if ethertype != ETH_P_IP_BE {
        return Ok(None);
    }
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| Reason::Truncated)?;
    if vihl >> 4 != 4 {
        return Ok(None);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::Truncated);
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).map_err(|_| Reason::Truncated)?;
    if frag & IP_FRAG_MASK_BE != 0 {
        // Fragments carry no (or a partial) L4 header; see the design notes.
        return Ok(None);
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| Reason::Truncated)?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(None);
    }
    let l4_off = ETH_HLEN + ihl;
    let tcp_flags = if proto == PROTO_TCP {
        ctx.load(l4_off + 13).map_err(|_| Reason::Truncated)?
    } else {
        0
    };
    Ok(Some(Packet {
        l4_off,
        proto,
        saddr_be: ctx.load(IP_SADDR_OFF).map_err(|_| Reason::Truncated)?,
        daddr_be: ctx.load(IP_DADDR_OFF).map_err(|_| Reason::Truncated)?,
        sport_be: ctx.load(l4_off).map_err(|_| Reason::Truncated)?,
        dport_be: ctx.load(l4_off + 2).map_err(|_| Reason::Truncated)?,
        tcp_flags,
    }))
}

/// Which address of the IPv4 header to rewrite.
#[derive(Clone, Copy)]
pub enum Side {
    Source,
    Destination,
}

/// Rewrites an address, fixing the IP header checksum and the L4 checksum
/// (whose pseudo-header covers both addresses).
#[inline(always)]
pub fn set_addr(ctx: &TcContext, pkt: &mut Packet, side: Side, new_be: u32) -> Result<(), Reason> {
    let (off, old) = match side {
        Side::Source => (IP_SADDR_OFF, pkt.saddr_be),
        Side::Destination => (IP_DADDR_OFF, pkt.daddr_be),
    };
    if old == new_be {
        return Ok(());
    }
    ctx.l4_csum_replace(
        pkt.l4_csum_off(),
        old as u64,
        new_be as u64,
        BPF_F_PSEUDO_HDR as u64 | pkt.l4_csum_flags() | 4,
    )
    .map_err(|_| Reason::HelperFailed)?;
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new_be as u64, 4)
        .map_err(|_| Reason::HelperFailed)?;
    ctx.store(off, &new_be, 0)
        .map_err(|_| Reason::HelperFailed)?;
    match side {
        Side::Source => pkt.saddr_be = new_be,
        Side::Destination => pkt.daddr_be = new_be,
    }
    Ok(())
}

/// Rewrites a port, fixing the L4 checksum.
#[inline(always)]
pub fn set_port(ctx: &TcContext, pkt: &mut Packet, side: Side, new_be: u16) -> Result<(), Reason> {
    let (off, old) = match side {
        Side::Source => (pkt.l4_off, pkt.sport_be),
        Side::Destination => (pkt.l4_off + 2, pkt.dport_be),
    };
    if old == new_be {
        return Ok(());
    }
    ctx.l4_csum_replace(
        pkt.l4_csum_off(),
        old as u64,
        new_be as u64,
        pkt.l4_csum_flags() | 2,
    )
    .map_err(|_| Reason::HelperFailed)?;
    ctx.store(off, &new_be, 0)
        .map_err(|_| Reason::HelperFailed)?;
    match side {
        Side::Source => pkt.sport_be = new_be,
        Side::Destination => pkt.dport_be = new_be,
    }
    Ok(())
}

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Fragment offset bits alone (a first fragment still carries the ports).
const IP_OFFSET_MASK_BE: u16 = 0x1fffu16.to_be();

/// An ICMP error (destination unreachable, time exceeded, parameter
/// problem) about a TCP/UDP packet: where its parts are, and the quoted
/// packet's tuple as it was sent. Byte order as on the wire.
#[derive(Clone, Copy)]
pub struct IcmpError {
    pub icmp_off: usize,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub inner_ip_off: usize,
    pub inner_l4_off: usize,
    pub inner_proto: u8,
    pub inner_saddr_be: u32,
    pub inner_daddr_be: u32,
    pub inner_sport_be: u16,
    pub inner_dport_be: u16,
}

/// Parses Ethernet + IPv4 + an ICMP error quoting an IPv4 TCP/UDP header.
/// `Ok(None)` for anything else.
#[inline(always)]
pub fn parse_icmp_error(ctx: &TcContext) -> Result<Option<IcmpError>, Reason> {
    let ethertype: u16 = ctx.load(12).map_err(|_| Reason::Truncated)?;
    if ethertype != ETH_P_IP_BE {
        return Ok(None);
    }
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| Reason::Truncated)?;
    if vihl >> 4 != 4 {
        return Ok(None);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::Truncated);
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).map_err(|_| Reason::Truncated)?;
    let proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| Reason::Truncated)?;
    if frag & IP_FRAG_MASK_BE != 0 || proto != PROTO_ICMP {
        return Ok(None);
    }
    let icmp_off = ETH_HLEN + ihl;
    let icmp_type: u8 = ctx.load(icmp_off).map_err(|_| Reason::Truncated)?;
    if icmp_type != ICMP_DEST_UNREACH
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROBLEM
    {
        return Ok(None);
    }
    let inner_ip_off = icmp_off + 8;
    let ivihl: u8 = ctx.load(inner_ip_off).map_err(|_| Reason::Truncated)?;
    let iihl = ((ivihl & 0x0f) as usize) * 4;
    if ivihl >> 4 != 4 || iihl < 20 {
        return Ok(None);
    }
    let ifrag: u16 = ctx.load(inner_ip_off + 6).map_err(|_| Reason::Truncated)?;
    let inner_proto: u8 = ctx.load(inner_ip_off + 9).map_err(|_| Reason::Truncated)?;
    if ifrag & IP_OFFSET_MASK_BE != 0 || (inner_proto != PROTO_TCP && inner_proto != PROTO_UDP) {
        return Ok(None);
    }
    let inner_l4_off = inner_ip_off + iihl;
    Ok(Some(IcmpError {
        icmp_off,
        saddr_be: ctx.load(IP_SADDR_OFF).map_err(|_| Reason::Truncated)?,
        daddr_be: ctx.load(IP_DADDR_OFF).map_err(|_| Reason::Truncated)?,
        inner_ip_off,
        inner_l4_off,
        inner_proto,
        inner_saddr_be: ctx.load(inner_ip_off + 12).map_err(|_| Reason::Truncated)?,
        inner_daddr_be: ctx.load(inner_ip_off + 16).map_err(|_| Reason::Truncated)?,
        inner_sport_be: ctx.load(inner_l4_off).map_err(|_| Reason::Truncated)?,
        inner_dport_be: ctx.load(inner_l4_off + 2).map_err(|_| Reason::Truncated)?,
    }))
}

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
pub fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Incremental checksum update (RFC 1624, eqn. 3) for a 32-bit field
/// changing from `old` to `new`. Values are as loaded from the packet: the
/// one's complement sum does not care about byte order as long as every
/// word is read the same way.
#[inline(always)]
pub fn csum_update32(csum: u16, old: u32, new: u32) -> u16 {
    let sum = u32::from(!csum) + ((!old) & 0xffff) + ((!old) >> 16) + (new & 0xffff) + (new >> 16);
    !csum_fold(sum)
}

/// [`csum_update32`] for a 16-bit field.
#[inline(always)]
pub fn csum_update16(csum: u16, old: u16, new: u16) -> u16 {
    !csum_fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}
