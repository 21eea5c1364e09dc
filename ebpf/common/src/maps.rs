//! Map names and capacities. Names are the pin file names under
//! `/sys/fs/bpf/skiff/<node>/`, so they are part of the on-disk contract.

/// Service map: [`crate::Svc4Key`] → [`crate::Svc4Value`].
pub const MAP_SERVICES: &str = "SKF_SVC4";
/// Backend map: backend id (`u32`) → [`crate::Backend4`].
pub const MAP_BACKENDS: &str = "SKF_BE4";
/// Reverse-NAT map: rev-NAT id (`u16`, widened to `u32` key) → [`crate::RevNat4`].
pub const MAP_REVNAT: &str = "SKF_REVNAT4";
/// Round-robin counters: array indexed by rev-NAT id, `u32` advanced atomically.
pub const MAP_RR: &str = "SKF_RR";
/// Connection tracking LRU: [`crate::CtKey4`] → [`crate::CtEntry4`].
pub const MAP_CONNTRACK: &str = "SKF_CT4";
/// Per-CPU drop/error counters indexed by [`crate::Reason`].
pub const MAP_REASONS: &str = "SKF_REASONS";
/// Socket-LB reverse translation LRU: [`crate::SockRevKey`] → [`crate::RevNat4`].
pub const MAP_SOCK_REVNAT: &str = "SKF_SOCKRN4";
/// Session affinity LRU: [`crate::AffinityKey`] → [`crate::AffinityValue`].
pub const MAP_AFFINITY: &str = "SKF_AFFINITY4";
/// Node configuration: array of one [`crate::NodeConfig`].
pub const MAP_CONFIG: &str = "SKF_CONFIG";

pub const SERVICES_MAX: u32 = 65_536 * 4;
pub const BACKENDS_MAX: u32 = 65_536 * 4;
/// Rev-NAT ids are `u16`; id 0 is never allocated (it means "none").
pub const REVNAT_MAX: u32 = 65_536;
pub const CONNTRACK_MAX: u32 = 262_144;
pub const SOCK_REVNAT_MAX: u32 = 262_144;
pub const AFFINITY_MAX: u32 = 65_536;

// Map names become kernel object names: at most 15 bytes plus NUL.
const _: () = assert!(MAP_SERVICES.len() <= 15);
const _: () = assert!(MAP_BACKENDS.len() <= 15);
const _: () = assert!(MAP_REVNAT.len() <= 15);
const _: () = assert!(MAP_RR.len() <= 15);
const _: () = assert!(MAP_CONNTRACK.len() <= 15);
const _: () = assert!(MAP_REASONS.len() <= 15);
const _: () = assert!(MAP_CONFIG.len() <= 15);
const _: () = assert!(MAP_SOCK_REVNAT.len() <= 15);
const _: () = assert!(MAP_AFFINITY.len() <= 15);
