//! Pure planning for the eBPF dataplane: from a [`DesiredState`] and what the
//! maps hold now, the ordered list of map operations that gets there while
//! never exposing a dangling id, and the state the maps will hold after.
//!
//! Identity: a backend is its [`Backend4`] value (address, port, protocol,
//! locality/terminating flags) and keeps its id while any frontend uses it,
//! so conntrack entries of live flows stay valid. A frontend is its slot-0
//! [`Svc4Key`] (ClusterIP:port, or node IP:NodePort) and owns one rev-NAT id
//! (replies are rewritten to exactly that frontend's address).
//!
//! The state can be rebuilt from the maps themselves
//! ([`Planner::from_maps`]), which is how a restarted proxy adopts pinned
//! state instead of rewriting it.

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::{
    Backend4, PROTO_TCP, PROTO_UDP, RevNat4, SCOPE_EXTERNAL, Svc4Key, Svc4Value, backend_flags,
    svc_flags,
};

use super::maps::{BackendSpec, ServiceSpec};
use crate::model::{DesiredState, Endpoint, Protocol, ServiceEntry};

/// One map operation, in the order it must be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    UpsertBackend(BackendSpec),
    UpsertService {
        spec: ServiceSpec,
        previous_count: u16,
    },
    RemoveService {
        key: Svc4Key,
        count: u16,
    },
    RemoveRevNat(u16),
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

/// Errors planning can hit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("all 65535 rev-NAT ids are in use: too many service frontends")]
    RevNatExhausted,
    #[error("backend ids exhausted")]
    BackendsExhausted,
    #[error("frontend {0} has {1} backends; at most 65535 fit")]
    TooManyBackends(String, usize),
}

/// The maps' contents as the planner tracks them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Planner {
    frontends: BTreeMap<Svc4Key, Frontend>,
    backends: BTreeMap<Backend4, u32>,
    next_backend_id: u32,
    /// Where the search for a free rev-NAT id starts: a rotating cursor
    /// keeps allocation O(1) amortised (scanning from 1 each time made
    /// programming 10k services quadratic).
    next_rev_nat: u16,
}

/// What a desired frontend wants, before ids are assigned.
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

