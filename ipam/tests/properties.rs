//! Model-based property tests: random operation sequences run against each
//! allocator and against a plain model (a set or map of held values plus
//! the rotating cursor). After every step the allocator must agree with the
//! model, so these prove: no value is handed out twice while held, released
//! values can be reused, dynamic allocation follows the rotating cursor,
//! counts stay consistent, errors are the right variants, and
//! snapshot → JSON → restore yields an identical allocator that goes on
//! behaving identically.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use proptest::prelude::*;
use skiff_ipam::{
    IpamError, NodeCidrAllocator, NodeCidrSnapshot, PodIpAllocator, PodIpSnapshot, PortAllocator,
    PortRange, PortSnapshot, ServiceIpAllocator, ServiceIpSnapshot,
};

/// What the rotating cursor should pick: the first free index in
/// `cursor..end`, else in `start..cursor`.
fn predict_next(held: &BTreeSet<u128>, cursor: u128, start: u128, end: u128) -> Option<u128> {
    (cursor..end)
        .chain(start..cursor)
        .find(|i| !held.contains(i))
}

/// The cursor after handing out `i` from `start..end`.
fn advance(i: u128, start: u128, end: u128) -> u128 {
    if i + 1 >= end { start } else { i + 1 }
}

fn nth(cidr: IpNetwork, offset: u128) -> IpAddr {
    match cidr {
        IpNetwork::V4(n) => IpAddr::V4((u32::from(n.network()) + offset as u32).into()),
        IpNetwork::V6(n) => IpAddr::V6((u128::from(n.network()) + offset).into()),
    }
}

fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(snap: &T) -> T {
    let text = serde_json::to_string(snap).expect("snapshot serialises");
    serde_json::from_str(&text).expect("snapshot deserialises")
}

#[derive(Debug, Clone)]
enum ValueOp {
    Next,
    /// Offset from the start of the range; may fall outside it.
    Specific(u128),
    Release(u128),
    /// Release one of the held values (picked by index), so releases hit.
    ReleaseHeld(prop::sample::Index),
    RoundTrip,
}

fn value_ops(max_offset: u128) -> impl Strategy<Value = Vec<ValueOp>> {
    let op = prop_oneof![
        4 => Just(ValueOp::Next),
        2 => (0..max_offset).prop_map(ValueOp::Specific),
        1 => (0..max_offset).prop_map(ValueOp::Release),
        2 => any::<prop::sample::Index>().prop_map(ValueOp::ReleaseHeld),
        1 => Just(ValueOp::RoundTrip),
    ];
    prop::collection::vec(op, 0..200)
}

fn small_service_cidr() -> impl Strategy<Value = IpNetwork> {
    prop_oneof![
        Just("10.0.0.0/27".parse().expect("cidr")),
        Just("10.0.0.0/30".parse().expect("cidr")),
        Just("fd00:10::/123".parse().expect("cidr")),
    ]
}

