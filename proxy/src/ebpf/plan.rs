//! Pure planning for the eBPF dataplane: from a [`DesiredState`] and what the
//! maps hold now, the ordered list of map operations that gets there while
//! never exposing a dangling id.
//!
//! Identity: a backend is its [`Backend4`] value (address, port, protocol,
//! locality/terminating flags) and keeps its id while any frontend uses it,
//! so conntrack entries of live flows stay valid. A frontend is its slot-0
//! [`Svc4Key`] (ClusterIP:port, or node IP:NodePort) and owns one rev-NAT id
//! (replies are rewritten to exactly that frontend's address).
//!
//! Planning is diff-driven: the planner remembers the service entries it
//! planned last, and a sync plans only the services whose entry changed
//! (one comparison per service finds them; node addresses changing replans
//! every service). Backend ids are reference-counted by the slots naming
//! them and rev-NAT ids live in a bitmap, so a change costs what it touches,
//! not the size of the whole state.
//!
//! The state can be rebuilt from the maps themselves
//! ([`Planner::from_maps`]), which is how a restarted proxy adopts pinned
//! state instead of rewriting it: adopted frontends wait unclaimed until the
//! first plan, which claims (and leaves untouched) those still wanted and
//! removes the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use skiff_ebpf_common::{
    Backend4, PROTO_TCP, PROTO_UDP, RevNat4, SCOPE_EXTERNAL, Svc4Key, Svc4Value, backend_flags,
    svc_flags,
};

use super::maps::{BackendSpec, ServiceSpec};
use crate::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};

/// One map operation, in the order it must be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write a backend (before any slot names it).
    UpsertBackend(BackendSpec),
    /// Write a frontend's rev-NAT, slots and entry; `previous_count` slots
    /// existed before (slots past the new count go after the entry shrinks).
    UpsertService {
        spec: ServiceSpec,
        previous_count: u16,
    },
    /// Remove a frontend's entry, then its `count` slots.
    RemoveService { key: Svc4Key, count: u16 },
    /// Remove a rev-NAT entry (after the frontend using it is gone).
    RemoveRevNat(u16),
    /// Remove a backend no slot names any more.
    RemoveBackend(u32),
}

/// What one frontend looks like in the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub rev_nat_id: u16,
    pub flags: u16,
    pub affinity_secs: u32,
    pub backend_ids: Vec<u32>,
}

/// Errors planning can hit. A failed plan leaves the planner unchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("all 65535 rev-NAT ids are in use: too many service frontends")]
    RevNatExhausted,
    #[error("backend ids exhausted")]
    BackendsExhausted,
    #[error("frontend {0} has {1} backends; at most 65535 fit")]
    TooManyBackends(String, usize),
}

/// Rev-NAT ids in use, one bit per id (id 0 is never handed out).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RevNatIds {
    bits: Vec<u64>,
    used: usize,
    /// Where the search for a free id starts: a rotating cursor keeps
    /// allocation O(1) amortised and delays reuse of a freed id (replies of
    /// flows to a removed frontend may still be in flight).
    cursor: u16,
}

impl Default for RevNatIds {
    fn default() -> Self {
        let mut ids = Self {
            bits: vec![0; 1024],
            used: 0,
            cursor: 1,
        };
        // Id 0 means "none": mark it taken so it is never allocated.
        ids.bits[0] = 1;
        ids
    }
}

impl RevNatIds {
    fn is_used(&self, id: u16) -> bool {
        self.bits[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    fn mark(&mut self, id: u16) {
        if id != 0 && !self.is_used(id) {
            self.bits[usize::from(id >> 6)] |= 1 << (id & 63);
            self.used += 1;
        }
    }

    fn release(&mut self, id: u16) {
        if id != 0 && self.is_used(id) {
            self.bits[usize::from(id >> 6)] &= !(1 << (id & 63));
            self.used -= 1;
        }
    }

    fn free(&self) -> usize {
        usize::from(u16::MAX) - self.used
    }

    fn allocate(&mut self) -> Option<u16> {
        let start = self.cursor.max(1);
        let id = (start..=u16::MAX)
            .chain(1..start)
            .find(|id| !self.is_used(*id))?;
        self.mark(id);
        self.cursor = id.checked_add(1).unwrap_or(1);
        Some(id)
    }
}

/// A backend in the maps and how many slots name it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BackendRef {
    backend: Backend4,
    refs: u32,
}

/// A service entry as last planned (only what planning reads, compactly:
/// every sync compares it with the new entry, so its size is what a sync
/// costs), and the frontend keys it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlannedService {
    inputs: PlanInputs,
    frontends: Vec<Svc4Key>,
}

/// The fields of a [`ServiceEntry`] planning reads.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlanInputs {
    cluster_ip: Option<Ipv4Addr>,
    port: u16,
    protocol: Protocol,
    node_port: Option<u16>,
    external_local: bool,
    internal_local: bool,
    affinity_timeout_secs: Option<u32>,
    endpoints: Box<[PlanEndpoint]>,
}

/// An endpoint as planning sees it: address, port, condition bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PlanEndpoint {
    addr: Ipv4Addr,
    port: u16,
    conditions: u8,
}

const EP_LOCAL: u8 = 1 << 0;
const EP_READY: u8 = 1 << 1;
const EP_SERVING: u8 = 1 << 2;
const EP_TERMINATING: u8 = 1 << 3;

impl PlanEndpoint {
    fn of(ep: &Endpoint) -> Self {
        let mut conditions = 0;
        for (set, bit) in [
            (ep.is_local, EP_LOCAL),
            (ep.ready, EP_READY),
            (ep.serving, EP_SERVING),
            (ep.terminating, EP_TERMINATING),
        ] {
            if set {
                conditions |= bit;
            }
        }
        Self {
            addr: ep.addr,
            port: ep.port,
            conditions,
        }
    }
}

impl PlanInputs {
    fn of(e: &ServiceEntry) -> Self {
        Self {
            cluster_ip: e.cluster_ip,
            port: e.port,
            protocol: e.protocol,
            node_port: e.node_port,
            external_local: e.external_local,
            internal_local: e.internal_local,
            affinity_timeout_secs: e.affinity_timeout_secs,
            endpoints: e.endpoints.iter().map(PlanEndpoint::of).collect(),
        }
    }

