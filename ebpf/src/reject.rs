//! Refusing traffic to a service without backends: a TCP segment is turned
//! into a RST answering it, a UDP datagram into an ICMP port unreachable,
//! and sent back out the interface it came in on, so the client sees
//! "connection refused" at once instead of retransmitting into a black hole.

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{__sk_buff, TC_ACT_REDIRECT};
use aya_ebpf::helpers::{bpf_csum_diff, bpf_redirect, bpf_skb_change_tail};
use aya_ebpf::programs::TcContext;
use skiff_ebpf_common::{PROTO_TCP, Reason};

use crate::packet::{PROTO_ICMP, Packet};

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The RST's sequence/ack numbers and flags for an incoming segment
/// (RFC 9293 §3.10.7.1): answer an ACK with its ack number as our sequence;
/// otherwise sequence 0 and acknowledge everything the segment occupied.
#[inline(always)]
fn reset_numbers(flags: u8, seq: u32, ack: u32, payload_len: u32) -> (u32, u32, u8) {
    if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let mut len = payload_len;
        if flags & TCP_SYN != 0 {
            len += 1;
        }
        if flags & TCP_FIN != 0 {
            len += 1;
        }
        (0, seq.wrapping_add(len), TCP_RST | TCP_ACK)
    }
}

/// Rewrites the packet into a RST for its sender and redirects it out of
/// the ingress interface. Returns the tc action to use.
#[inline(always)]
pub fn tcp_reset(ctx: &TcContext, pkt: &Packet) -> Result<i32, Reason> {
    if pkt.proto != PROTO_TCP || pkt.l4_off != ETH_HLEN + IP_HLEN {
        // IP options: not worth reshaping; the caller drops instead.
        return Err(Reason::HelperFailed);
    }
    let l4 = pkt.l4_off;
    let tot_len_be: u16 = ctx.load(ETH_HLEN + 2).map_err(|_| Reason::Truncated)?;
    let seq_be: u32 = ctx.load(l4 + 4).map_err(|_| Reason::Truncated)?;
    let ack_be: u32 = ctx.load(l4 + 8).map_err(|_| Reason::Truncated)?;
    let doff: u8 = ctx.load(l4 + 12).map_err(|_| Reason::Truncated)?;
    let flags: u8 = ctx.load(l4 + 13).map_err(|_| Reason::Truncated)?;
    if flags & TCP_RST != 0 {
        // Never answer a RST.
        return Err(Reason::NoBackend);
    }
    let header_len = IP_HLEN as u32 + u32::from(doff >> 4) * 4;
    let payload_len = u32::from(u16::from_be(tot_len_be)).saturating_sub(header_len);
    let (seq, ack, rflags) = reset_numbers(
        flags,
        u32::from_be(seq_be),
        u32::from_be(ack_be),
        payload_len,
    );

    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: the context is a valid __sk_buff for the program's duration.
    let (ifindex, ret) = unsafe {
        (
            (*skb).ifindex,
            bpf_skb_change_tail(skb, (ETH_HLEN + IP_HLEN + TCP_HLEN) as u32, 0),
        )
    };
    if ret != 0 {
        return Err(Reason::HelperFailed);
    }

    // Ethernet: back to where it came from.
    let macs: [u8; 12] = ctx.load(0).map_err(|_| Reason::Truncated)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
        .map_err(|_| Reason::HelperFailed)?;

    // IPv4: swapping the addresses keeps the header checksum; the length
    // changes it.
    let new_tot_be = ((IP_HLEN + TCP_HLEN) as u16).to_be();
    ctx.l3_csum_replace(
        ETH_HLEN + 10,
        u64::from(tot_len_be),
        u64::from(new_tot_be),
        2,
    )
    .map_err(|_| Reason::HelperFailed)?;
    ctx.store(ETH_HLEN + 2, &new_tot_be, 0)
        .map_err(|_| Reason::HelperFailed)?;
    ctx.store(ETH_HLEN + 12, &pkt.daddr_be, 0)
        .map_err(|_| Reason::HelperFailed)?;
    ctx.store(ETH_HLEN + 16, &pkt.saddr_be, 0)
        .map_err(|_| Reason::HelperFailed)?;

    // TCP: a fresh 20-byte header, checksum computed from scratch.
    let mut tcp = [0u32; 5];
    tcp[0] = u32::from(pkt.dport_be) | (u32::from(pkt.sport_be) << 16);
    tcp[1] = seq.to_be();
    tcp[2] = ack.to_be();
    // data offset 5, flags; window, checksum and urgent pointer zero.
    tcp[3] = u32::from_ne_bytes([5 << 4, rflags, 0, 0]);
    let mut pseudo = [
        pkt.daddr_be,
        pkt.saddr_be,
        u32::from_ne_bytes([0, PROTO_TCP, 0, TCP_HLEN as u8]),
    ];
    // SAFETY: stack buffers of the sizes passed; sizes are multiples of 4.
    let sum = unsafe {
        let partial = bpf_csum_diff(core::ptr::null_mut(), 0, pseudo.as_mut_ptr(), 12, 0);
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            tcp.as_mut_ptr(),
            20,
            partial as u32,
        )
    };
    if sum < 0 {
        return Err(Reason::HelperFailed);
    }
    let mut folded = sum as u64;
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    let csum = !(folded as u16);
    ctx.store(l4, &tcp, 0).map_err(|_| Reason::HelperFailed)?;
    ctx.store(l4 + 16, &csum, 0)
        .map_err(|_| Reason::HelperFailed)?;

    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(ifindex, 0) };
    if action != i64::from(TC_ACT_REDIRECT) {
        return Err(Reason::HelperFailed);
    }
    Ok(TC_ACT_REDIRECT as i32)
}

