//! ICMP errors about tracked flows, translated for whoever sent the packet
//! the error is about; the quoted header is what finds the socket (or the
//! route cache entry) there, so it must read as that side sent it.
//!
//! - Towards the client: a backend (or a router between the node and a
//!   remote backend) that cannot take a DNAT'd packet quotes it as it left
//!   (backend as destination, the node address as source after SNAT). The
//!   client must see its own packet (service address and port, its own
//!   address), or it gets no "connection refused" and no path-MTU update.
//! - Towards the backend: a router on the client's side that cannot take a
//!   reply (typically "fragmentation needed" for a large one) quotes it as
//!   reverse-NAT'd (from the service address). The backend must see the
//!   reply it sent, or path-MTU discovery black-holes the flow.
//!
//! As netfilter does for RELATED errors: the quoted header is rewritten to
//! the sender's tuple (its IP checksum, its L4 checksum if quoted, and the
//! ICMP checksum follow), and the outer header as the flow's packets in
//! that direction are: towards the client from the service address (and to
//! the client after SNAT), towards the backend to the backend (and from the
//! node address after SNAT).

use aya_ebpf::programs::TcContext;
use skiff_ebpf_common::{CtEntry4, CtKey4, PROTO_UDP, Reason, ct_dir, ct_flags};

use crate::maps::{BACKENDS, CONFIG, CONNTRACK, REVNAT};
use crate::packet::{
    self, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IcmpError, PROTO_ICMP, Packet, csum_update16,
    csum_update32,
};
use crate::route;

const ETH_HLEN: usize = 14;

/// What became of a packet that was neither TCP nor UDP. Fieldless on
/// purpose: merged with `nat::Verdict`'s payload-carrying variants, the
/// compiler left registers undefined on some paths, which the verifier
/// rejects.
pub enum IcmpVerdict {
    /// Not an ICMP error about a tracked flow: left alone.
    Pass,
    /// Translated back; the stack delivers it.
    Translated,
    /// Translated back and handed to the egress device (`TC_ACT_REDIRECT`).
    Forwarded,
}

/// Translates an ICMP error about a tracked flow; anything else passes.
#[inline(always)]
pub fn handle(ctx: &TcContext) -> Result<IcmpVerdict, Reason> {
    let Some(err) = packet::parse_icmp_error(ctx)? else {
        return Ok(IcmpVerdict::Pass);
    };
    // Reversed, the quoted tuple is how the flow tracks packets coming the
    // other way: REPLY if the quoted packet went to a backend, ORIGINAL if
    // it was a reply going to a client.
    let mut key = CtKey4::new(
        err.inner_daddr_be,
        err.inner_saddr_be,
        err.inner_dport_be,
        err.inner_sport_be,
        err.inner_proto,
        ct_dir::REPLY,
    );
    // SAFETY: value copied out at once.
    if let Some(entry) = (unsafe { CONNTRACK.get(key) }).copied() {
        return towards_client(ctx, &err, &entry);
    }
    key.dir = ct_dir::ORIGINAL;
    // SAFETY: as above.
    if let Some(entry) = (unsafe { CONNTRACK.get(key) }).copied() {
        return towards_backend(ctx, &err, &entry);
    }
    Ok(IcmpVerdict::Pass)
}

/// An error about a packet sent to a backend, for the client.
#[inline(always)]
fn towards_client(
    ctx: &TcContext,
    err: &IcmpError,
    entry: &CtEntry4,
) -> Result<IcmpVerdict, Reason> {
    // SAFETY: value copied out at once.
    let rev = unsafe { REVNAT.get(entry.rev_nat_id as u32) }
        .copied()
        .ok_or(Reason::DanglingId)?;
    let snat = entry.flags & ct_flags::SNAT != 0;
    let (inner_saddr, inner_sport) = if snat {
        (entry.client_addr_be, entry.client_port_be)
    } else {
        (err.inner_saddr_be, err.inner_sport_be)
    };
    rewrite_inner(ctx, err, inner_saddr, inner_sport, rev.vip_be, rev.port_be)?;
    let daddr = if snat {
        entry.client_addr_be
    } else {
        err.daddr_be
    };
    rewrite_outer(ctx, err, rev.vip_be, daddr, snat)
}

/// An error about a reply sent to a client, for the backend.
#[inline(always)]
fn towards_backend(
    ctx: &TcContext,
    err: &IcmpError,
    entry: &CtEntry4,
) -> Result<IcmpVerdict, Reason> {
    // SAFETY: value copied out at once.
    let Some(backend) = (unsafe { BACKENDS.get(entry.backend_id) }).copied() else {
        // The backend is gone; so is whoever could use the error.
        return Ok(IcmpVerdict::Pass);
    };
    let snat = entry.flags & ct_flags::SNAT != 0;
    let (inner_daddr, inner_dport, saddr) = if snat {
        let cfg = CONFIG.get(0).copied().ok_or(Reason::DanglingId)?;
        // Entries of programs that kept the client's port have no SNAT port.
        let port = if entry.snat_port_be != 0 {
            entry.snat_port_be
        } else {
            entry.client_port_be
        };
        (cfg.node_addr_be, port, cfg.node_addr_be)
    } else {
        (err.inner_daddr_be, err.inner_dport_be, err.saddr_be)
    };
    rewrite_inner(
        ctx,
        err,
        backend.addr_be,
        backend.port_be,
        inner_daddr,
        inner_dport,
    )?;
    rewrite_outer(ctx, err, saddr, backend.addr_be, snat)
}

