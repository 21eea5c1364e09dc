//! Connection tracking and NAT of one packet.
//!
//! A new flow to a service gets two conntrack entries: ORIGINAL keyed by the
//! client's tuple (so later packets keep their backend) and REPLY keyed by
//! the backend's reply tuple (so replies are reverse-NAT'd to the service
//! address). Source NAT to the node address is applied for NodePort traffic
//! to a backend on another node unless `externalTrafficPolicy: Local`, with
//! a source port of its own from the node's SNAT range (two clients using
//! the same source port towards one backend would otherwise share a reply
//! tuple).

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use aya_ebpf::programs::TcContext;
use skiff_ebpf_common::{
    Backend4, CT_CLOSED_REUSE_NS, CT_TCP_REUSE_NS, CT_UDP_REUSE_NS, CtEntry4, CtKey4, PROTO_TCP,
    Reason, SNAT_PORT_MAX_DEFAULT, SNAT_PORT_MIN_DEFAULT, backend_flags, ct_dir, ct_flags,
    svc_flags,
};

use crate::maps::{BACKENDS, CONFIG, CONNTRACK, REVNAT};
use crate::packet::{self, Packet, Side};
use crate::{lb, route};

pub enum Verdict {
    /// Not a service packet: left alone.
    Pass,
    /// Neither TCP nor UDP (the caller looks for ICMP errors, `icmp`).
    Other,
    /// DNAT'd (new or tracked flow).
    Translated,
    /// A reply, reverse-NAT'd.
    ReverseTranslated,
    /// Addressed to a service without usable backends: to be refused.
    Refused(Packet),
    /// Translated with the source rewritten to a node address, and handed
    /// to the egress device ourselves (`TC_ACT_REDIRECT`).
    Forwarded,
}