const ICMP_HLEN: usize = 8;
/// What an ICMP error quotes: the offending IP header and 8 bytes of its
/// payload (RFC 792), here the whole UDP header.
const QUOTE_LEN: usize = IP_HLEN + 8;
const ICMP_LEN: usize = IP_HLEN + ICMP_HLEN + QUOTE_LEN;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;

/// The reply's IP and ICMP headers and the quote, 4-byte aligned for
/// `bpf_csum_diff`.
#[repr(C, align(4))]
struct IcmpReply([u8; ICMP_LEN]);

/// One's complement sum of a 4-byte aligned buffer whose length is a
/// multiple of 4, folded to the 16-bit checksum.
#[inline(always)]
fn checksum(ptr: *mut u8, len: u32) -> Result<u16, Reason> {
    // SAFETY: the caller passes a 4-byte aligned stack buffer of `len`
    // bytes; bpf_csum_diff only reads it.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, ptr as *mut u32, len, 0) };
    if sum < 0 {
        return Err(Reason::HelperFailed);
    }
    let mut folded = sum as u64;
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    Ok(!(folded as u16))
}

/// Rewrites a UDP datagram into an ICMP port unreachable for its sender
/// (from the service address it was sent to, quoting its IP header and UDP
/// header) and redirects it out of the ingress interface. A connected UDP
/// socket then fails with ECONNREFUSED, as with kube-proxy's REJECT.
/// Returns the tc action to use.
#[inline(always)]
pub fn icmp_port_unreachable(ctx: &TcContext, pkt: &Packet) -> Result<i32, Reason> {
    if pkt.l4_off != ETH_HLEN + IP_HLEN || pkt.saddr_be == 0 {
        // IP options (not worth reshaping) or no one to answer: the caller
        // drops instead.
        return Err(Reason::HelperFailed);
    }
    let quote: [u8; QUOTE_LEN] = ctx.load(ETH_HLEN).map_err(|_| Reason::Truncated)?;

    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: the context is a valid __sk_buff for the program's duration.
    let (ifindex, ret) = unsafe {
        (
            (*skb).ifindex,
            bpf_skb_change_tail(skb, (ETH_HLEN + ICMP_LEN) as u32, 0),
        )
    };
    if ret != 0 {
        return Err(Reason::HelperFailed);
    }

    let macs: [u8; 12] = ctx.load(0).map_err(|_| Reason::Truncated)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
        .map_err(|_| Reason::HelperFailed)?;

    let mut reply = IcmpReply([0; ICMP_LEN]);
    let b = &mut reply.0;
    // IPv4: version 4, 20 bytes; the original TOS; no fragmentation.
    b[0] = 0x45;
    b[1] = quote[1];
    b[2..4].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    b[6] = 0x40;
    b[8] = 64;
    b[9] = PROTO_ICMP;
    b[12..16].copy_from_slice(&pkt.daddr_be.to_ne_bytes());
    b[16..20].copy_from_slice(&pkt.saddr_be.to_ne_bytes());
    // ICMP destination unreachable / port unreachable, then the quote.
    b[IP_HLEN] = ICMP_DEST_UNREACH;
    b[IP_HLEN + 1] = ICMP_PORT_UNREACH;
    b[IP_HLEN + ICMP_HLEN..].copy_from_slice(&quote);

    let ip_csum = checksum(b.as_mut_ptr(), IP_HLEN as u32)?;
    b[10..12].copy_from_slice(&ip_csum.to_ne_bytes());
    // SAFETY: IP_HLEN is a multiple of 4, so the ICMP part stays aligned.
    let icmp_csum = checksum(
        unsafe { b.as_mut_ptr().add(IP_HLEN) },
        (ICMP_HLEN + QUOTE_LEN) as u32,
    )?;
    b[IP_HLEN + 2..IP_HLEN + 4].copy_from_slice(&icmp_csum.to_ne_bytes());
    ctx.store(ETH_HLEN, &reply.0, 0)
        .map_err(|_| Reason::HelperFailed)?;

    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(ifindex, 0) };
    if action != i64::from(TC_ACT_REDIRECT) {
        return Err(Reason::HelperFailed);
    }
    Ok(TC_ACT_REDIRECT)
}
