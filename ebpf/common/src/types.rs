//! `#[repr(C)]` map keys and values. Byte order is in the field name.

/// IP protocol numbers as stored in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Service scope (Cilium's `LB_LOOKUP_SCOPE_*`): `Local` services have a
/// second entry listing only node-local backends, used for traffic from
/// outside the node when `externalTrafficPolicy: Local`.
pub const SCOPE_EXTERNAL: u8 = 0;
pub const SCOPE_INTERNAL: u8 = 1;

/// Service entry flags ([`Svc4Value::flags`] of slot 0).
pub mod svc_flags {
    /// The entry is a NodePort (vip = a node address, or 0 for "any local address").
    pub const NODEPORT: u16 = 1 << 0;
    /// `externalTrafficPolicy: Local`: no SNAT, only local backends.
    pub const EXT_LOCAL: u16 = 1 << 1;
    /// `sessionAffinity: ClientIP`.
    pub const AFFINITY: u16 = 1 << 2;
}

/// Backend flags ([`Backend4::flags`]).
pub mod backend_flags {
    /// The backend runs on this node (no SNAT needed for NodePort).
    pub const LOCAL: u8 = 1 << 0;
    /// Only serving-terminating (used when no ready backend exists).
    pub const TERMINATING: u8 = 1 << 1;
}

/// Key of the service map. `slot == 0` is the service entry; `1..=count`
/// name backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Svc4Key {
    pub vip_be: u32,
    pub port_be: u16,
    pub slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Svc4Key>() == 12);

impl Svc4Key {
    pub const fn new(vip_be: u32, port_be: u16, proto: u8, scope: u8, slot: u16) -> Self {
        Self {
            vip_be,
            port_be,
            slot,
            proto,
            scope,
            _pad: [0; 2],
        }
    }

    /// The same service, another slot.
    pub const fn with_slot(self, slot: u16) -> Self {
        Self { slot, ..self }
    }
}

/// Value of the service map. For slot 0: `count` backends, `rev_nat_id`,
/// `flags`, and `backend_id` holds the affinity timeout in seconds. For slots
/// `1..=count`: `backend_id` names a [`Backend4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Svc4Value {
    pub backend_id: u32,
    pub count: u16,
    pub rev_nat_id: u16,
    pub flags: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Svc4Value>() == 12);

impl Svc4Value {
    /// The service entry (slot 0).
    pub const fn service(count: u16, rev_nat_id: u16, flags: u16, affinity_secs: u32) -> Self {
        Self {
            backend_id: affinity_secs,
            count,
            rev_nat_id,
            flags,
            _pad: [0; 2],
        }
    }

    /// A backend slot (slot ≥ 1).
    pub const fn slot(backend_id: u32, rev_nat_id: u16) -> Self {
        Self {
            backend_id,
            count: 0,
            rev_nat_id,
            flags: 0,
            _pad: [0; 2],
        }
    }
}

/// A backend: where DNAT sends packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend4 {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<Backend4>() == 8);

impl Backend4 {
    pub const fn new(addr_be: u32, port_be: u16, proto: u8, flags: u8) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            flags,
        }
    }
}

/// Reverse NAT: what a backend's reply is rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevNat4 {
    pub vip_be: u32,
    pub port_be: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RevNat4>() == 8);

impl RevNat4 {
    pub const fn new(vip_be: u32, port_be: u16) -> Self {
        Self {
            vip_be,
            port_be,
            _pad: [0; 2],
        }
    }
}

/// Conntrack key: the 5-tuple as seen on the wire in the packet's direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey4 {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// [`ct_dir`] value.
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<CtKey4>() == 16);

impl CtKey4 {
    pub const fn new(
        saddr_be: u32,
        daddr_be: u32,
        sport_be: u16,
        dport_be: u16,
        proto: u8,
        dir: u8,
    ) -> Self {
        Self {
            saddr_be,
            daddr_be,
            sport_be,
            dport_be,
            proto,
            dir,
            _pad: [0; 2],
        }
    }
}

/// Conntrack directions.
pub mod ct_dir {
    /// Client → service, keyed by the original (pre-DNAT) tuple.
    pub const ORIGINAL: u8 = 0;
    /// Backend → client reply, keyed by the reply tuple as it arrives
    /// (backend address/port as source, client or SNAT address as destination).
    pub const REPLY: u8 = 1;
}

/// Conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry4 {
    pub backend_id: u32,
    /// Original client address/port, restored on replies when SNAT was applied.
    pub client_addr_be: u32,
    pub client_port_be: u16,
    pub rev_nat_id: u16,
    /// `ct_flags` bits.
    pub flags: u16,
    /// With [`ct_flags::SNAT`]: the node-side source port the flow was
    /// given (0 in entries of programs that kept the client's port).
    pub snat_port_be: u16,
    /// `bpf_ktime_get_ns()` of the last packet seen.
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<CtEntry4>() == 24);