#[inline(always)]
pub fn handle(ctx: &TcContext) -> Result<Verdict, Reason> {
    let Some(mut pkt) = packet::parse(ctx)? else {
        return Ok(Verdict::Other);
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    let reply_key = CtKey4::new(
        pkt.saddr_be,
        pkt.daddr_be,
        pkt.sport_be,
        pkt.dport_be,
        pkt.proto,
        ct_dir::REPLY,
    );
    if let Some(entry) = CONNTRACK.get_ptr_mut(&reply_key) {
        // SAFETY: live LRU element; racing updates of last_seen are benign.
        let entry = unsafe { &mut *entry };
        entry.last_seen_ns = now;
        if pkt.tcp_flags & packet::TCP_FIN_OR_RST != 0 {
            entry.flags |= ct_flags::CLOSING;
        }
        let entry = *entry;
        return reverse_nat(ctx, &mut pkt, &entry);
    }

    let orig_key = CtKey4::new(
        pkt.saddr_be,
        pkt.daddr_be,
        pkt.sport_be,
        pkt.dport_be,
        pkt.proto,
        ct_dir::ORIGINAL,
    );
    // SAFETY: value copied out at once.
    if let Some(entry) = unsafe { CONNTRACK.get(&orig_key) }.copied() {
        // SAFETY: as above.
        if let Some(backend) = unsafe { BACKENDS.get(&entry.backend_id) }.copied() {
            let snat = entry.flags & ct_flags::SNAT != 0;
            // Entries written before ports were allocated kept the
            // client's port.
            let port = if entry.snat_port_be != 0 {
                entry.snat_port_be
            } else {
                pkt.sport_be
            };
            dnat(ctx, &mut pkt, &backend, snat, port)?;
            if pkt.tcp_flags & packet::TCP_FIN_OR_RST != 0 {
                mark_closing(&pkt, now);
            }
            return Ok(forwarded_if(ctx, &pkt, snat, Verdict::Translated));
        }
        // The backend was deleted: the flow is dead; pick anew below.
        let _ = CONNTRACK.remove(&orig_key);
    }

    let Some((key, svc)) = lb::lookup_service(&pkt) else {
        return Ok(Verdict::Pass);
    };
    let choice = match lb::select(key, svc, lb::Client::Addr(pkt.saddr_be)) {
        Ok(c) => c,
        Err(Reason::NoBackend) => return Ok(Verdict::Refused(pkt)),
        Err(e) => return Err(e),
    };
    let snat = choice.service.flags & svc_flags::NODEPORT != 0
        && choice.service.flags & svc_flags::EXT_LOCAL == 0
        && choice.backend.flags & backend_flags::LOCAL == 0;

    let client_addr = pkt.saddr_be;
    let client_port = pkt.sport_be;
    let mut flags = 0;
    if snat {
        flags |= ct_flags::SNAT;
    }
    let mut entry = CtEntry4::new(
        choice.backend_id,
        client_addr,
        client_port,
        choice.service.rev_nat_id,
        flags,
        now,
    );
    let mut port = client_port;
    if snat {
        // The REPLY entry is claimed with the port: two clients using the
        // same source port towards one backend must not share a tuple.
        port = claim_snat_port(&pkt, &choice.backend, &mut entry)?;
    }
    CONNTRACK
        .insert(&orig_key, &entry, 0)
        .map_err(|_| Reason::ConntrackFull)?;

    dnat(ctx, &mut pkt, &choice.backend, snat, port)?;

    if !snat {
        // After DNAT `pkt` holds the tuple as it leaves; the reply comes
        // back with it mirrored.
        let reply_key = CtKey4::new(
            pkt.daddr_be,
            pkt.saddr_be,
            pkt.dport_be,
            pkt.sport_be,
            pkt.proto,
            ct_dir::REPLY,
        );
        CONNTRACK
            .insert(&reply_key, &entry, 0)
            .map_err(|_| Reason::ConntrackFull)?;
    }
    Ok(forwarded_if(ctx, &pkt, snat, Verdict::Translated))
}

/// Marks the REPLY entry of the flow `pkt` (already translated, so its
/// tuple is the one the backend answers) as ending.
#[inline(always)]
fn mark_closing(pkt: &Packet, now: u64) {
    let reply_key = CtKey4::new(
        pkt.daddr_be,
        pkt.saddr_be,
        pkt.dport_be,
        pkt.sport_be,
        pkt.proto,
        ct_dir::REPLY,
    );
    if let Some(entry) = CONNTRACK.get_ptr_mut(&reply_key) {
        // SAFETY: live LRU element; racing updates are benign.
        let entry = unsafe { &mut *entry };
        entry.flags |= ct_flags::CLOSING;
        entry.last_seen_ns = now;
    }
}

/// Whether the flow holding a REPLY entry is over as far as its SNAT port
/// goes: closed (FIN/RST) a while ago, or silent for longer than its
/// protocol's idle timeout. Entries live in an LRU map and are otherwise
/// only evicted when it is full, so without this a range of ports would
/// run out after as many flows.
#[inline(always)]
fn reusable(held: &CtEntry4, proto: u8, now: u64) -> bool {
    let idle = now.saturating_sub(held.last_seen_ns);
    if held.flags & ct_flags::CLOSING != 0 {
        return idle > CT_CLOSED_REUSE_NS;
    }
    if proto == PROTO_TCP {
        idle > CT_TCP_REUSE_NS
    } else {
        idle > CT_UDP_REUSE_NS
    }
}

/// Tries this many ports of the SNAT range before giving up on a flow.
const SNAT_PORT_TRIES: u32 = 16;

/// Picks a free node-side source port for a SNAT'd flow and inserts its
/// REPLY entry, atomically (`BPF_NOEXIST`): the port is free when no REPLY
/// entry names (backend, node address, backend port, port). The search
/// starts at a random point of the range and probes a bounded number of
/// ports, as Cilium's SNAT does. Returns the port (network order) and
/// records it in `entry`; when every probed port is taken the flow is not
/// translated and counted as `conntrack_full` (a new counter would change
/// the pinned counter map's size, which a restarted agent must adopt).
#[inline(always)]
fn claim_snat_port(pkt: &Packet, backend: &Backend4, entry: &mut CtEntry4) -> Result<u16, Reason> {
    let cfg = CONFIG.get(0).copied().ok_or(Reason::DanglingId)?;
    if cfg.node_addr_be == 0 {
        return Err(Reason::DanglingId);
    }
    let (min, max) = if cfg.snat_port_min == 0 || cfg.snat_port_max < cfg.snat_port_min {
        (SNAT_PORT_MIN_DEFAULT, SNAT_PORT_MAX_DEFAULT)
    } else {
        (cfg.snat_port_min, cfg.snat_port_max)
    };
    let span = u32::from(max - min) + 1;
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    for i in 0..SNAT_PORT_TRIES {
        let port_be = (min + ((start + i) % span) as u16).to_be();
        entry.snat_port_be = port_be;
        let reply_key = CtKey4::new(
            backend.addr_be,
            cfg.node_addr_be,
            backend.port_be,
            port_be,
            pkt.proto,
            ct_dir::REPLY,
        );
        if CONNTRACK
            .insert(reply_key, *entry, BPF_NOEXIST as u64)
            .is_ok()
        {
            return Ok(port_be);
        }
        // Taken: by a live flow, or by one that is over.
        // SAFETY: value copied out at once.
        let stale = unsafe { CONNTRACK.get(&reply_key) }
            .copied()
            .is_some_and(|held| reusable(&held, pkt.proto, entry.last_seen_ns));
        if stale && CONNTRACK.insert(reply_key, *entry, BPF_ANY as u64).is_ok() {
            return Ok(port_be);
        }
    }
    Err(Reason::ConntrackFull)
}

/// With source NAT to a node address the packet is routed by us (see
/// `route`); without a route it goes to the stack as `otherwise` says.
#[inline(always)]
fn forwarded_if(ctx: &TcContext, pkt: &Packet, snat: bool, otherwise: Verdict) -> Verdict {
    if snat {
        if route::redirect(ctx, pkt) {
            return Verdict::Forwarded;
        }
    }
    otherwise
}

/// Rewrites the destination to the backend and, with `snat`, the source to
/// the node address and `snat_port_be`.
#[inline(always)]
fn dnat(
    ctx: &TcContext,
    pkt: &mut Packet,
    backend: &Backend4,
    snat: bool,
    snat_port_be: u16,
) -> Result<(), Reason> {
    packet::set_addr(ctx, pkt, Side::Destination, backend.addr_be)?;
    packet::set_port(ctx, pkt, Side::Destination, backend.port_be)?;
    if snat {
        let cfg = CONFIG.get(0).copied().ok_or(Reason::DanglingId)?;
        if cfg.node_addr_be == 0 {
            return Err(Reason::DanglingId);
        }
        packet::set_addr(ctx, pkt, Side::Source, cfg.node_addr_be)?;
        packet::set_port(ctx, pkt, Side::Source, snat_port_be)?;
    }
    Ok(())
}

#[inline(always)]
fn reverse_nat(ctx: &TcContext, pkt: &mut Packet, entry: &CtEntry4) -> Result<Verdict, Reason> {
    // SAFETY: value copied out at once.
    let rev = unsafe { REVNAT.get(&(entry.rev_nat_id as u32)) }
        .copied()
        .ok_or(Reason::DanglingId)?;
    packet::set_addr(ctx, pkt, Side::Source, rev.vip_be)?;
    packet::set_port(ctx, pkt, Side::Source, rev.port_be)?;
    let snat = entry.flags & ct_flags::SNAT != 0;
    if snat {
        packet::set_addr(ctx, pkt, Side::Destination, entry.client_addr_be)?;
        packet::set_port(ctx, pkt, Side::Destination, entry.client_port_be)?;
    }
    Ok(forwarded_if(ctx, pkt, snat, Verdict::ReverseTranslated))
}
