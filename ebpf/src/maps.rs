//! The dataplane's maps. All are pinned by name (aya pins them under the
//! loader's pin path, `/sys/fs/bpf/skiff/<node>/`), so an agent restart
//! re-uses them and established flows keep their conntrack entries.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use skiff_ebpf_common::{
    AFFINITY_MAX, AffinityKey, AffinityValue, BACKENDS_MAX, Backend4, CONNTRACK_MAX, CtEntry4,
    CtKey4, NodeConfig, REASON_COUNT, REVNAT_MAX, RevNat4, SERVICES_MAX, SOCK_REVNAT_MAX,
    SockRevKey, Svc4Key, Svc4Value,
};

#[map(name = "SKF_SVC4")]
pub static SERVICES: HashMap<Svc4Key, Svc4Value> = HashMap::pinned(SERVICES_MAX, 0);

#[map(name = "SKF_BE4")]
pub static BACKENDS: HashMap<u32, Backend4> = HashMap::pinned(BACKENDS_MAX, 0);

#[map(name = "SKF_REVNAT4")]
pub static REVNAT: HashMap<u32, RevNat4> = HashMap::pinned(REVNAT_MAX, 0);

/// Round-robin cursor per service, indexed by rev-NAT id.
#[map(name = "SKF_RR")]
pub static RR: Array<u32> = Array::pinned(REVNAT_MAX, 0);

#[map(name = "SKF_CT4")]
pub static CONNTRACK: LruHashMap<CtKey4, CtEntry4> = LruHashMap::pinned(CONNTRACK_MAX, 0);

#[map(name = "SKF_REASONS")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::pinned(REASON_COUNT, 0);

#[map(name = "SKF_CONFIG")]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

#[map(name = "SKF_SOCKRN4")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, RevNat4> = LruHashMap::pinned(SOCK_REVNAT_MAX, 0);

#[map(name = "SKF_AFFINITY4")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(AFFINITY_MAX, 0);