impl CtEntry4 {
    pub const fn new(
        backend_id: u32,
        client_addr_be: u32,
        client_port_be: u16,
        rev_nat_id: u16,
        flags: u16,
        last_seen_ns: u64,
    ) -> Self {
        Self {
            backend_id,
            client_addr_be,
            client_port_be,
            rev_nat_id,
            flags,
            snat_port_be: 0,
            last_seen_ns,
        }
    }
}

/// Conntrack entry flags.
pub mod ct_flags {
    /// The flow was source-NAT'd to the node address.
    pub const SNAT: u16 = 1 << 0;
    /// A TCP FIN or RST was seen: the flow is ending, and its SNAT port
    /// may go to a new flow once [`super::CT_CLOSED_REUSE_NS`] passed.
    pub const CLOSING: u16 = 1 << 1;
}

/// A SNAT port whose flow saw FIN or RST is reusable after this long
/// without packets (TIME_WAIT-like grace for late segments).
pub const CT_CLOSED_REUSE_NS: u64 = 10_000_000_000;
/// A UDP flow's SNAT port is reusable after this long without replies
/// (Linux conntrack keeps an unreplied UDP flow 30 s, a replied one 120 s).
pub const CT_UDP_REUSE_NS: u64 = 120_000_000_000;
/// An open TCP flow's SNAT port is reusable after this long without
/// replies (Cilium's established-flow timeout).
pub const CT_TCP_REUSE_NS: u64 = 6 * 3600 * 1_000_000_000;

/// SNAT source ports used when [`NodeConfig`] names no range: above
/// Linux's default ephemeral range (32768-60999), so the node's own
/// connections to a backend do not share a tuple with a SNAT'd flow.
pub const SNAT_PORT_MIN_DEFAULT: u16 = 61_000;
pub const SNAT_PORT_MAX_DEFAULT: u16 = 65_535;

/// Per-node settings read by the tc programs (array map of one element).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Address used as SNAT source for NodePort traffic to remote backends.
    pub node_addr_be: u32,
    /// First and last port of the SNAT source-port range (host order);
    /// 0 for both means [`SNAT_PORT_MIN_DEFAULT`]..=[`SNAT_PORT_MAX_DEFAULT`].
    pub snat_port_min: u16,
    pub snat_port_max: u16,
}
const _: () = assert!(core::mem::size_of::<NodeConfig>() == 8);

impl NodeConfig {
    pub const fn new(node_addr_be: u32, snat_port_min: u16, snat_port_max: u16) -> Self {
        Self {
            node_addr_be,
            snat_port_min,
            snat_port_max,
        }
    }
}

/// Socket reverse-NAT key: a socket (by cookie) and the backend it was
/// connected (or sent) to. Socket-LB records one per translation so that
/// `getpeername()` and `recvmsg()` on that socket show the service address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    pub cookie: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);

impl SockRevKey {
    pub const fn new(cookie: u64, backend_addr_be: u32, backend_port_be: u16) -> Self {
        Self {
            cookie,
            backend_addr_be,
            backend_port_be,
            _pad: [0; 2],
        }
    }
}

/// Session-affinity key: a client (its IPv4 address on the packet path, its
/// network-namespace cookie on the socket path, so every process of a pod
/// counts as one client) and the frontend's rev-NAT id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub client: u64,
    pub rev_nat_id: u16,
    /// 0 = packet path (client is an address), 1 = socket path (cookie).
    pub kind: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);

impl AffinityKey {
    pub const fn new(client: u64, rev_nat_id: u16, kind: u8) -> Self {
        Self {
            client,
            rev_nat_id,
            kind,
            _pad: [0; 5],
        }
    }
}

/// Session-affinity value: the backend chosen and when it was last used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);

impl AffinityValue {
    pub const fn new(backend_id: u32, last_used_ns: u64) -> Self {
        Self {
            last_used_ns,
            backend_id,
            _pad: [0; 4],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are #[repr(C)], Copy, contain only integers and have
    // explicit padding fields, so every bit pattern is valid and no byte is
    // uninitialised.
    unsafe impl aya::Pod for super::Svc4Key {}
    unsafe impl aya::Pod for super::Svc4Value {}
    unsafe impl aya::Pod for super::Backend4 {}
    unsafe impl aya::Pod for super::RevNat4 {}
    unsafe impl aya::Pod for super::CtKey4 {}
    unsafe impl aya::Pod for super::CtEntry4 {}
    unsafe impl aya::Pod for super::NodeConfig {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
}