    /// Whether `e` plans the same frontends: every field planning reads
    /// (an endpoint's node name is not one of them).
    fn matches(&self, e: &ServiceEntry) -> bool {
        self.port == e.port
            && self.protocol == e.protocol
            && self.cluster_ip == e.cluster_ip
            && self.node_port == e.node_port
            && self.external_local == e.external_local
            && self.internal_local == e.internal_local
            && self.affinity_timeout_secs == e.affinity_timeout_secs
            && self.endpoints.len() == e.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&e.endpoints)
                .all(|(x, y)| *x == PlanEndpoint::of(y))
    }

    /// An entry planning the same frontends (node names left out).
    fn to_entry(&self, key: &ServicePortKey) -> ServiceEntry {
        ServiceEntry {
            key: key.clone(),
            cluster_ip: self.cluster_ip,
            port: self.port,
            protocol: self.protocol,
            node_port: self.node_port,
            external_local: self.external_local,
            internal_local: self.internal_local,
            affinity_timeout_secs: self.affinity_timeout_secs,
            endpoints: self
                .endpoints
                .iter()
                .map(|ep| Endpoint {
                    addr: ep.addr,
                    port: ep.port,
                    node_name: None,
                    is_local: ep.conditions & EP_LOCAL != 0,
                    ready: ep.conditions & EP_READY != 0,
                    serving: ep.conditions & EP_SERVING != 0,
                    terminating: ep.conditions & EP_TERMINATING != 0,
                })
                .collect(),
        }
    }
}

/// The maps' contents as the planner tracks them, plus the service entries
/// they were planned from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planner {
    /// Node addresses the services were planned with (NodePort frontends).
    node_ips: Vec<Ipv4Addr>,
    services: BTreeMap<ServicePortKey, PlannedService>,
    frontends: BTreeMap<Svc4Key, Frontend>,
    /// Services producing each frontend key, sorted. Normally one; when
    /// several collide (two services on one ClusterIP:port), the greatest
    /// key wins, as it would planning the state from scratch in key order.
    claims: HashMap<Svc4Key, Vec<ServicePortKey>>,
    /// Frontends in the maps that no service claims: adopted from pinned
    /// maps and not yet wanted again. The next plan removes them.
    unclaimed: BTreeSet<Svc4Key>,
    /// Backends in the maps that no slot names: adopted leftovers of an
    /// interrupted sync. The next plan removes them unless it uses them.
    unreferenced: BTreeSet<u32>,
    backends: HashMap<Backend4, u32>,
    backend_refs: HashMap<u32, BackendRef>,
    next_backend_id: u32,
    rev_nat: RevNatIds,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

/// What a desired frontend wants, before ids are assigned.
#[derive(Clone, Debug)]
struct WantedFrontend {
    rev_nat: RevNat4,
    flags: u16,
    affinity_secs: u32,
    backends: Vec<Backend4>,
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

fn backend_of(ep: &Endpoint, proto: u8) -> Backend4 {
    let mut flags = 0;
    if ep.is_local {
        flags |= backend_flags::LOCAL;
    }
    if ep.terminating {
        flags |= backend_flags::TERMINATING;
    }
    Backend4::new(
        u32::from_ne_bytes(ep.addr.octets()),
        ep.port.to_be(),
        proto,
        flags,
    )
}

/// The frontends one service entry produces, one per key: when a key comes
/// up twice (a node address equal to the ClusterIP), the later one wins, as
/// it always has.
fn frontends_of(entry: &ServiceEntry, node_ips: &[Ipv4Addr]) -> Vec<(Svc4Key, WantedFrontend)> {
    let proto = proto_num(entry.protocol);
    let mut base_flags = 0;
    if entry.affinity_timeout_secs.is_some() {
        base_flags |= svc_flags::AFFINITY;
    }
    let affinity_secs = entry.affinity_timeout_secs.unwrap_or(0);
    let mut out: Vec<(Svc4Key, WantedFrontend)> = Vec::new();
    let mut push = |ip: Ipv4Addr, port: u16, flags: u16, eps: Vec<&Endpoint>| {
        let vip_be = u32::from_ne_bytes(ip.octets());
        let key = Svc4Key::new(vip_be, port.to_be(), proto, SCOPE_EXTERNAL, 0);
        let want = WantedFrontend {
            rev_nat: RevNat4::new(vip_be, port.to_be()),
            flags,
            affinity_secs,
            backends: eps.into_iter().map(|ep| backend_of(ep, proto)).collect(),
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = want,
            None => out.push((key, want)),
        }
    };
    if let Some(ip) = entry.cluster_ip {
        push(ip, entry.port, base_flags, entry.usable_endpoints(false));
    }
    if let Some(np) = entry.node_port {
        let mut flags = base_flags | svc_flags::NODEPORT;
        if entry.external_local {
            flags |= svc_flags::EXT_LOCAL;
        }
        for ip in node_ips {
            push(*ip, np, flags, entry.usable_endpoints(true));
        }
    }
    out
}

/// A service port whose entry changed.
enum Change<'d> {
    /// Planned before, gone now.
    Gone(ServicePortKey),
    /// New, or different from what was planned.
    Now(&'d ServicePortKey, &'d ServiceEntry),
}

impl Change<'_> {
    fn key(&self) -> &ServicePortKey {
        match self {
            Change::Gone(key) => key,
            Change::Now(key, _) => key,
        }
    }
}

/// Operations of one plan by phase; [`Ops::into_ordered`] puts them in the
/// order that never exposes a dangling id.
#[derive(Default)]
struct Ops {
    backends: Vec<Op>,
    services: Vec<Op>,
    removals: Vec<Op>,
    rev_nat_removals: Vec<Op>,
    backend_removals: Vec<Op>,
}

impl Ops {
    /// Backends → (rev-NAT, slots, entry) → removed entries and slots →
    /// their rev-NATs → backends no slot names any more.
    fn into_ordered(self) -> Vec<Op> {
        let mut out = self.backends;
        out.extend(self.services);
        out.extend(self.removals);
        out.extend(self.rev_nat_removals);
        out.extend(self.backend_removals);
        out
    }
}

impl Planner {
    /// An empty planner (maps are empty).
    pub fn new() -> Self {
        Self {
            node_ips: Vec::new(),
            services: BTreeMap::new(),
            frontends: BTreeMap::new(),
            claims: HashMap::new(),
            unclaimed: BTreeSet::new(),
            unreferenced: BTreeSet::new(),
            backends: HashMap::new(),
            backend_refs: HashMap::new(),
            next_backend_id: 1,
            rev_nat: RevNatIds::default(),
        }
    }