proptest! {
    #[test]
    fn service_ips_match_the_model(cidr in small_service_cidr(), ops in value_ops(40)) {
        let mut a = ServiceIpAllocator::new(cidr).expect("valid cidr");
        let size = 1u128 << (if cidr.is_ipv4() { 32 } else { 128 } - u32::from(cidr.prefix()));
        // Offsets: 0 network, 1 reserved first, 2.. dynamic, last is the
        // IPv4 broadcast.
        let end = if cidr.is_ipv4() { size - 1 } else { size };
        let (dyn_start, dyn_end) = (2u128, end);
        let mut held: BTreeSet<u128> = BTreeSet::new();
        let mut cursor = dyn_start;

        for op in ops {
            match op {
                ValueOp::Next => {
                    let dyn_held: BTreeSet<u128> = held.iter().copied().filter(|&o| o >= dyn_start).collect();
                    match predict_next(&dyn_held, cursor, dyn_start, dyn_end) {
                        Some(o) => {
                            let got = a.allocate_next().expect("free address exists");
                            prop_assert_eq!(got, nth(cidr, o));
                            prop_assert!(held.insert(o), "handed out a held address");
                            cursor = advance(o, dyn_start, dyn_end);
                        }
                        None => prop_assert_eq!(a.allocate_next(), Err(IpamError::Exhausted { cidr })),
                    }
                }
                ValueOp::Specific(o) => {
                    let ip = nth(cidr, o);
                    let got = a.allocate_specific(ip);
                    if o >= size {
                        prop_assert_eq!(got, Err(IpamError::OutOfRange { ip, cidr }));
                    } else if o == 0 || o >= end {
                        prop_assert_eq!(got, Err(IpamError::ReservedAddress { ip, cidr }));
                    } else if held.contains(&o) {
                        prop_assert_eq!(got, Err(IpamError::AlreadyAllocated { ip }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        held.insert(o);
                    }
                }
                ValueOp::Release(o) => {
                    let ip = nth(cidr, o);
                    let got = a.release(ip);
                    if o >= size {
                        prop_assert_eq!(got, Err(IpamError::OutOfRange { ip, cidr }));
                    } else if o == 0 || o >= end {
                        prop_assert_eq!(got, Err(IpamError::ReservedAddress { ip, cidr }));
                    } else {
                        prop_assert_eq!(got, Ok(held.remove(&o)));
                    }
                }
                ValueOp::ReleaseHeld(pick) => {
                    if held.is_empty() {
                        continue;
                    }
                    let o = *held.iter().nth(pick.index(held.len())).expect("index in bounds");
                    let ip = nth(cidr, o);
                    prop_assert_eq!(a.release(ip), Ok(true));
                    held.remove(&o);
                    // A released address can be taken again straight away.
                    let mut probe = a.clone();
                    prop_assert_eq!(probe.allocate_specific(ip), Ok(()));
                }
                ValueOp::RoundTrip => {
                    let snap: ServiceIpSnapshot = json_round_trip(&a.snapshot());
                    let rebuilt = ServiceIpAllocator::from_snapshot(&snap).expect("restores");
                    prop_assert_eq!(&rebuilt, &a);
                    let mut restored = ServiceIpAllocator::new(cidr).expect("valid cidr");
                    restored.restore(&snap).expect("restores");
                    prop_assert_eq!(&restored, &a);
                    // Carry on with the restored copy: it must behave alike.
                    a = restored;
                }
            }
            let all: Vec<IpAddr> = held.iter().map(|&o| nth(cidr, o)).collect();
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), all.clone());
            prop_assert!(all.iter().all(|&ip| a.is_allocated(ip)));
            prop_assert_eq!(a.used(), held.len());
            let dyn_used = held.iter().filter(|&&o| o >= dyn_start).count();
            prop_assert_eq!(a.free() as u128, (dyn_end - dyn_start) - dyn_used as u128);
            prop_assert_eq!(a.capacity() as u128, end - 1);
        }
    }

    #[test]
    fn ports_match_the_model(len in 1u16..40, ops in value_ops(50)) {
        let range = PortRange::new(30000, 30000 + len - 1).expect("valid range");
        let mut a = PortAllocator::new(range);
        let end = u128::from(len);
        let mut held: BTreeSet<u128> = BTreeSet::new();
        let mut cursor = 0u128;
        // Offsets below 5 land under the range to exercise PortOutOfRange.
        let port_of = |o: u128| 29995 + o as u16;
        let in_range = |o: u128| (5..5 + end).contains(&o);

        for op in ops {
            match op {
                ValueOp::Next => match predict_next(&held, cursor, 0, end) {
                    Some(o) => {
                        prop_assert_eq!(a.allocate_next(), Ok(30000 + o as u16));
                        prop_assert!(held.insert(o));
                        cursor = advance(o, 0, end);
                    }
                    None => prop_assert_eq!(a.allocate_next(), Err(IpamError::PortsExhausted { range })),
                },
                ValueOp::Specific(o) => {
                    let port = port_of(o);
                    let got = a.allocate_specific(port);
                    if !in_range(o) {
                        prop_assert_eq!(got, Err(IpamError::PortOutOfRange { port, range }));
                    } else if !held.insert(o - 5) {
                        prop_assert_eq!(got, Err(IpamError::PortAlreadyAllocated { port }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                    }
                }
                ValueOp::Release(o) => {
                    let port = port_of(o);
                    let got = a.release(port);
                    if in_range(o) {
                        prop_assert_eq!(got, Ok(held.remove(&(o - 5))));
                    } else {
                        prop_assert_eq!(got, Err(IpamError::PortOutOfRange { port, range }));
                    }
                }
                ValueOp::ReleaseHeld(pick) => {
                    if held.is_empty() {
                        continue;
                    }
                    let o = *held.iter().nth(pick.index(held.len())).expect("index in bounds");
                    let port = 30000 + o as u16;
                    prop_assert_eq!(a.release(port), Ok(true));
                    held.remove(&o);
                    let mut probe = a.clone();
                    prop_assert_eq!(probe.allocate_specific(port), Ok(()));
                }
                ValueOp::RoundTrip => {
                    let snap: PortSnapshot = json_round_trip(&a.snapshot());
                    prop_assert_eq!(&PortAllocator::from_snapshot(&snap).expect("restores"), &a);
                    let mut restored = PortAllocator::new(range);
                    restored.restore(&snap).expect("restores");
                    prop_assert_eq!(&restored, &a);
                    a = restored;
                }
            }
            let all: Vec<u16> = held.iter().map(|&o| 30000 + o as u16).collect();
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), all.clone());
            prop_assert!(all.iter().all(|&p| a.is_allocated(p)));
            prop_assert_eq!(a.used(), held.len());
            prop_assert_eq!(a.used() + a.free(), a.capacity());
            prop_assert_eq!(a.capacity(), usize::from(len));
        }
    }
}