/// Rewrites the outer addresses (fixing the IP checksum; ICMP has no
/// pseudo-header) and, after SNAT, routes the packet ourselves, as with
/// the flow's own packets (see `route`).
#[inline(always)]
fn rewrite_outer(
    ctx: &TcContext,
    err: &IcmpError,
    saddr: u32,
    daddr: u32,
    snat: bool,
) -> Result<IcmpVerdict, Reason> {
    let old_csum: u16 = ctx.load(IP_CSUM_OFF).map_err(|_| Reason::Truncated)?;
    let csum = csum_update32(
        csum_update32(old_csum, err.saddr_be, saddr),
        err.daddr_be,
        daddr,
    );
    store(ctx, IP_SADDR_OFF, &saddr)?;
    store(ctx, IP_DADDR_OFF, &daddr)?;
    store(ctx, IP_CSUM_OFF, &csum)?;
    let pkt = Packet {
        l4_off: err.icmp_off,
        proto: PROTO_ICMP,
        saddr_be: saddr,
        daddr_be: daddr,
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
    };
    if snat && route::redirect(ctx, &pkt) {
        return Ok(IcmpVerdict::Forwarded);
    }
    Ok(IcmpVerdict::Translated)
}

#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), Reason> {
    ctx.store(off, v, 0).map_err(|_| Reason::HelperFailed)
}

/// Rewrites the quoted header's source and destination, keeping its IP
/// checksum, its L4 checksum (when quoted) and the ICMP checksum right.
#[inline(always)]
fn rewrite_inner(
    ctx: &TcContext,
    err: &IcmpError,
    saddr: u32,
    sport: u16,
    daddr: u32,
    dport: u16,
) -> Result<(), Reason> {
    let ip = err.inner_ip_off;
    let l4 = err.inner_l4_off;
    let icmp_csum_off = err.icmp_off + 2;
    let mut icmp_csum: u16 = ctx.load(icmp_csum_off).map_err(|_| Reason::Truncated)?;

    let old_ip_csum: u16 = ctx.load(ip + 10).map_err(|_| Reason::Truncated)?;
    let ip_csum = csum_update32(
        csum_update32(old_ip_csum, err.inner_saddr_be, saddr),
        err.inner_daddr_be,
        daddr,
    );

    // The L4 checksum sits past the 8 bytes every error quotes for TCP;
    // routers usually quote more. A zero UDP checksum means "none".
    let l4_csum_off = if err.inner_proto == PROTO_UDP {
        l4 + 6
    } else {
        l4 + 16
    };
    let tot_len_be: u16 = ctx.load(ETH_HLEN + 2).map_err(|_| Reason::Truncated)?;
    let quoted = l4_csum_off + 2 <= ETH_HLEN + usize::from(u16::from_be(tot_len_be));
    if let (true, Ok(old_l4)) = (quoted, ctx.load::<u16>(l4_csum_off))
        && !(err.inner_proto == PROTO_UDP && old_l4 == 0)
    {
        let mut l4_csum = csum_update32(old_l4, err.inner_saddr_be, saddr);
        l4_csum = csum_update32(l4_csum, err.inner_daddr_be, daddr);
        l4_csum = csum_update16(l4_csum, err.inner_sport_be, sport);
        l4_csum = csum_update16(l4_csum, err.inner_dport_be, dport);
        if err.inner_proto == PROTO_UDP && l4_csum == 0 {
            l4_csum = 0xffff;
        }
        icmp_csum = csum_update16(icmp_csum, old_l4, l4_csum);
        store(ctx, l4_csum_off, &l4_csum)?;
    }

    icmp_csum = csum_update32(icmp_csum, err.inner_saddr_be, saddr);
    icmp_csum = csum_update32(icmp_csum, err.inner_daddr_be, daddr);
    icmp_csum = csum_update16(icmp_csum, old_ip_csum, ip_csum);
    icmp_csum = csum_update16(icmp_csum, err.inner_sport_be, sport);
    icmp_csum = csum_update16(icmp_csum, err.inner_dport_be, dport);

    store(ctx, ip + 12, &saddr)?;
    store(ctx, ip + 16, &daddr)?;
    store(ctx, ip + 10, &ip_csum)?;
    store(ctx, l4, &sport)?;
    store(ctx, l4 + 2, &dport)?;
    store(ctx, icmp_csum_off, &icmp_csum)?;
    Ok(())
}
