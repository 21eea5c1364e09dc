//! Typed access to the dataplane maps and the write protocol that keeps the
//! datapath from ever following a dangling id.
//!
//! Invariant (enforced here, relied on by `lb.rs` in the kernel): every id the
//! kernel can reach resolves. Hence writes go backends → rev-NAT → slots →
//! service entry, and deletions go in reverse: service entry → slots →
//! rev-NAT → backends. Shrinking a service writes the new slots and the new
//! count before deleting the slots past it, so a concurrent reader that saw
//! the old count still finds every slot it may pick.

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use skiff_ebpf_common::{
    AffinityKey, AffinityValue, Backend4, CtEntry4, CtKey4, MAP_AFFINITY, MAP_BACKENDS, MAP_CONFIG,
    MAP_CONNTRACK, MAP_REASONS, MAP_REVNAT, MAP_SERVICES, NodeConfig, Reason, RevNat4, Svc4Key,
    Svc4Value,
};

use super::EbpfError;

/// A backend as the kernel sees it, with its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub id: u32,
    pub backend: Backend4,
}

/// One service frontend (vip, port, proto, scope) and its backends in slot
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Slot 0 key of the frontend.
    pub key: Svc4Key,
    pub rev_nat_id: u16,
    pub rev_nat: RevNat4,
    pub flags: u16,
    pub affinity_secs: u32,
    pub backend_ids: Vec<u32>,
}

/// Handles on the pinned maps.
pub struct ServiceMaps {
    services: HashMap<MapData, Svc4Key, Svc4Value>,
    backends: HashMap<MapData, u32, Backend4>,
    revnat: HashMap<MapData, u32, RevNat4>,
    conntrack: HashMap<MapData, CtKey4, CtEntry4>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    reasons: PerCpuArray<MapData, u64>,
    config: Array<MapData, NodeConfig>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(EbpfError::map(name))
}

