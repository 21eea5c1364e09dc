//! Skiff's kernel programs. Built for `bpfel-unknown-none` by proxy/build.rs
//! (aya-build, nightly, `-Z build-std=core`); on the host this crate compiles
//! to an empty binary so workspace-wide `cargo check` works.
//!
//! Layout: `maps` (the shared maps), `packet` (bounds-checked header access
//! and checksum-correct rewrites), `lb` (service lookup, round-robin backend
//! choice), `nat` (conntrack and DNAT/reverse-NAT of one packet), `counters`
//! (per-CPU reason counters), `reject` (refusals: TCP RST, ICMP port
//! unreachable), `icmp` (ICMP errors about tracked flows, translated back),
//! `route` (forwarding after SNAT), `sock` (socket-level LB). Entry points
//! below are thin: they map a `Result` to a tc verdict and count why.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: the only fetch-and-add the BPF target offers (see lb.rs).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(internal_features, reason = "atomic_xadd for round-robin")
)]

#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod reject;
#[cfg(target_arch = "bpf")]
mod route;
#[cfg(target_arch = "bpf")]
mod sock;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
    use aya_ebpf::macros::{cgroup_sock_addr, classifier};
    use aya_ebpf::programs::{SockAddrContext, TcContext};
    use skiff_ebpf_common::{PROTO_TCP, Reason};

    use crate::counters::count;
    use crate::icmp::IcmpVerdict;
    use crate::nat::{self, Verdict};
    use crate::sock::{self, SockVerdict};

    /// sock_addr verdicts: 1 lets the call proceed, 0 rejects it.
    const SOCK_ALLOW: i32 = 1;
    const SOCK_REJECT: i32 = 0;

    fn sock_forward(ctx: &SockAddrContext) -> i32 {
        match sock::forward(ctx) {
            Ok(SockVerdict::Pass) => SOCK_ALLOW,
            Ok(SockVerdict::Translated) => {
                count(Reason::SockTranslated);
                SOCK_ALLOW
            }
            Err(Reason::NoBackend) => {
                count(Reason::SockRefused);
                SOCK_REJECT
            }
            Err(reason) => {
                // Could not translate (e.g. a dangling id mid-update): let
                // the packet path (tc) have a go rather than failing the call.
                count(reason);
                SOCK_ALLOW
            }
        }
    }

    fn sock_reverse(ctx: &SockAddrContext) -> i32 {
        if let Err(reason) = sock::reverse(ctx) {
            count(reason);
        }
        // getpeername/recvmsg hooks must always allow.
        SOCK_ALLOW
    }

    /// connect() on TCP and connected UDP sockets.
    #[cgroup_sock_addr(connect4)]
    pub fn skiff_connect4(ctx: SockAddrContext) -> i32 {
        sock_forward(&ctx)
    }

    /// sendto()/sendmsg() on unconnected UDP sockets.
    #[cgroup_sock_addr(sendmsg4)]
    pub fn skiff_sendmsg4(ctx: SockAddrContext) -> i32 {
        sock_forward(&ctx)
    }

    /// recvfrom()/recvmsg() on UDP: replies appear to come from the service.
    #[cgroup_sock_addr(recvmsg4)]
    pub fn skiff_recvmsg4(ctx: SockAddrContext) -> i32 {
        sock_reverse(&ctx)
    }

    /// getpeername(): connected sockets show the service address.
    #[cgroup_sock_addr(getpeername4)]
    pub fn skiff_getpeername4(ctx: SockAddrContext) -> i32 {
        sock_reverse(&ctx)
    }

    /// tc hook on node interfaces (ingress and egress): DNAT of packets
    /// addressed to a service (NodePort on the node's addresses, or a
    /// ClusterIP that socket-LB did not translate), reverse NAT of replies.
    #[classifier]
    pub fn skiff_tc(ctx: TcContext) -> i32 {
        match nat::handle(&ctx) {
            Ok(Verdict::Pass) => TC_ACT_OK as i32,
            Ok(Verdict::Other) => icmp_error(&ctx),
            Ok(Verdict::Translated) => {
                count(Reason::Translated);
                TC_ACT_OK as i32
            }
            Ok(Verdict::ReverseTranslated) => {
                count(Reason::ReverseTranslated);
                TC_ACT_OK as i32
            }
            Ok(Verdict::Forwarded) => {
                count(Reason::Translated);
                aya_ebpf::bindings::TC_ACT_REDIRECT as i32
            }
            Ok(Verdict::Refused(pkt)) => {
                count(Reason::NoBackend);
                // TCP gets a RST back, UDP an ICMP port unreachable; a reply
                // we could not build means a drop.
                let reply = if pkt.proto == PROTO_TCP {
                    crate::reject::tcp_reset(&ctx, &pkt)
                } else {
                    crate::reject::icmp_port_unreachable(&ctx, &pkt)
                };
                reply.unwrap_or(TC_ACT_SHOT as i32)
            }
            Err(reason) => {
                // A packet we could not parse or rewrite is left to the
                // stack rather than silently dropped; the counter says why.
                count(reason);
                TC_ACT_OK as i32
            }
        }
    }

    /// ICMP errors about translated flows, translated back.
    fn icmp_error(ctx: &TcContext) -> i32 {
        match crate::icmp::handle(ctx) {
            Ok(IcmpVerdict::Pass) => TC_ACT_OK as i32,
            Ok(IcmpVerdict::Translated) => {
                count(Reason::ReverseTranslated);
                TC_ACT_OK as i32
            }
            Ok(IcmpVerdict::Forwarded) => {
                count(Reason::ReverseTranslated);
                aya_ebpf::bindings::TC_ACT_REDIRECT as i32
            }
            Err(reason) => {
                count(reason);
                TC_ACT_OK as i32
            }
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects programs that can reach this; it exists only
        // to satisfy no_std.
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
