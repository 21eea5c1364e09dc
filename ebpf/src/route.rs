//! Forwarding a rewritten packet ourselves. After source NAT to one of this
//! node's addresses (NodePort to a remote backend, and its replies), the
//! packet must not re-enter the stack on the interface it arrived on: the
//! kernel drops packets "from" a local address as martians. Instead we look
//! the route up (`bpf_fib_lookup`) and hand the packet to the egress device
//! with neighbour resolution (`bpf_redirect_neigh`), as Cilium does.

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{__sk_buff, TC_ACT_REDIRECT, bpf_fib_lookup as FibParams};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_redirect_neigh};
use aya_ebpf::programs::TcContext;

use crate::packet::Packet;

const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

/// Routes the packet to its next hop; `true` when the caller must return
/// `TC_ACT_REDIRECT`, `false` when there is no route (the stack then gets
/// the packet as it is).
#[inline(always)]
pub fn redirect(ctx: &TcContext, pkt: &Packet) -> bool {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: zero is a valid bit pattern for this plain C struct.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = pkt.proto;
    params.sport = pkt.sport_be;
    params.dport = pkt.dport_be;
    // SAFETY: the context is a valid __sk_buff for the program's duration.
    params.ifindex = unsafe { (*skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = pkt.saddr_be;
    params.__bindgen_anon_4.ipv4_dst = pkt.daddr_be;
    // SAFETY: params is a stack struct of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            skb as *mut _,
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH {
        return false;
    }
    // SAFETY: plain helper call; NULL params = resolve the neighbour of the
    // packet's destination (or the route's gateway) on that device.
    let action = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
    action == i64::from(TC_ACT_REDIRECT)
}