    /// Rebuilds the planner from map dumps (a restart adopting pinned maps).
    /// Every frontend starts unclaimed: the next plan claims those still
    /// wanted (writing nothing when they match) and removes the others.
    /// Slots whose ids do not resolve are ignored; the next plan rewrites
    /// such a frontend.
    pub fn from_maps(
        services: impl IntoIterator<Item = (Svc4Key, Svc4Value)>,
        backends: impl IntoIterator<Item = (u32, Backend4)>,
    ) -> Self {
        let services: HashMap<Svc4Key, Svc4Value> = services.into_iter().collect();
        let mut planner = Self::new();
        for (id, backend) in backends {
            planner.backends.insert(backend, id);
            planner
                .backend_refs
                .insert(id, BackendRef { backend, refs: 0 });
            planner.next_backend_id = planner.next_backend_id.max(id.saturating_add(1));
        }
        let mut max_rev_nat = 0;
        for (key, entry) in services.iter().filter(|(k, _)| k.slot == 0) {
            let backend_ids: Vec<u32> = (1..=entry.count)
                .filter_map(|slot| services.get(&key.with_slot(slot)).map(|v| v.backend_id))
                .collect();
            for id in &backend_ids {
                if let Some(b) = planner.backend_refs.get_mut(id) {
                    b.refs += 1;
                }
            }
            planner.rev_nat.mark(entry.rev_nat_id);
            max_rev_nat = max_rev_nat.max(entry.rev_nat_id);
            planner.frontends.insert(
                *key,
                Frontend {
                    rev_nat_id: entry.rev_nat_id,
                    flags: entry.flags,
                    affinity_secs: entry.backend_id,
                    backend_ids,
                },
            );
            planner.unclaimed.insert(*key);
        }
        planner.rev_nat.cursor = max_rev_nat.checked_add(1).unwrap_or(1);
        planner.unreferenced = planner
            .backend_refs
            .iter()
            .filter(|(_, b)| b.refs == 0)
            .map(|(id, _)| *id)
            .collect();
        planner
    }

    /// Makes every backend id this planner hands out greater than `id`
    /// (ids that conntrack or affinity entries still name; see
    /// `ServiceMaps::max_backend_id_referenced`).
    pub fn allocate_backend_ids_above(&mut self, id: u32) {
        self.next_backend_id = self.next_backend_id.max(id.saturating_add(1));
    }

    /// Frontends as currently planned.
    pub fn frontends(&self) -> &BTreeMap<Svc4Key, Frontend> {
        &self.frontends
    }

    /// Backends as currently planned, by value.
    pub fn backends(&self) -> &HashMap<Backend4, u32> {
        &self.backends
    }

    /// Plans the operations from the current state to `desired`, in the
    /// order they must be applied, and moves the planner to the state they
    /// lead to. The caller applies them; if that fails, it rebuilds the
    /// planner from the maps ([`Self::from_maps`]).
    ///
    /// Only services whose entry differs from the last plan are planned.
    /// Fails (leaving the planner unchanged) when rev-NAT or backend ids
    /// run out or a frontend has more backends than a service entry counts.
    pub fn plan(&mut self, desired: &DesiredState) -> Result<Vec<Op>, PlanError> {
        let changes = self.changed_services(desired);
        self.plan_changes(desired, changes)
    }

    /// [`Self::plan`] when the caller knows which service ports may have
    /// changed since the last plan: only those are compared, so a sync
    /// costs time in what changed, not in the size of `desired`. Every
    /// key whose entry differs must be in `changed` (keys that did not
    /// change may be). A change of node addresses plans everything.
    pub fn plan_changed(
        &mut self,
        desired: &DesiredState,
        changed: &BTreeSet<ServicePortKey>,
    ) -> Result<Vec<Op>, PlanError> {
        if self.node_ips != desired.node_ips {
            return self.plan(desired);
        }
        let changes = changed
            .iter()
            .filter_map(|key| match desired.services.get_key_value(key) {
                Some((k, entry)) => {
                    let same = self
                        .services
                        .get(key)
                        .is_some_and(|planned| planned.inputs.matches(entry));
                    (!same).then_some(Change::Now(k, entry))
                }
                None => self
                    .services
                    .contains_key(key)
                    .then(|| Change::Gone(key.clone())),
            })
            .collect();
        self.plan_changes(desired, changes)
    }

