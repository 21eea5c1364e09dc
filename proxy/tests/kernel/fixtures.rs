//! Shared fixtures: addresses, and installing services with the maps' own
//! ordered-write protocol.

use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_ebpf_common::{Backend4, Reason, RevNat4, SCOPE_EXTERNAL, Svc4Key, backend_flags};
use skiff_proxy::ebpf::{BackendSpec, ServiceSpec};

use crate::harness::KernelEnv;

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_REDIRECT: i32 = 7;

pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40000);
pub const NODEPORT: u16 = 30080;

pub fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub struct Backend {
    pub id: u32,
    pub addr: SocketAddrV4,
    pub local: bool,
}

/// Installs a frontend with the maps' own ordered-write protocol.
pub fn install(
    env: &mut KernelEnv,
    frontend: SocketAddrV4,
    proto: u8,
    flags: u16,
    rev_nat_id: u16,
    backends: &[Backend],
) -> Svc4Key {
    install_with_affinity(env, frontend, proto, flags, rev_nat_id, backends, 0)
}

/// [`install`] with a session-affinity timeout (seconds; pass
/// `svc_flags::AFFINITY` in `flags` to turn it on).
pub fn install_with_affinity(
    env: &mut KernelEnv,
    frontend: SocketAddrV4,
    proto: u8,
    flags: u16,
    rev_nat_id: u16,
    backends: &[Backend],
    affinity_secs: u32,
) -> Svc4Key {
    for b in backends {
        env.maps
            .upsert_backend(BackendSpec {
                id: b.id,
                backend: Backend4::new(
                    be(*b.addr.ip()),
                    b.addr.port().to_be(),
                    proto,
                    if b.local { backend_flags::LOCAL } else { 0 },
                ),
            })
            .expect("writing backend");
    }
    let key = Svc4Key::new(
        be(*frontend.ip()),
        frontend.port().to_be(),
        proto,
        SCOPE_EXTERNAL,
        0,
    );
    env.maps
        .upsert_service(
            &ServiceSpec {
                key,
                rev_nat_id,
                rev_nat: RevNat4::new(be(*frontend.ip()), frontend.port().to_be()),
                flags,
                affinity_secs,
                backend_ids: backends.iter().map(|b| b.id).collect(),
            },
            0,
        )
        .expect("writing service");
    key
}

pub fn counter(env: &KernelEnv, reason: Reason) -> u64 {
    env.maps
        .reason_counts()
        .expect("reading counters")
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| n)
        .unwrap_or(0)
}

pub fn pod(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, last), port)
}
