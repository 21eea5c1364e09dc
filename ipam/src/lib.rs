//! Skiff IPAM: pure allocators (no IO, no async) for ClusterIPs, NodePorts,
//! per-node pod CIDRs and pod IPs. The control plane owns the allocators,
//! persists their snapshots through its store, and restores them after a
//! restart so nothing is handed out twice.
//!
//! # Layout
//!
//! - [`service_ip`]: [`ServiceIpAllocator`], ClusterIPs from the service CIDR
//!   (default 10.96.0.0/12); network and IPv4 broadcast addresses are never
//!   handed out, and the first usable address is kept for the `kubernetes`
//!   service.
//! - [`port`]: [`PortRange`] (`"30000-32767"`) and [`PortAllocator`] for
//!   NodePorts.
//! - [`node_cidr`]: [`NodeCidrAllocator`], the cluster CIDR (default
//!   10.244.0.0/16) split into per-node pod CIDRs (default /24), keyed by
//!   node name.
//! - [`pod_ip`]: [`PodIpAllocator`], pod IPs inside one node CIDR keyed by pod
//!   uid; the first usable address is the node bridge's gateway.
//! - [`snapshot`]: the snapshot format version shared by all four
//!   `*Snapshot` types.
//! - [`error`]: [`IpamError`], the one error type.
//! - `bitmap` (private): the bit set and rotating-cursor pool every allocator
//!   keeps its state in; `ip_pool` and `cidr` (private): address ↔ offset
//!   arithmetic for both families.
//!
//! # Shared behaviour
//!
//! - Dynamic allocation (`allocate_next` / `allocate`) scans a bitmap from a
//!   rotating cursor, so a just-released value is reused only after the rest
//!   of the range has been handed out once. A full /12 costs 128 KiB and a
//!   search touches at most 16 Ki words.
//! - Explicit allocation (`allocate_specific`) honours a requested value or
//!   fails with a typed error saying why.
//! - `release` is idempotent; keyed allocators (node CIDRs, pod IPs) release
//!   by key and allocate idempotently by key, so level-triggered
//!   reconcilers can call them on every pass.
//! - State leaves and returns as a serde snapshot (`snapshot()`,
//!   `restore(&snapshot)`, `from_snapshot(&snapshot)`) that records its own
//!   range, so restoring after the range was reconfigured is rejected with
//!   [`IpamError::SnapshotRangeMismatch`]. `from_in_use(range, values)`
//!   rebuilds state from the API objects themselves instead.
//! - CIDRs given with host bits set are normalised ("10.96.0.5/12" →
//!   "10.96.0.0/12"), as Go's `net.ParseCIDR` does for Kubernetes flags.

mod bitmap;
mod cidr;
pub mod error;
mod ip_pool;
pub mod node_cidr;
pub mod pod_ip;
pub mod port;
pub mod service_ip;
pub mod snapshot;

pub use error::IpamError;
pub use node_cidr::{
    DEFAULT_CLUSTER_CIDR, DEFAULT_NODE_PREFIX, MAX_NODE_CIDR_BITS, NodeCidrAllocator,
    NodeCidrSnapshot,
};
pub use pod_ip::{MAX_POD_HOST_BITS, PodIpAllocator, PodIpSnapshot};
pub use port::{DEFAULT_NODE_PORT_RANGE, PortAllocator, PortRange, PortSnapshot};
pub use service_ip::{
    DEFAULT_SERVICE_CIDR, MAX_SERVICE_HOST_BITS, ServiceIpAllocator, ServiceIpSnapshot,
};
pub use snapshot::SNAPSHOT_VERSION;