    fn plan_changes<'d>(
        &mut self,
        desired: &'d DesiredState,
        changes: Vec<Change<'d>>,
    ) -> Result<Vec<Op>, PlanError> {
        if changes.is_empty()
            && self.unclaimed.is_empty()
            && self.unreferenced.is_empty()
            && self.node_ips == desired.node_ips
        {
            return Ok(Vec::new());
        }

        // Validate everything before touching any state.
        let mut fresh: HashMap<&ServicePortKey, Vec<(Svc4Key, WantedFrontend)>> =
            HashMap::with_capacity(changes.len());
        let mut new_frontends: BTreeSet<Svc4Key> = BTreeSet::new();
        let mut new_backends = 0usize;
        for change in &changes {
            let Change::Now(key, entry) = change else {
                continue;
            };
            let wanted = frontends_of(entry, &desired.node_ips);
            for (k, want) in &wanted {
                if want.backends.len() > usize::from(u16::MAX) {
                    return Err(PlanError::TooManyBackends(
                        format!("{key} ({k:?})"),
                        want.backends.len(),
                    ));
                }
                if !self.frontends.contains_key(k) {
                    new_frontends.insert(*k);
                }
                new_backends += want
                    .backends
                    .iter()
                    .filter(|b| !self.backends.contains_key(b))
                    .count();
            }
            fresh.insert(*key, wanted);
        }
        if new_frontends.len() > self.rev_nat.free() {
            return Err(PlanError::RevNatExhausted);
        }
        // Ids are handed out below u32::MAX (see `backend_id_for`).
        let ids_left = u32::MAX - self.next_backend_id;
        if new_backends > ids_left as usize {
            return Err(PlanError::BackendsExhausted);
        }

        // Claims: which services produce which frontend keys.
        let mut affected: BTreeSet<Svc4Key> = std::mem::take(&mut self.unclaimed);
        for change in &changes {
            let key = change.key();
            if let Some(old) = self.services.remove(key) {
                for k in &old.frontends {
                    self.unclaim(k, key);
                    affected.insert(*k);
                }
            }
            if let Change::Now(_, entry) = change {
                let keys: Vec<Svc4Key> = fresh
                    .get(key)
                    .map(|w| w.iter().map(|(k, _)| *k).collect())
                    .unwrap_or_default();
                for k in &keys {
                    self.claim(*k, key);
                    affected.insert(*k);
                }
                self.services.insert(
                    key.clone(),
                    PlannedService {
                        inputs: PlanInputs::of(entry),
                        frontends: keys,
                    },
                );
            }
        }
        self.node_ips.clone_from(&desired.node_ips);

        // Each affected frontend is rewritten from its owner, if it differs.
        let mut ops = Ops::default();
        let mut maybe_dead: BTreeSet<u32> = std::mem::take(&mut self.unreferenced);
        for k in affected {
            let want =
                match self.claims.get(&k).and_then(|owners| owners.last()) {
                    // Each key is planned once: its wanted backends can move.
                    Some(owner) => match fresh.get_mut(owner) {
                        Some(wanted) => wanted.iter_mut().find(|(fk, _)| *fk == k).map(|(_, w)| {
                            WantedFrontend {
                                backends: std::mem::take(&mut w.backends),
                                ..*w
                            }
                        }),
                        // An unchanged service that now wins the key (the one
                        // that shadowed it went away).
                        None => self.services.get(owner).and_then(|s| {
                            frontends_of(&s.inputs.to_entry(owner), &self.node_ips)
                                .into_iter()
                                .find(|(fk, _)| *fk == k)
                                .map(|(_, w)| w)
                        }),
                    },
                    None => None,
                };
            match want {
                Some(want) => self.upsert_frontend(k, &want, &mut ops, &mut maybe_dead)?,
                None => {
                    if self.frontends.contains_key(&k) {
                        self.unclaimed.insert(k);
                    }
                }
            }
        }

        // Frontends nobody claims go; their rev-NAT ids stay taken until
        // now so that no upsert above could have reused one.
        let mut freed = Vec::new();
        for k in std::mem::take(&mut self.unclaimed) {
            let Some(f) = self.frontends.remove(&k) else {
                continue;
            };
            // Bounded by the check when it was planned (or by the map's
            // own u16 count when adopted).
            let count = f.backend_ids.len() as u16;
            ops.removals.push(Op::RemoveService { key: k, count });
            ops.rev_nat_removals.push(Op::RemoveRevNat(f.rev_nat_id));
            freed.push(f.rev_nat_id);
            for id in &f.backend_ids {
                self.unref(*id, &mut maybe_dead);
            }
        }
        for id in freed {
            self.rev_nat.release(id);
        }
        for id in maybe_dead {
            if self.backend_refs.get(&id).is_some_and(|b| b.refs == 0) {
                if let Some(b) = self.backend_refs.remove(&id)
                    && self.backends.get(&b.backend) == Some(&id)
                {
                    self.backends.remove(&b.backend);
                }
                ops.backend_removals.push(Op::RemoveBackend(id));
            }
        }
        Ok(ops.into_ordered())
    }

    /// Service ports whose entry differs from the last plan (all of them
    /// when the node addresses changed), in key order: one merge of two
    /// sorted maps, comparing entries only where the keys match.
    fn changed_services<'d>(&self, desired: &'d DesiredState) -> Vec<Change<'d>> {
        let all = self.node_ips != desired.node_ips;
        let mut out = Vec::new();
        let mut old = self.services.iter();
        let mut next_old = old.next();
        for (key, entry) in &desired.services {
            // One key comparison per step: string comparisons are a good
            // part of what a sync costs.
            loop {
                match next_old {
                    Some((k, planned)) => match k.cmp(key) {
                        std::cmp::Ordering::Less => {
                            out.push(Change::Gone(k.clone()));
                            next_old = old.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if all || !planned.inputs.matches(entry) {
                                out.push(Change::Now(key, entry));
                            }
                            next_old = old.next();
                            break;
                        }
                        std::cmp::Ordering::Greater => {
                            out.push(Change::Now(key, entry));
                            break;
                        }
                    },
                    None => {
                        out.push(Change::Now(key, entry));
                        break;
                    }
                }
            }
        }
        out.extend(
            next_old
                .into_iter()
                .chain(old)
                .map(|(gone, _)| Change::Gone(gone.clone())),
        );
        out
    }

    fn claim(&mut self, k: Svc4Key, owner: &ServicePortKey) {
        let owners = self.claims.entry(k).or_default();
        if let Err(at) = owners.binary_search(owner) {
            owners.insert(at, owner.clone());
        }
    }

    fn unclaim(&mut self, k: &Svc4Key, owner: &ServicePortKey) {
        if let Some(owners) = self.claims.get_mut(k) {
            if let Ok(at) = owners.binary_search(owner) {
                owners.remove(at);
            }
            if owners.is_empty() {
                self.claims.remove(k);
            }
        }
    }

    fn unref(&mut self, id: u32, maybe_dead: &mut BTreeSet<u32>) {
        if let Some(b) = self.backend_refs.get_mut(&id) {
            b.refs = b.refs.saturating_sub(1);
            if b.refs == 0 {
                maybe_dead.insert(id);
            }
        }
    }

    /// The id of a backend, writing it first if it is new.
    fn backend_id_for(&mut self, backend: &Backend4, ops: &mut Ops) -> Result<u32, PlanError> {
        if let Some(id) = self.backends.get(backend) {
            return Ok(*id);
        }
        let id = self.next_backend_id;
        self.next_backend_id = id.checked_add(1).ok_or(PlanError::BackendsExhausted)?;
        self.backends.insert(*backend, id);
        self.backend_refs.insert(
            id,
            BackendRef {
                backend: *backend,
                refs: 0,
            },
        );
        ops.backends.push(Op::UpsertBackend(BackendSpec {
            id,
            backend: *backend,
        }));
        Ok(id)
    }

    /// Makes frontend `k` what `want` says, planning the write if it differs.
    fn upsert_frontend(
        &mut self,
        k: Svc4Key,
        want: &WantedFrontend,
        ops: &mut Ops,
        maybe_dead: &mut BTreeSet<u32>,
    ) -> Result<(), PlanError> {
        let mut ids = Vec::with_capacity(want.backends.len());
        for b in &want.backends {
            let id = self.backend_id_for(b, ops)?;
            if let Some(r) = self.backend_refs.get_mut(&id) {
                r.refs += 1;
            }
            ids.push(id);
        }
        let old = self.frontends.remove(&k);
        let rev_nat_id = match &old {
            Some(f) => f.rev_nat_id,
            None => self.rev_nat.allocate().ok_or(PlanError::RevNatExhausted)?,
        };
        let frontend = Frontend {
            rev_nat_id,
            flags: want.flags,
            affinity_secs: want.affinity_secs,
            backend_ids: ids,
        };
        if old.as_ref() != Some(&frontend) {
            ops.services.push(Op::UpsertService {
                spec: ServiceSpec {
                    key: k,
                    rev_nat_id,
                    rev_nat: want.rev_nat,
                    flags: frontend.flags,
                    affinity_secs: frontend.affinity_secs,
                    backend_ids: frontend.backend_ids.clone(),
                },
                // Bounded by the check when it was planned.
                previous_count: old.as_ref().map_or(0, |f| f.backend_ids.len() as u16),
            });
        }
        if let Some(old) = old {
            for id in &old.backend_ids {
                self.unref(*id, maybe_dead);
            }
        }
        self.frontends.insert(k, frontend);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::model::ServicePortKey;

    fn ep(last: u8, local: bool) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            node_name: None,
            is_local: local,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn svc(name: &str, ip: [u8; 4], node_port: Option<u16>, eps: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry {
            key: ServicePortKey::new("default", name, ""),
            cluster_ip: Some(Ipv4Addr::from(ip)),
            port: 80,
            protocol: Protocol::Tcp,
            node_port,
            external_local: false,
            internal_local: false,
            affinity_timeout_secs: None,
            endpoints: eps,
        }
    }

    fn state(entries: Vec<ServiceEntry>) -> DesiredState {
        DesiredState {
            services: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
            node_name: "n1".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 250, 1)],
            cluster_cidr: None,
        }
    }

    /// The maps as a test sees them: services, backends, rev-NAT.
    #[derive(Clone, Debug, Default)]
    struct SimMaps {
        services: BTreeMap<Svc4Key, Svc4Value>,
        backends: BTreeMap<u32, Backend4>,
        rev_nat: BTreeMap<u16, RevNat4>,
    }

    impl SimMaps {
        /// Panics unless every id the kernel can reach resolves.
        fn check(&self) {
            for (k, v) in self.services.iter().filter(|(k, _)| k.slot == 0) {
                assert!(
                    self.rev_nat.contains_key(&v.rev_nat_id),
                    "entry {k:?} names missing rev-NAT"
                );
                for slot in 1..=v.count {
                    let s = self
                        .services
                        .get(&k.with_slot(slot))
                        .unwrap_or_else(|| panic!("dangling slot {slot} of {k:?}"));
                    assert!(
                        self.backends.contains_key(&s.backend_id),
                        "slot names missing backend {}",
                        s.backend_id
                    );
                }
            }
        }

        /// Frontends by key with their backends resolved to values.
        fn resolved(&self) -> BTreeMap<Svc4Key, (u16, u32, Vec<Backend4>)> {
            self.services
                .iter()
                .filter(|(k, _)| k.slot == 0)
                .map(|(k, v)| {
                    let backends = (1..=v.count)
                        .map(|slot| self.backends[&self.services[&k.with_slot(slot)].backend_id])
                        .collect();
                    (*k, (v.flags, v.backend_id, backends))
                })
                .collect()
        }
    }

    /// Applies ops to simulated maps, asserting after every single write
    /// that no id the kernel can reach dangles: the invariant it relies on.
    fn apply_checked(maps: &mut SimMaps, ops: &[Op]) {
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    maps.backends.insert(b.id, b.backend);
                }
                Op::UpsertService {
                    spec,
                    previous_count,
                } => {
                    maps.rev_nat.insert(spec.rev_nat_id, spec.rev_nat);
                    for (i, id) in spec.backend_ids.iter().enumerate() {
                        maps.services.insert(
                            spec.key.with_slot(i as u16 + 1),
                            Svc4Value::slot(*id, spec.rev_nat_id),
                        );
                        maps.check();
                    }
                    let n = spec.backend_ids.len() as u16;
                    maps.services.insert(
                        spec.key,
                        Svc4Value::service(n, spec.rev_nat_id, spec.flags, spec.affinity_secs),
                    );
                    maps.check();
                    for slot in n + 1..=*previous_count {
                        maps.services.remove(&spec.key.with_slot(slot));
                        maps.check();
                    }
                }
                Op::RemoveService { key, count } => {
                    maps.services.remove(key);
                    maps.check();
                    for slot in 1..=*count {
                        maps.services.remove(&key.with_slot(slot));
                    }
                }
                Op::RemoveRevNat(id) => {
                    maps.rev_nat.remove(id);
                }
                Op::RemoveBackend(id) => {
                    maps.backends.remove(id);
                }
            }
            maps.check();
        }
    }

    /// The planner's view with ids resolved, comparable across planners
    /// whose histories (and so ids) differ.
    fn resolved(p: &Planner) -> BTreeMap<Svc4Key, (u16, u32, Vec<Backend4>)> {
        p.frontends()
            .iter()
            .map(|(k, f)| {
                let backends = f
                    .backend_ids
                    .iter()
                    .map(|id| p.backend_refs[id].backend)
                    .collect();
                (*k, (f.flags, f.affinity_secs, backends))
            })
            .collect()
    }

    /// Internal bookkeeping agrees with the frontends it describes.
    fn assert_consistent(p: &Planner) {
        let mut refs: HashMap<u32, u32> = HashMap::new();
        for f in p.frontends().values() {
            for id in &f.backend_ids {
                *refs.entry(*id).or_default() += 1;
            }
        }
        for (id, b) in &p.backend_refs {
            assert_eq!(b.refs, refs.get(id).copied().unwrap_or(0), "refs of {id}");
            assert!(b.refs > 0, "backend {id} kept without users");
            assert_eq!(p.backends.get(&b.backend), Some(id));
        }
        assert_eq!(p.backends.len(), p.backend_refs.len());
        let ids: BTreeSet<u16> = p.frontends().values().map(|f| f.rev_nat_id).collect();
        assert_eq!(ids.len(), p.frontends().len(), "rev-NAT ids are unique");
        assert_eq!(p.rev_nat.used, ids.len(), "bitmap counts the ids in use");
        assert!(ids.iter().all(|id| p.rev_nat.is_used(*id)));
        assert!(p.unclaimed.is_empty());
        assert!(p.unreferenced.is_empty());
    }

    #[test]
    fn new_service_writes_backends_then_slots_then_entry() {
        let mut p = Planner::new();
        let ops = p
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                vec![ep(1, true), ep(2, false)],
            )]))
            .unwrap();
        assert!(matches!(ops[0], Op::UpsertBackend(_)));
        assert!(matches!(ops[1], Op::UpsertBackend(_)));
        assert!(matches!(
            ops[2],
            Op::UpsertService {
                previous_count: 0,
                ..
            }
        ));
        assert_eq!(ops.len(), 3);
        assert_eq!(p.frontends().len(), 1);
        apply_checked(&mut SimMaps::default(), &ops);
    }

    #[test]
    fn nodeport_gets_one_frontend_per_node_ip_with_its_own_rev_nat() {
        let mut d = state(vec![svc(
            "a",
            [10, 96, 0, 1],
            Some(30080),
            vec![ep(1, true)],
        )]);
        d.node_ips.push(Ipv4Addr::new(192, 168, 251, 1));
        let mut p = Planner::new();
        let ops = p.plan(&d).unwrap();
        assert_eq!(p.frontends().len(), 3);
        let ids: BTreeSet<u16> = p.frontends().values().map(|f| f.rev_nat_id).collect();
        assert_eq!(
            ids.len(),
            3,
            "each frontend reverse-NATs to its own address"
        );
        let np = p
            .frontends()
            .values()
            .filter(|f| f.flags & svc_flags::NODEPORT != 0)
            .count();
        assert_eq!(np, 2);
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, Op::UpsertBackend(_)))
                .count(),
            1,
            "backend shared"
        );
    }

    #[test]
    fn unchanged_state_plans_nothing_and_one_endpoint_change_plans_little() {
        let many: Vec<ServiceEntry> = (0..100u8)
            .map(|i| svc(&format!("s{i}"), [10, 96, 1, i], None, vec![ep(i, true)]))
            .collect();
        let mut p = Planner::new();
        let ops = p.plan(&state(many.clone())).unwrap();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &ops);
        let before = p.clone();
        let ops = p.plan(&state(many.clone())).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(p, before);

        let mut changed = many;
        changed[7].endpoints.push(ep(200, false));
        let ops = p.plan(&state(changed)).unwrap();
        assert_eq!(
            ops.len(),
            2,
            "one new backend, one service rewrite: {ops:?}"
        );
        apply_checked(&mut maps, &ops);
        assert_eq!(maps.resolved(), resolved(&p));
    }

    #[test]
    fn an_endpoint_node_name_alone_plans_nothing() {
        let mut a = svc("a", [10, 96, 0, 1], None, vec![ep(1, true)]);
        let mut p = Planner::new();
        p.plan(&state(vec![a.clone()])).unwrap();
        a.endpoints[0].node_name = Some("renamed".into());
        assert!(p.plan(&state(vec![a])).unwrap().is_empty());
    }

    #[test]
    fn removal_goes_entry_then_rev_nat_then_backends_and_ids_are_kept_while_used() {
        let a = svc("a", [10, 96, 0, 1], None, vec![ep(1, true), ep(2, true)]);
        let b = svc("b", [10, 96, 0, 2], None, vec![ep(2, true)]);
        let mut p = Planner::new();
        let ops = p.plan(&state(vec![a.clone(), b.clone()])).unwrap();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &ops);
        let shared_id = p.backends()[&backend_of(&ep(2, true), PROTO_TCP)];

        let ops = p.plan(&state(vec![b])).unwrap();
        apply_checked(&mut maps, &ops);
        assert!(matches!(ops[0], Op::RemoveService { count: 2, .. }));
        assert!(matches!(ops[1], Op::RemoveRevNat(_)));
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(ops[2], Op::RemoveBackend(_)));
        assert_eq!(
            p.backends()[&backend_of(&ep(2, true), PROTO_TCP)],
            shared_id
        );
        assert_consistent(&p);
    }

    #[test]
    fn a_frontend_replacing_another_in_one_plan_never_loses_its_rev_nat() {
        let mut p = Planner::new();
        let ops = p
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                vec![ep(1, true)],
            )]))
            .unwrap();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &ops);
        let ops = p
            .plan(&state(vec![svc(
                "b",
                [10, 96, 0, 2],
                None,
                vec![ep(1, true)],
            )]))
            .unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(
            maps.rev_nat.len(),
            1,
            "the new frontend's rev-NAT must survive"
        );
    }

    #[test]
    fn shrinking_keeps_every_step_resolvable() {
        let mut p = Planner::new();
        let ops = p
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                (1..=5).map(|i| ep(i, true)).collect(),
            )]))
            .unwrap();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &ops);
        let ops = p
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                vec![ep(5, true)],
            )]))
            .unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(maps.services.len(), 2, "entry + one slot remain");
        assert_eq!(maps.backends.len(), 1);
    }

    #[test]
    fn a_planner_rebuilt_from_maps_plans_nothing_for_the_same_state() {
        let d = state(vec![
            svc(
                "a",
                [10, 96, 0, 1],
                Some(30001),
                vec![ep(1, true), ep(2, false)],
            ),
            svc("b", [10, 96, 0, 2], None, vec![]),
        ]);
        let mut p = Planner::new();
        let ops = p.plan(&d).unwrap();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &ops);
        let mut rebuilt = Planner::from_maps(maps.services.clone(), maps.backends.clone());
        assert_eq!(rebuilt.frontends(), p.frontends());
        let ops = rebuilt.plan(&d).unwrap();
        assert!(
            ops.is_empty(),
            "restart must not rewrite adopted state: {ops:?}"
        );
        assert_consistent(&rebuilt);
        // And from then on it plans incrementally like the original.
        let mut one_less = d.clone();
        one_less.services.retain(|k, _| k.name == "a");
        let a = p.plan(&one_less).unwrap();
        let b = rebuilt.plan(&one_less).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn an_adopted_backend_no_slot_names_is_removed_by_the_first_plan() {
        let d = state(vec![svc("a", [10, 96, 0, 1], None, vec![ep(1, true)])]);
        let mut p = Planner::new();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &p.plan(&d).unwrap());
        // A sync that died between removing a frontend and its backend.
        maps.backends
            .insert(99, backend_of(&ep(9, true), PROTO_TCP));
        let mut adopted = Planner::from_maps(maps.services.clone(), maps.backends.clone());
        let ops = adopted.plan(&d).unwrap();
        assert_eq!(ops, vec![Op::RemoveBackend(99)]);
        apply_checked(&mut maps, &ops);
        assert_consistent(&adopted);
        assert!(adopted.plan(&d).unwrap().is_empty());
    }

    #[test]
    fn ids_still_named_by_flows_are_not_handed_out_again() {
        let d = state(vec![svc("a", [10, 96, 0, 1], None, vec![ep(1, true)])]);
        let mut p = Planner::new();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &p.plan(&d).unwrap());
        let mut adopted = Planner::from_maps(maps.services.clone(), maps.backends.clone());
        adopted.allocate_backend_ids_above(41);
        let mut grown = d.clone();
        for e in grown.services.values_mut() {
            e.endpoints.push(ep(2, true));
        }
        let ops = adopted.plan(&grown).unwrap();
        assert!(
            matches!(ops[0], Op::UpsertBackend(BackendSpec { id: 42, .. })),
            "{ops:?}"
        );
    }

    #[test]
    fn an_adopted_frontend_no_longer_wanted_is_removed_by_the_first_plan() {
        let d = state(vec![
            svc("a", [10, 96, 0, 1], None, vec![ep(1, true)]),
            svc("b", [10, 96, 0, 2], None, vec![ep(2, true)]),
        ]);
        let mut p = Planner::new();
        let mut maps = SimMaps::default();
        apply_checked(&mut maps, &p.plan(&d).unwrap());
        let mut rebuilt = Planner::from_maps(maps.services.clone(), maps.backends.clone());
        let mut only_a = d.clone();
        only_a.services.retain(|k, _| k.name == "a");
        let ops = rebuilt.plan(&only_a).unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(ops.len(), 3, "entry+slots, rev-NAT, backend of b: {ops:?}");
        assert_eq!(maps.resolved(), resolved(&rebuilt));
        assert_eq!(maps.rev_nat.len(), 1);
        assert_consistent(&rebuilt);
    }

    #[test]
    fn colliding_frontends_go_to_the_greatest_service_key_and_back() {
        let a = svc("a", [10, 96, 0, 1], None, vec![ep(1, true)]);
        let b = svc("b", [10, 96, 0, 1], None, vec![ep(2, true)]);
        let mut p = Planner::new();
        let mut maps = SimMaps::default();
        apply_checked(
            &mut maps,
            &p.plan(&state(vec![a.clone(), b.clone()])).unwrap(),
        );
        let key = *p.frontends().keys().next().unwrap();
        assert_eq!(
            resolved(&p)[&key].2,
            vec![backend_of(&ep(2, true), PROTO_TCP)]
        );
        // b goes: a, unchanged itself, takes the frontend over.
        apply_checked(&mut maps, &p.plan(&state(vec![a])).unwrap());
        assert_eq!(
            resolved(&p)[&key].2,
            vec![backend_of(&ep(1, true), PROTO_TCP)]
        );
        assert_eq!(maps.resolved(), resolved(&p));
        assert_consistent(&p);
    }

    #[test]
    fn changed_node_addresses_move_nodeport_frontends() {
        let s = svc("a", [10, 96, 0, 1], Some(30001), vec![ep(1, true)]);
        let mut p = Planner::new();
        let mut maps = SimMaps::default();
        let mut d = state(vec![s]);
        apply_checked(&mut maps, &p.plan(&d).unwrap());
        d.node_ips = vec![Ipv4Addr::new(192, 168, 250, 2)];
        let ops = p.plan(&d).unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(
            ops.iter()
                .filter(|o| !matches!(o, Op::RemoveRevNat(_)))
                .count(),
            2,
            "new NodePort frontend written, old one removed: {ops:?}"
        );
        assert_eq!(resolved(&p), resolved(&Planner::from_scratch(&d)));
    }

    #[test]
    fn a_failed_plan_leaves_the_planner_unchanged() {
        let mut p = Planner::new();
        p.plan(&state(vec![svc(
            "a",
            [10, 96, 0, 1],
            None,
            vec![ep(1, true)],
        )]))
        .unwrap();
        let before = p.clone();
        let too_many: Vec<Endpoint> = (0..=u32::from(u16::MAX))
            .map(|i| Endpoint {
                addr: Ipv4Addr::from(0x0a00_0000 + i),
                ..ep(0, true)
            })
            .collect();
        let err = p
            .plan(&state(vec![
                svc("a", [10, 96, 0, 9], None, vec![]),
                svc("b", [10, 96, 0, 2], None, too_many),
            ]))
            .unwrap_err();
        assert!(matches!(err, PlanError::TooManyBackends(_, 65_536)));
        assert_eq!(p, before);
    }

    #[test]
    fn terminating_fallback_and_local_policy_pick_the_right_backends() {
        let mut term = ep(3, false);
        term.ready = false;
        term.terminating = true;
        let mut s = svc("a", [10, 96, 0, 1], Some(30002), vec![term.clone()]);
        s.external_local = true;
        let mut p = Planner::new();
        p.plan(&state(vec![s])).unwrap();
        let cluster = p
            .frontends()
            .values()
            .find(|f| f.flags & svc_flags::NODEPORT == 0)
            .unwrap();
        assert_eq!(
            cluster.backend_ids.len(),
            1,
            "serving-terminating used when none ready"
        );
        let np = p
            .frontends()
            .values()
            .find(|f| f.flags & svc_flags::NODEPORT != 0)
            .unwrap();
        assert!(
            np.backend_ids.is_empty(),
            "Local policy: no local endpoint, so refuse"
        );
        assert!(np.flags & svc_flags::EXT_LOCAL != 0);
    }

    impl Planner {
        fn from_scratch(d: &DesiredState) -> Planner {
            let mut p = Planner::new();
            p.plan(d).expect("planning from scratch");
            p
        }
    }

    /// A small world where services collide on addresses and NodePorts,
    /// share endpoints and flip their conditions.
    fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
        (
            0u8..6,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(last, is_local, ready, serving, terminating)| Endpoint {
                addr: Ipv4Addr::new(10, 244, 0, last),
                port: 8080,
                node_name: None,
                is_local,
                ready,
                serving,
                terminating,
            })
    }

    fn arb_entry() -> impl Strategy<Value = ServiceEntry> {
        (
            0u8..6,
            0u8..3,
            prop_oneof![Just(80u16), Just(81)],
            any::<bool>(),
            prop_oneof![Just(None), Just(Some(30001u16)), Just(Some(80))],
            any::<bool>(),
            prop_oneof![Just(None), Just(Some(60u32))],
            prop::collection::vec(arb_endpoint(), 0..5),
        )
            .prop_map(
                |(name, ip, port, udp, node_port, external_local, affinity, mut eps)| {
                    eps.sort_by_key(|e| e.addr);
                    eps.dedup_by_key(|e| e.addr);
                    ServiceEntry {
                        key: ServicePortKey::new("default", format!("s{name}"), ""),
                        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, ip)),
                        port,
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                        node_port,
                        external_local,
                        internal_local: false,
                        affinity_timeout_secs: affinity,
                        endpoints: eps,
                    }
                },
            )
    }

    fn arb_state() -> impl Strategy<Value = DesiredState> {
        (
            prop::collection::vec(arb_entry(), 0..6),
            prop_oneof![
                Just(vec![Ipv4Addr::new(192, 168, 250, 1)]),
                Just(vec![
                    Ipv4Addr::new(192, 168, 250, 1),
                    Ipv4Addr::new(192, 168, 251, 1)
                ]),
                // A node address equal to a ClusterIP: keys collide.
                Just(vec![Ipv4Addr::new(10, 96, 0, 1)]),
            ],
        )
            .prop_map(|(entries, node_ips)| DesiredState {
                services: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
                node_name: "n1".into(),
                node_ips,
                cluster_cidr: None,
            })
    }

    proptest! {
        /// Planning only what changed, step after step, ends where planning
        /// the last state from scratch does; the maps the ops build match
        /// the planner's view at every step and never dangle; a planner
        /// rebuilt from those maps has nothing to write.
        #[test]
        fn incremental_planning_equals_planning_from_scratch(
            states in prop::collection::vec(arb_state(), 1..8)
        ) {
            let mut p = Planner::new();
            let mut maps = SimMaps::default();
            for d in &states {
                let ops = p.plan(d).expect("plan");
                apply_checked(&mut maps, &ops);
                assert_consistent(&p);
                prop_assert_eq!(resolved(&p), resolved(&Planner::from_scratch(d)));
                prop_assert_eq!(maps.resolved(), resolved(&p));
                let ids: BTreeSet<u16> =
                    p.frontends().values().map(|f| f.rev_nat_id).collect();
                prop_assert_eq!(maps.rev_nat.keys().copied().collect::<BTreeSet<_>>(), ids);
                for (k, f) in p.frontends() {
                    prop_assert_eq!(maps.rev_nat[&f.rev_nat_id], RevNat4::new(k.vip_be, k.port_be));
                }
                let used: BTreeSet<u32> =
                    p.frontends().values().flat_map(|f| f.backend_ids.clone()).collect();
                prop_assert_eq!(maps.backends.keys().copied().collect::<BTreeSet<_>>(), used);

                let mut adopted = Planner::from_maps(maps.services.clone(), maps.backends.clone());
                let ops = adopted.plan(d).expect("plan after adoption");
                prop_assert!(ops.is_empty(), "adoption rewrote {:?}", ops);
                assert_consistent(&adopted);
                prop_assert!(p.plan(d).expect("replan").is_empty());
            }
        }

        /// Planning with the caller's list of changed keys (exact, plus
        /// some unchanged ones) reaches what planning from scratch does,
        /// with maps that match and never dangle.
        #[test]
        fn planning_the_named_changes_equals_planning_from_scratch(
            states in prop::collection::vec(arb_state(), 1..8),
            extra in prop::collection::vec(any::<bool>(), 8),
        ) {
            let mut p = Planner::new();
            let mut maps = SimMaps::default();
            let mut previous = DesiredState {
                node_ips: states[0].node_ips.clone(),
                ..DesiredState::default()
            };
            for (i, d) in states.iter().enumerate() {
                let mut named: BTreeSet<ServicePortKey> =
                    crate::model::diff(&previous, d).keys().into_iter().cloned().collect();
                if extra[i] {
                    named.extend(d.services.keys().take(2).cloned());
                }
                let ops = p.plan_changed(d, &named).expect("plan");
                apply_checked(&mut maps, &ops);
                assert_consistent(&p);
                prop_assert_eq!(resolved(&p), resolved(&Planner::from_scratch(d)));
                prop_assert_eq!(maps.resolved(), resolved(&p));
                prop_assert!(p.plan(d).expect("replan").is_empty());
                previous = d.clone();
            }
        }

        /// A sync that dies part-way (only a prefix of its ops applied) is
        /// recovered from the maps, as the dataplane does: the rebuilt
        /// planner's next plan reaches the state planning from scratch
        /// reaches, removes leftover backends, and never dangles.
        #[test]
        fn a_planner_rebuilt_after_an_interrupted_sync_converges(
            states in prop::collection::vec(arb_state(), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut p = Planner::new();
            let mut maps = SimMaps::default();
            let (last, earlier) = states.split_last().expect("at least one state");
            for d in earlier {
                apply_checked(&mut maps, &p.plan(d).expect("plan"));
            }
            let ops = p.plan(last).expect("plan");
            apply_checked(&mut maps, &ops[..cut.index(ops.len() + 1)]);

            let mut adopted = Planner::from_maps(maps.services.clone(), maps.backends.clone());
            apply_checked(&mut maps, &adopted.plan(last).expect("plan after adoption"));
            assert_consistent(&adopted);
            prop_assert_eq!(resolved(&adopted), resolved(&Planner::from_scratch(last)));
            prop_assert_eq!(maps.resolved(), resolved(&adopted));
            let used: BTreeSet<u32> =
                adopted.frontends().values().flat_map(|f| f.backend_ids.clone()).collect();
            prop_assert_eq!(maps.backends.keys().copied().collect::<BTreeSet<_>>(), used);
            prop_assert!(adopted.plan(last).expect("replan").is_empty());
        }
    }
}
