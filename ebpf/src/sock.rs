//! Socket-level load balancing (cgroup sock_addr hooks): a connect() or
//! sendmsg() to ClusterIP:port is rewritten to a backend before any packet
//! exists, so there is no per-packet NAT and no conntrack for these flows.
//! getpeername() and recvmsg() translate back so applications keep seeing
//! the service address.

use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval};
use aya_ebpf::programs::SockAddrContext;
use skiff_ebpf_common::{
    PROTO_TCP, PROTO_UDP, Reason, RevNat4, SCOPE_EXTERNAL, SockRevKey, Svc4Key,
};

use crate::lb;
use crate::maps::SOCK_REVNAT;

/// What the hook decided.
pub enum SockVerdict {
    /// Not a service address: untouched.
    Pass,
    /// Rewritten to a backend (connect/sendmsg) or back to the service
    /// (getpeername/recvmsg).
    Translated,
}

const ECONNREFUSED: i32 = 111;

fn proto(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: the context pointer is valid for the program's duration.
    let p = unsafe { (*ctx.sock_addr).protocol } as u8;
    (p == PROTO_TCP || p == PROTO_UDP).then_some(p)
}

/// connect4 / sendmsg4: service address → backend.
#[inline(always)]
pub fn forward(ctx: &SockAddrContext) -> Result<SockVerdict, Reason> {
    let Some(proto) = proto(ctx) else {
        return Ok(SockVerdict::Pass);
    };
    // SAFETY: as above.
    let (ip_be, port_be) =
        unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port as u16) };
    let key = Svc4Key::new(ip_be, port_be, proto, SCOPE_EXTERNAL, 0);
    let Some(svc) = lb::lookup_key(&key) else {
        return Ok(SockVerdict::Pass);
    };
    // SAFETY: valid context; the helper only reads it.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) };
    let choice = match lb::select(key, svc, lb::Client::Netns(netns)) {
        Ok(c) => c,
        Err(Reason::NoBackend) => {
            // Make connect()/sendmsg() fail with ECONNREFUSED rather than
            // the EPERM a plain reject gives.
            // SAFETY: helper without preconditions in sock_addr programs.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            return Err(Reason::NoBackend);
        }
        Err(e) => return Err(e),
    };
    // SAFETY: valid context; the helper only reads the socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let rev = RevNat4::new(ip_be, port_be);
    SOCK_REVNAT
        .insert(
            &SockRevKey::new(cookie, choice.backend.addr_be, choice.backend.port_be),
            &rev,
            0,
        )
        .map_err(|_| Reason::ConntrackFull)?;
    // SAFETY: writable fields of the sock_addr context for these hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = choice.backend.addr_be;
        (*ctx.sock_addr).user_port = u32::from(choice.backend.port_be);
    }
    Ok(SockVerdict::Translated)
}

/// getpeername4 / recvmsg4: backend address → the service it stands for.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext) -> Result<SockVerdict, Reason> {
    // SAFETY: valid context; the helper only reads the socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    // SAFETY: as above.
    let (ip_be, port_be) =
        unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port as u16) };
    // SAFETY: value copied out at once.
    let Some(rev) = (unsafe { SOCK_REVNAT.get(&SockRevKey::new(cookie, ip_be, port_be)) }).copied()
    else {
        return Ok(SockVerdict::Pass);
    };
    // SAFETY: writable fields of the sock_addr context for these hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = rev.vip_be;
        (*ctx.sock_addr).user_port = u32::from(rev.port_be);
    }
    Ok(SockVerdict::Translated)
}