impl ServiceMaps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        Ok(Self {
            services: take(ebpf, MAP_SERVICES)?,
            backends: take(ebpf, MAP_BACKENDS)?,
            revnat: take(ebpf, MAP_REVNAT)?,
            conntrack: take(ebpf, MAP_CONNTRACK)?,
            affinity: take(ebpf, MAP_AFFINITY)?,
            reasons: take(ebpf, MAP_REASONS)?,
            config: take(ebpf, MAP_CONFIG)?,
        })
    }

    pub fn set_node_config(&mut self, cfg: NodeConfig) -> Result<(), EbpfError> {
        self.config
            .set(0, cfg, 0)
            .map_err(EbpfError::map(MAP_CONFIG))
    }

    /// Writes (or rewrites) a backend. Must precede any slot naming it.
    pub fn upsert_backend(&mut self, spec: BackendSpec) -> Result<(), EbpfError> {
        self.backends
            .insert(spec.id, spec.backend, 0)
            .map_err(EbpfError::map(MAP_BACKENDS))
    }

    /// Writes a service whose backends are already present. `previous_count`
    /// is how many slots the service had before (0 if new); slots past the
    /// new count are deleted only after the entry shrinks.
    pub fn upsert_service(
        &mut self,
        spec: &ServiceSpec,
        previous_count: u16,
    ) -> Result<(), EbpfError> {
        let count = u16::try_from(spec.backend_ids.len()).map_err(|_| {
            EbpfError::TooManyBackends(format!("{:?}", spec.key), spec.backend_ids.len())
        })?;
        self.revnat
            .insert(u32::from(spec.rev_nat_id), spec.rev_nat, 0)
            .map_err(EbpfError::map(MAP_REVNAT))?;
        for (i, id) in spec.backend_ids.iter().enumerate() {
            // i < count ≤ u16::MAX, so the slot number fits.
            let slot = (i + 1) as u16;
            self.services
                .insert(
                    spec.key.with_slot(slot),
                    Svc4Value::slot(*id, spec.rev_nat_id),
                    0,
                )
                .map_err(EbpfError::map(MAP_SERVICES))?;
        }
        self.services
            .insert(
                spec.key.with_slot(0),
                Svc4Value::service(count, spec.rev_nat_id, spec.flags, spec.affinity_secs),
                0,
            )
            .map_err(EbpfError::map(MAP_SERVICES))?;
        for slot in (count + 1)..=previous_count {
            self.remove_key(spec.key.with_slot(slot))?;
        }
        Ok(())
    }

    /// Removes a service frontend: entry first, then its slots. The rev-NAT
    /// entry stays (other frontends of the same service share it, and replies
    /// of live flows still need it): see [`Self::remove_rev_nat`].
    pub fn remove_service(&mut self, key: Svc4Key, count: u16) -> Result<(), EbpfError> {
        self.remove_key(key.with_slot(0))?;
        for slot in 1..=count {
            self.remove_key(key.with_slot(slot))?;
        }
        Ok(())
    }

    /// Removes a rev-NAT entry (after every frontend using it is gone).
    pub fn remove_rev_nat(&mut self, id: u16) -> Result<(), EbpfError> {
        match self.revnat.remove(&u32::from(id)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(EbpfError::map(MAP_REVNAT)(e)),
        }
    }

    /// Removes backends no slot names any more, without walking conntrack
    /// (what a sync does). Flows of a removed backend need no flush: the
    /// datapath drops a conntrack entry whose backend id no longer resolves
    /// at the flow's next packet and picks a live backend (`nat.rs`), as
    /// kube-proxy's UDP flush would; and ids are never handed out twice
    /// (see [`Self::max_backend_id_referenced`]), so a stale entry can never
    /// name someone else's backend. A walk costs the whole conntrack map
    /// (about 2 µs per entry, and a scan of every bucket when empty), far
    /// more than an endpoint change is allowed to.
    pub fn remove_backend_entries(&mut self, ids: &[u32]) -> Result<(), EbpfError> {
        for id in ids {
            match self.backends.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(EbpfError::map(MAP_BACKENDS)(e)),
            }
        }
        Ok(())
    }

    /// The highest backend id a conntrack or session-affinity entry names
    /// (0 if none). A restarted proxy allocates above it: reusing such an id
    /// would hand a stale flow or affinity to an unrelated backend. Walks
    /// both maps; done once at start.
    pub fn max_backend_id_referenced(&self) -> u32 {
        let ct = self
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.backend_id);
        let aff = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.backend_id);
        ct.chain(aff).max().unwrap_or(0)
    }

    /// Removes a backend no slot names any more, and the conntrack entries
    /// of its flows at once (they would otherwise wait for their next
    /// packet). Returns how many conntrack entries were dropped.
    pub fn remove_backend(&mut self, id: u32) -> Result<usize, EbpfError> {
        self.remove_backends(&[id])
    }

    /// [`Self::remove_backend`] for several backends with one walk of the
    /// conntrack map (a walk costs the whole map, not the ids removed).
    pub fn remove_backends(&mut self, ids: &[u32]) -> Result<usize, EbpfError> {
        if ids.is_empty() {
            return Ok(0);
        }
        for id in ids {
            match self.backends.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(EbpfError::map(MAP_BACKENDS)(e)),
            }
        }
        let gone: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let stale: Vec<CtKey4> = self
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| gone.contains(&v.backend_id))
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            // An LRU entry may vanish between iteration and removal.
            let _ = self.conntrack.remove(k);
        }
        Ok(stale.len())
    }

    fn remove_key(&mut self, key: Svc4Key) -> Result<(), EbpfError> {
        match self.services.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(EbpfError::map(MAP_SERVICES)(e)),
        }
    }

    /// Reads a service map entry (for tests and diagnostics).
    pub fn service_entry(&self, key: Svc4Key) -> Option<Svc4Value> {
        self.services.get(&key, 0).ok()
    }

    /// Conntrack entries (for tests and diagnostics).
    pub fn conntrack_entries(&self) -> Vec<(CtKey4, CtEntry4)> {
        self.conntrack.iter().filter_map(Result::ok).collect()
    }

    /// Reason counters summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, EbpfError> {
        Reason::ALL
            .iter()
            .map(|r| {
                let per_cpu = self
                    .reasons
                    .get(&(*r as u32), 0)
                    .map_err(EbpfError::map(MAP_REASONS))?;
                Ok((*r, per_cpu.iter().sum()))
            })
            .collect()
    }
}

impl ServiceMaps {
    /// Every service map entry (for rebuilding the planner after a restart).
    pub fn dump_services(&self) -> Vec<(Svc4Key, Svc4Value)> {
        self.services.iter().filter_map(Result::ok).collect()
    }

    /// Every backend.
    pub fn dump_backends(&self) -> Vec<(u32, Backend4)> {
        self.backends.iter().filter_map(Result::ok).collect()
    }
}