fn frontends_of(
    entry: &ServiceEntry,
    node_ips: &[std::net::Ipv4Addr],
) -> Vec<(Svc4Key, WantedFrontend)> {
    let proto = proto_num(entry.protocol);
    let mut base_flags = 0;
    if entry.affinity_timeout_secs.is_some() {
        base_flags |= svc_flags::AFFINITY;
    }
    let affinity_secs = entry.affinity_timeout_secs.unwrap_or(0);
    let mut out = Vec::new();
    let mut push = |ip: std::net::Ipv4Addr, port: u16, flags: u16, eps: Vec<&Endpoint>| {
        let vip_be = u32::from_ne_bytes(ip.octets());
        let key = Svc4Key::new(vip_be, port.to_be(), proto, SCOPE_EXTERNAL, 0);
        out.push((
            key,
            WantedFrontend {
                rev_nat: RevNat4::new(vip_be, port.to_be()),
                flags,
                affinity_secs,
                backends: eps.into_iter().map(|ep| backend_of(ep, proto)).collect(),
            },
        ));
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

impl Planner {
    /// An empty planner (maps are empty).
    pub fn new() -> Self {
        Self {
            next_backend_id: 1,
            next_rev_nat: 1,
            ..Self::default()
        }
    }

    /// Rebuilds the planner from map dumps (a restart adopting pinned maps).
    /// Slots whose ids do not resolve are ignored; the next plan rewrites
    /// such a frontend.
    pub fn from_maps(
        services: impl IntoIterator<Item = (Svc4Key, Svc4Value)>,
        backends: impl IntoIterator<Item = (u32, Backend4)>,
    ) -> Self {
        let services: BTreeMap<Svc4Key, Svc4Value> = services.into_iter().collect();
        let mut planner = Self::new();
        for (id, b) in backends {
            planner.backends.insert(b, id);
            planner.next_backend_id = planner.next_backend_id.max(id.saturating_add(1));
        }
        for (key, entry) in services.iter().filter(|(k, _)| k.slot == 0) {
            let backend_ids = (1..=entry.count)
                .filter_map(|slot| services.get(&key.with_slot(slot)).map(|v| v.backend_id))
                .collect();
            planner.next_rev_nat = planner
                .next_rev_nat
                .max(entry.rev_nat_id.checked_add(1).unwrap_or(1));
            planner.frontends.insert(
                *key,
                Frontend {
                    rev_nat_id: entry.rev_nat_id,
                    flags: entry.flags,
                    affinity_secs: entry.backend_id,
                    backend_ids,
                },
            );
        }
        planner
    }

    /// Frontends as currently planned.
    pub fn frontends(&self) -> &BTreeMap<Svc4Key, Frontend> {
        &self.frontends
    }

    /// Backends as currently planned, by value.
    pub fn backends(&self) -> &BTreeMap<Backend4, u32> {
        &self.backends
    }

    /// Plans the operations from the current state to `desired` and returns
    /// them with the state they lead to. `self` is unchanged: the caller
    /// adopts the new state only once the operations are applied.
    pub fn plan(&self, desired: &DesiredState) -> Result<(Vec<Op>, Planner), PlanError> {
        let mut wanted: BTreeMap<Svc4Key, WantedFrontend> = BTreeMap::new();
        for entry in desired.services.values() {
            for (key, f) in frontends_of(entry, &desired.node_ips) {
                wanted.insert(key, f);
            }
        }

        let mut next = Planner {
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            next_backend_id: self.next_backend_id,
            next_rev_nat: self.next_rev_nat.max(1),
        };
        let mut backend_ops = Vec::new();
        let mut service_ops = Vec::new();
        // Ids of frontends removed by this very plan stay taken: their
        // RemoveRevNat runs after the upserts and must not hit a new owner.
        let mut used_rev_nat: BTreeSet<u16> =
            self.frontends.values().map(|f| f.rev_nat_id).collect();

        for (key, want) in &wanted {
            let mut ids = Vec::with_capacity(want.backends.len());
            for b in &want.backends {
                let id = match next.backends.get(b).or_else(|| self.backends.get(b)) {
                    Some(id) => *id,
                    None => {
                        let id = next.next_backend_id;
                        next.next_backend_id =
                            id.checked_add(1).ok_or(PlanError::BackendsExhausted)?;
                        backend_ops.push(Op::UpsertBackend(BackendSpec { id, backend: *b }));
                        id
                    }
                };
                next.backends.insert(*b, id);
                ids.push(id);
            }
            if ids.len() > usize::from(u16::MAX) {
                return Err(PlanError::TooManyBackends(format!("{key:?}"), ids.len()));
            }
            let old = self.frontends.get(key);
            let rev_nat_id = match old {
                Some(f) => f.rev_nat_id,
                None => {
                    let start = next.next_rev_nat;
                    let id = (start..=u16::MAX)
                        .chain(1..start)
                        .find(|id| !used_rev_nat.contains(id))
                        .ok_or(PlanError::RevNatExhausted)?;
                    used_rev_nat.insert(id);
                    next.next_rev_nat = id.checked_add(1).unwrap_or(1);
                    id
                }
            };
            let frontend = Frontend {
                rev_nat_id,
                flags: want.flags,
                affinity_secs: want.affinity_secs,
                backend_ids: ids,
            };
            if old != Some(&frontend) {
                service_ops.push(Op::UpsertService {
                    spec: ServiceSpec {
                        key: *key,
                        rev_nat_id,
                        rev_nat: want.rev_nat,
                        flags: frontend.flags,
                        affinity_secs: frontend.affinity_secs,
                        backend_ids: frontend.backend_ids.clone(),
                    },
                    // Bounded by the check above when it was planned.
                    previous_count: old.map_or(0, |f| f.backend_ids.len() as u16),
                });
            }
            next.frontends.insert(*key, frontend);
        }

        let mut removals = Vec::new();
        let mut rev_nat_removals = Vec::new();
        for (key, f) in &self.frontends {
            if !wanted.contains_key(key) {
                removals.push(Op::RemoveService {
                    key: *key,
                    count: f.backend_ids.len() as u16,
                });
                rev_nat_removals.push(Op::RemoveRevNat(f.rev_nat_id));
            }
        }
        let backend_removals = self
            .backends
            .iter()
            .filter(|(b, _)| !next.backends.contains_key(b))
            .map(|(_, id)| Op::RemoveBackend(*id));

        let ops = backend_ops
            .into_iter()
            .chain(service_ops)
            .chain(removals)
            .chain(rev_nat_removals)
            .chain(backend_removals)
            .collect();
        Ok((ops, next))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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

    /// Applies ops to a simulated map and asserts no step ever exposes an id
    /// that does not resolve: the invariant the kernel relies on.
    fn apply_checked(
        maps: &mut (
            BTreeMap<Svc4Key, Svc4Value>,
            BTreeMap<u32, Backend4>,
            BTreeSet<u16>,
        ),
        ops: &[Op],
    ) {
        let check = |m: &(
            BTreeMap<Svc4Key, Svc4Value>,
            BTreeMap<u32, Backend4>,
            BTreeSet<u16>,
        )| {
            for (k, v) in m.0.iter().filter(|(k, _)| k.slot == 0) {
                assert!(
                    m.2.contains(&v.rev_nat_id),
                    "entry {k:?} names missing rev-NAT"
                );
                for slot in 1..=v.count {
                    let s =
                        m.0.get(&k.with_slot(slot))
                            .unwrap_or_else(|| panic!("dangling slot {slot} of {k:?}"));
                    assert!(
                        m.1.contains_key(&s.backend_id),
                        "slot names missing backend {}",
                        s.backend_id
                    );
                }
            }
        };
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    maps.1.insert(b.id, b.backend);
                }
                Op::UpsertService {
                    spec,
                    previous_count,
                } => {
                    maps.2.insert(spec.rev_nat_id);
                    for (i, id) in spec.backend_ids.iter().enumerate() {
                        maps.0.insert(
                            spec.key.with_slot(i as u16 + 1),
                            Svc4Value::slot(*id, spec.rev_nat_id),
                        );
                        check(maps);
                    }
                    let n = spec.backend_ids.len() as u16;
                    maps.0.insert(
                        spec.key,
                        Svc4Value::service(n, spec.rev_nat_id, spec.flags, spec.affinity_secs),
                    );
                    check(maps);
                    for slot in n + 1..=*previous_count {
                        maps.0.remove(&spec.key.with_slot(slot));
                        check(maps);
                    }
                }
                Op::RemoveService { key, count } => {
                    maps.0.remove(key);
                    for slot in 1..=*count {
                        maps.0.remove(&key.with_slot(slot));
                    }
                }
                Op::RemoveRevNat(id) => {
                    maps.2.remove(id);
                }
                Op::RemoveBackend(id) => {
                    maps.1.remove(id);
                }
            }
            check(maps);
        }
    }

    #[test]
    fn new_service_writes_backends_then_slots_then_entry() {
        let p = Planner::new();
        let (ops, next) = p
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
        assert_eq!(next.frontends().len(), 1);
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
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
        let (ops, next) = Planner::new().plan(&d).unwrap();
        assert_eq!(next.frontends().len(), 3);
        let ids: BTreeSet<u16> = next.frontends().values().map(|f| f.rev_nat_id).collect();
        assert_eq!(
            ids.len(),
            3,
            "each frontend reverse-NATs to its own address"
        );
        let np = next
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
        let (ops, p1) = Planner::new().plan(&state(many.clone())).unwrap();
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
        let (ops, p2) = p1.plan(&state(many.clone())).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(p1, p2);

        let mut changed = many;
        changed[7].endpoints.push(ep(200, false));
        let (ops, _) = p2.plan(&state(changed)).unwrap();
        assert_eq!(
            ops.len(),
            2,
            "one new backend, one service rewrite: {ops:?}"
        );
        apply_checked(&mut maps, &ops);
    }

    #[test]
    fn removal_goes_entry_then_rev_nat_then_backends_and_ids_are_kept_while_used() {
        let a = svc("a", [10, 96, 0, 1], None, vec![ep(1, true), ep(2, true)]);
        let b = svc("b", [10, 96, 0, 2], None, vec![ep(2, true)]);
        let (ops, p1) = Planner::new()
            .plan(&state(vec![a.clone(), b.clone()]))
            .unwrap();
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
        let shared_id = p1.backends()[&backend_of(&ep(2, true), PROTO_TCP)];

        let (ops, p2) = p1.plan(&state(vec![b])).unwrap();
        apply_checked(&mut maps, &ops);
        assert!(matches!(ops[0], Op::RemoveService { count: 2, .. }));
        assert!(matches!(ops[1], Op::RemoveRevNat(_)));
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(ops[2], Op::RemoveBackend(_)));
        assert_eq!(
            p2.backends()[&backend_of(&ep(2, true), PROTO_TCP)],
            shared_id
        );
    }

    #[test]
    fn a_frontend_replacing_another_in_one_plan_never_loses_its_rev_nat() {
        let (ops, p1) = Planner::new()
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                vec![ep(1, true)],
            )]))
            .unwrap();
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
        let (ops, _) = p1
            .plan(&state(vec![svc(
                "b",
                [10, 96, 0, 2],
                None,
                vec![ep(1, true)],
            )]))
            .unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(maps.2.len(), 1, "the new frontend's rev-NAT must survive");
    }

    #[test]
    fn shrinking_keeps_every_step_resolvable() {
        let (ops, p1) = Planner::new()
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                (1..=5).map(|i| ep(i, true)).collect(),
            )]))
            .unwrap();
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
        let (ops, _) = p1
            .plan(&state(vec![svc(
                "a",
                [10, 96, 0, 1],
                None,
                vec![ep(5, true)],
            )]))
            .unwrap();
        apply_checked(&mut maps, &ops);
        assert_eq!(maps.0.len(), 2, "entry + one slot remain");
        assert_eq!(maps.1.len(), 1);
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
        let (ops, p1) = Planner::new().plan(&d).unwrap();
        let mut maps = Default::default();
        apply_checked(&mut maps, &ops);
        let rebuilt = Planner::from_maps(maps.0.clone(), maps.1.clone());
        assert_eq!(rebuilt.frontends(), p1.frontends());
        let (ops, _) = rebuilt.plan(&d).unwrap();
        assert!(
            ops.is_empty(),
            "restart must not rewrite adopted state: {ops:?}"
        );
    }

    #[test]
    fn terminating_fallback_and_local_policy_pick_the_right_backends() {
        let mut term = ep(3, false);
        term.ready = false;
        term.terminating = true;
        let mut s = svc("a", [10, 96, 0, 1], Some(30002), vec![term.clone()]);
        s.external_local = true;
        let (_, p) = Planner::new().plan(&state(vec![s])).unwrap();
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
}
