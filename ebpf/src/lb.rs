//! Service lookup and round-robin backend choice.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use skiff_ebpf_common::{
    AffinityKey, AffinityValue, Backend4, Reason, SCOPE_EXTERNAL, Svc4Key, Svc4Value, svc_flags,
};

use crate::maps::{AFFINITY, BACKENDS, RR, SERVICES};
use crate::packet::Packet;

/// A chosen backend and the service entry it was chosen for.
pub struct Choice {
    pub backend_id: u32,
    pub backend: Backend4,
    pub service: Svc4Value,
}

/// The service entry (slot 0) for the packet's destination, if any.
#[inline(always)]
pub fn lookup_service(pkt: &Packet) -> Option<(Svc4Key, Svc4Value)> {
    let key = Svc4Key::new(pkt.daddr_be, pkt.dport_be, pkt.proto, SCOPE_EXTERNAL, 0);
    Some((key, lookup_key(&key)?))
}

/// The service entry for a slot-0 key.
#[inline(always)]
pub fn lookup_key(key: &Svc4Key) -> Option<Svc4Value> {
    // SAFETY: values are plain data copied out at once; userspace replaces
    // whole values (the kernel copies them under the bucket lock).
    unsafe { SERVICES.get(key) }.copied()
}

/// Who is asking, for `sessionAffinity: ClientIP`.
#[derive(Clone, Copy)]
pub enum Client {
    /// Packet path: the source address.
    Addr(u32),
    /// Socket path: the network-namespace cookie (one per pod).
    Netns(u64),
}

/// Picks a backend: the client's affine one while it is fresh (services
/// with `sessionAffinity: ClientIP`), otherwise the next round-robin turn.
#[inline(always)]
pub fn select(key: Svc4Key, svc: Svc4Value, client: Client) -> Result<Choice, Reason> {
    if svc.count == 0 {
        return Err(Reason::NoBackend);
    }
    if svc.flags & svc_flags::AFFINITY == 0 {
        return round_robin(key, svc);
    }
    let akey = match client {
        Client::Addr(a) => AffinityKey::new(u64::from(a), svc.rev_nat_id, 0),
        Client::Netns(c) => AffinityKey::new(c, svc.rev_nat_id, 1),
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // Slot 0's backend_id field holds the affinity timeout in seconds.
    let timeout_ns = u64::from(svc.backend_id) * 1_000_000_000;
    // SAFETY: value copied out at once.
    if let Some(prev) = unsafe { AFFINITY.get(&akey) }.copied() {
        if now.wrapping_sub(prev.last_used_ns) < timeout_ns {
            // SAFETY: value copied out at once.
            if let Some(backend) = unsafe { BACKENDS.get(&prev.backend_id) }.copied() {
                let _ = AFFINITY.insert(&akey, &AffinityValue::new(prev.backend_id, now), 0);
                return Ok(Choice {
                    backend_id: prev.backend_id,
                    backend,
                    service: svc,
                });
            }
        }
    }
    let choice = round_robin(key, svc)?;
    let _ = AFFINITY.insert(&akey, &AffinityValue::new(choice.backend_id, now), 0);
    Ok(choice)
}

/// The next backend round-robin. The per-service cursor is advanced with
/// one atomic fetch-add, so concurrent CPUs never pick the same turn.
#[inline(always)]
fn round_robin(key: Svc4Key, svc: Svc4Value) -> Result<Choice, Reason> {
    let cursor = RR
        .get_ptr_mut(svc.rev_nat_id as u32)
        .ok_or(Reason::DanglingId)?;
    // The BPF target has no `AtomicU32` (no compare-and-swap), but it has
    // fetch-and-add (BPF_ATOMIC | BPF_FETCH). The ordering must be SeqCst:
    // LLVM's BPF backend lowers a *relaxed* add to the legacy XADD, which
    // returns nothing, and the "turn" read back would be a constant (seen
    // with LLVM 22: every flow went to the same slot).
    // SAFETY: the pointer is to a live array element (arrays never free
    // elements) and is only accessed atomically.
    let turn: u32 = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(cursor, 1) };
    let slot = (turn % svc.count as u32) as u16 + 1;
    // SAFETY: see lookup_service.
    let slot_val = unsafe { SERVICES.get(&key.with_slot(slot)) }
        .copied()
        .ok_or(Reason::DanglingId)?;
    // SAFETY: see lookup_service.
    let backend = unsafe { BACKENDS.get(&slot_val.backend_id) }
        .copied()
        .ok_or(Reason::DanglingId)?;
    Ok(Choice {
        backend_id: slot_val.backend_id,
        backend,
        service: svc,
    })
}