#[derive(Debug, Clone)]
enum KeyedOp {
    /// Allocate for key `k`.
    Allocate(u8),
    /// Give key `k` the value at offset/index `i` (may be invalid).
    Specific(u8, u128),
    Release(u8),
    RoundTrip,
}

fn keyed_ops(keys: u8, max_index: u128) -> impl Strategy<Value = Vec<KeyedOp>> {
    let op = prop_oneof![
        4 => (0..keys).prop_map(KeyedOp::Allocate),
        2 => (0..keys, 0..max_index).prop_map(|(k, i)| KeyedOp::Specific(k, i)),
        3 => (0..keys).prop_map(KeyedOp::Release),
        1 => Just(KeyedOp::RoundTrip),
    ];
    prop::collection::vec(op, 0..200)
}

fn key(k: u8) -> String {
    format!("key-{k}")
}

/// Checks that `pairs` (as the allocator lists them) equal the model, and
/// that no value appears twice.
fn check_keyed<V: Ord + Copy + std::fmt::Debug>(
    listed: Vec<(String, V)>,
    model: &BTreeMap<String, V>,
) -> Result<(), TestCaseError> {
    let expected: Vec<(String, V)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
    prop_assert_eq!(&listed, &expected);
    let distinct: BTreeSet<V> = listed.iter().map(|(_, v)| *v).collect();
    prop_assert_eq!(distinct.len(), listed.len(), "a value is held by two keys");
    Ok(())
}

fn small_node_split() -> impl Strategy<Value = (IpNetwork, u8)> {
    prop_oneof![
        Just(("10.0.0.0/24".parse().expect("cidr"), 29)),
        Just(("10.0.0.0/24".parse().expect("cidr"), 24)),
        Just(("fd00::/116".parse().expect("cidr"), 120)),
    ]
}

