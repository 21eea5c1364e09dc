//! Header access through the bounds-checked skb load/store helpers, and
//! rewrites that keep the IPv4 and TCP/UDP checksums correct.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use aya_ebpf::programs::TcContext;
use skiff_ebpf_common::{PROTO_TCP, PROTO_UDP, Reason};

const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SADDR_OFF: usize = ETH_HLEN + 12;
const IP_DADDR_OFF: usize = ETH_HLEN + 16;
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
}

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
    Ok(Some(Packet {
        l4_off,
        proto,
        saddr_be: ctx.load(IP_SADDR_OFF).map_err(|_| Reason::Truncated)?,
        daddr_be: ctx.load(IP_DADDR_OFF).map_err(|_| Reason::Truncated)?,
        sport_be: ctx.load(l4_off).map_err(|_| Reason::Truncated)?,
        dport_be: ctx.load(l4_off + 2).map_err(|_| Reason::Truncated)?,
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