proptest! {
    #[test]
    fn node_cidrs_match_the_model((cluster, prefix) in small_node_split(), ops in keyed_ops(40, 40)) {
        let mut a = NodeCidrAllocator::new(cluster, prefix).expect("valid split");
        let max = if cluster.is_ipv4() { 32 } else { 128 };
        let count = 1u128 << (prefix - cluster.prefix());
        let subnet = |i: u128| {
            IpNetwork::new(nth(cluster, i << (max - prefix)), prefix).expect("subnet")
        };
        let mut model: BTreeMap<String, u128> = BTreeMap::new();
        let mut cursor = 0u128;

        for op in ops {
            match op {
                KeyedOp::Allocate(k) => {
                    let node = key(k);
                    if let Some(&i) = model.get(&node) {
                        prop_assert_eq!(a.allocate(&node), Ok(subnet(i)), "idempotent");
                        continue;
                    }
                    let held: BTreeSet<u128> = model.values().copied().collect();
                    match predict_next(&held, cursor, 0, count) {
                        Some(i) => {
                            prop_assert_eq!(a.allocate(&node), Ok(subnet(i)));
                            model.insert(node, i);
                            cursor = advance(i, 0, count);
                        }
                        None => prop_assert_eq!(a.allocate(&node), Err(IpamError::Exhausted { cidr: cluster })),
                    }
                }
                KeyedOp::Specific(k, i) => {
                    let node = key(k);
                    // Indexes past the cluster CIDR name subnets outside it.
                    let want = subnet(i);
                    let got = a.allocate_specific(node.clone(), want);
                    let holder = model.iter().find(|(_, v)| **v == i).map(|(n, _)| n.clone());
                    if i >= count {
                        prop_assert_eq!(got, Err(IpamError::NotANodeCidr { cidr: want, cluster, node_prefix: prefix }));
                    } else if let Some(&mine) = model.get(&node) {
                        if mine == i {
                            prop_assert_eq!(got, Ok(()));
                        } else {
                            prop_assert_eq!(got, Err(IpamError::NodeHasOtherCidr { node, cidr: subnet(mine) }));
                        }
                    } else if let Some(other) = holder {
                        prop_assert_eq!(got, Err(IpamError::CidrAlreadyAllocated { cidr: want, node: other }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        model.insert(node, i);
                    }
                }
                KeyedOp::Release(k) => {
                    let node = key(k);
                    let expected = model.remove(&node).map(subnet);
                    prop_assert_eq!(a.release(&node), expected);
                    if let Some(freed) = expected {
                        // A released CIDR can be given out again.
                        let mut probe = a.clone();
                        prop_assert_eq!(probe.allocate_specific("probe", freed), Ok(()));
                    }
                }
                KeyedOp::RoundTrip => {
                    let snap: NodeCidrSnapshot = json_round_trip(&a.snapshot());
                    prop_assert_eq!(&NodeCidrAllocator::from_snapshot(&snap).expect("restores"), &a);
                    let mut restored = NodeCidrAllocator::new(cluster, prefix).expect("valid split");
                    restored.restore(&snap).expect("restores");
                    prop_assert_eq!(&restored, &a);
                    a = restored;
                }
            }
            let model_cidrs: BTreeMap<String, IpNetwork> =
                model.iter().map(|(k, &i)| (k.clone(), subnet(i))).collect();
            check_keyed(a.iter().map(|(n, c)| (n.to_owned(), c)).collect(), &model_cidrs)?;
            for (node, cidr) in &model_cidrs {
                prop_assert_eq!(a.get(node), Some(*cidr));
                prop_assert_eq!(a.node_of(*cidr), Some(node.as_str()));
            }
            prop_assert_eq!(a.used(), model.len());
            prop_assert_eq!(a.used() + a.free(), a.capacity());
            prop_assert_eq!(a.capacity() as u128, count);
        }
    }

    #[test]
    fn pod_ips_match_the_model(
        cidr in prop_oneof![
            Just("10.0.0.0/27".parse::<IpNetwork>().expect("cidr")),
            Just("10.0.0.0/30".parse::<IpNetwork>().expect("cidr")),
            Just("fd00::/123".parse::<IpNetwork>().expect("cidr")),
        ],
        ops in keyed_ops(40, 40),
    ) {
        let mut a = PodIpAllocator::new(cidr).expect("valid cidr");
        let size = 1u128 << (if cidr.is_ipv4() { 32 } else { 128 } - u32::from(cidr.prefix()));
        // Offsets: 0 network, 1 gateway, 2.. pods, last is the IPv4
        // broadcast.
        let end = if cidr.is_ipv4() { size - 1 } else { size };
        prop_assert_eq!(a.gateway(), nth(cidr, 1));
        let mut model: BTreeMap<String, u128> = BTreeMap::new();
        let mut cursor = 2u128;

        for op in ops {
            match op {
                KeyedOp::Allocate(k) => {
                    let owner = key(k);
                    if let Some(&o) = model.get(&owner) {
                        prop_assert_eq!(a.allocate(&owner), Ok(nth(cidr, o)), "idempotent");
                        continue;
                    }
                    let held: BTreeSet<u128> = model.values().copied().collect();
                    match predict_next(&held, cursor, 2, end) {
                        Some(o) => {
                            prop_assert_eq!(a.allocate(&owner), Ok(nth(cidr, o)));
                            model.insert(owner, o);
                            cursor = advance(o, 2, end);
                        }
                        None => prop_assert_eq!(a.allocate(&owner), Err(IpamError::Exhausted { cidr })),
                    }
                }
                KeyedOp::Specific(k, o) => {
                    let owner = key(k);
                    let ip = nth(cidr, o);
                    let got = a.allocate_specific(owner.clone(), ip);
                    let taken = model.values().any(|&v| v == o);
                    if o >= size {
                        prop_assert_eq!(got, Err(IpamError::OutOfRange { ip, cidr }));
                    } else if o < 2 || o >= end {
                        prop_assert_eq!(got, Err(IpamError::ReservedAddress { ip, cidr }));
                    } else if let Some(&mine) = model.get(&owner) {
                        if mine == o {
                            prop_assert_eq!(got, Ok(()));
                        } else {
                            prop_assert_eq!(got, Err(IpamError::OwnerHasOtherIp { owner, ip: nth(cidr, mine) }));
                        }
                    } else if taken {
                        prop_assert_eq!(got, Err(IpamError::AlreadyAllocated { ip }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        model.insert(owner, o);
                    }
                }
                KeyedOp::Release(k) => {
                    let owner = key(k);
                    let expected = model.remove(&owner).map(|o| nth(cidr, o));
                    prop_assert_eq!(a.release(&owner), expected);
                    if let Some(freed) = expected {
                        prop_assert_eq!(a.owner_of(freed), None);
                        let mut probe = a.clone();
                        prop_assert_eq!(probe.allocate_specific("probe", freed), Ok(()));
                    }
                }
                KeyedOp::RoundTrip => {
                    let snap: PodIpSnapshot = json_round_trip(&a.snapshot());
                    prop_assert_eq!(&PodIpAllocator::from_snapshot(&snap).expect("restores"), &a);
                    let mut restored = PodIpAllocator::new(cidr).expect("valid cidr");
                    restored.restore(&snap).expect("restores");
                    prop_assert_eq!(&restored, &a);
                    a = restored;
                }
            }
            let model_ips: BTreeMap<String, IpAddr> =
                model.iter().map(|(k, &o)| (k.clone(), nth(cidr, o))).collect();
            check_keyed(a.iter().map(|(o, ip)| (o.to_owned(), ip)).collect(), &model_ips)?;
            for (owner, ip) in &model_ips {
                prop_assert_eq!(a.get(owner), Some(*ip));
                prop_assert_eq!(a.owner_of(*ip), Some(owner.as_str()));
                prop_assert!(a.is_allocated(*ip));
            }
            prop_assert!(!a.is_allocated(a.gateway()));
            prop_assert_eq!(a.used(), model.len());
            prop_assert_eq!(a.used() + a.free(), a.capacity());
            prop_assert_eq!(a.capacity() as u128, end - 2);
        }
    }
}

/// A restart in miniature: allocate, persist as JSON, rebuild from JSON in a
/// "new process", keep allocating; nothing held before is handed out again.
#[test]
fn no_double_allocation_across_restart() {
    let mut before = ServiceIpAllocator::default();
    before
        .allocate_specific(before.reserved_first())
        .expect("reserved first is free");
    let held: Vec<IpAddr> = (0..1000)
        .map(|_| before.allocate_next().expect("space"))
        .collect();
    let persisted = serde_json::to_string(&before.snapshot()).expect("serialises");

    let snapshot: ServiceIpSnapshot = serde_json::from_str(&persisted).expect("deserialises");
    let mut after = ServiceIpAllocator::default();
    after.restore(&snapshot).expect("same cidr");
    for ip in &held {
        assert!(after.is_allocated(*ip));
        assert_eq!(
            after.allocate_specific(*ip),
            Err(IpamError::AlreadyAllocated { ip: *ip })
        );
    }
    let fresh: BTreeSet<IpAddr> = (0..1000)
        .map(|_| after.allocate_next().expect("space"))
        .collect();
    assert_eq!(fresh.len(), 1000);
    assert!(fresh.iter().all(|ip| !held.contains(ip)));
    assert!(!fresh.contains(&after.reserved_first()));
}
