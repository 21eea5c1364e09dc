//! The desired states the bench programs (pure): the measured service plus
//! filler services at unused addresses, and the large state of the
//! programming-time case.
//!
//! Filler keys alternate between an `a-` and a `z-` prefix so the measured
//! service (`m-target`) sits in the middle of key order at every scale. The
//! iptables dispatch chain lists services in key order and is matched
//! linearly, so this is the average position a service has there, neither
//! the best (first) nor the worst (last) case.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skiff_proxy::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};

/// Namespace of every bench service.
pub const NAMESPACE: &str = "bench";
/// Port every bench service listens on.
pub const SERVICE_PORT: u16 = 80;
/// Port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;
/// ClusterIP of the measured service.
pub const MEASURED_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The node's address facing the client namespace.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

/// Pod CIDR of the bench cluster: client and backends are inside it, so
/// the iptables rules do not masquerade pod-to-service traffic (as with
/// kube-proxy's `--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// First filler ClusterIP (10.97.0.1); 65,534 fit below 10.98.0.0.
const FILLER_VIP_BASE: u32 = 0x0A61_0001;
/// First unused endpoint address for fillers (10.250.0.1): nothing routes
/// there and nothing ever connects to it.
const FILLER_EP_BASE: u32 = 0x0AFA_0001;
/// First endpoint address of the programming case (10.128.0.1): room for
/// 2^22 distinct endpoints.
const PROGRAM_EP_BASE: u32 = 0x0A80_0001;
/// Replacement addresses for the one-endpoint change (10.254.0.1, .2).
const CHANGED_EP_BASE: u32 = 0x0AFE_0001;
/// Most services the address plan holds (filler ClusterIPs in 10.97/16).
pub const MAX_SERVICES: usize = 65_534;

fn key_of_filler(i: usize) -> ServicePortKey {
    let prefix = if i.is_multiple_of(2) { "a" } else { "z" };
    ServicePortKey::new(NAMESPACE, format!("{prefix}-{i:06}"), "http")
}

fn endpoint(addr: Ipv4Addr) -> Endpoint {
    Endpoint {
        addr,
        port: BACKEND_PORT,
        node_name: Some("bench-node".into()),
        is_local: true,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn service(key: ServicePortKey, vip: Ipv4Addr, endpoints: Vec<Endpoint>) -> ServiceEntry {
    ServiceEntry {
        key,
        cluster_ip: Some(vip),
        port: SERVICE_PORT,
        protocol: Protocol::Tcp,
        node_port: None,
        external_local: false,
        internal_local: false,
        affinity_timeout_secs: None,
        endpoints,
    }
}

fn base_state() -> DesiredState {
    DesiredState {
        services: BTreeMap::new(),
        node_name: "bench-node".into(),
        node_ips: vec![NODE_IP],
        cluster_cidr: Some(CLUSTER_CIDR.parse().expect("CLUSTER_CIDR is a valid CIDR")),
    }
}

/// The key of the measured service.
pub fn measured_key() -> ServicePortKey {
    ServicePortKey::new(NAMESPACE, "m-target", "http")
}

/// `total` services: the measured one (ClusterIP [`MEASURED_IP`], the given
/// backends) and `total - 1` fillers with one unused endpoint each.
/// `total` is clamped to `1..=MAX_SERVICES`.
pub fn traffic(total: usize, backends: &[Ipv4Addr]) -> DesiredState {
    let total = total.clamp(1, MAX_SERVICES);
    let mut state = base_state();
    let measured = service(
        measured_key(),
        MEASURED_IP,
        backends.iter().copied().map(endpoint).collect(),
    );
    state.services.insert(measured.key.clone(), measured);
    for i in 0..total - 1 {
        let offset = i as u32;
        let entry = service(
            key_of_filler(i),
            Ipv4Addr::from(FILLER_VIP_BASE + offset),
            vec![endpoint(Ipv4Addr::from(FILLER_EP_BASE + offset))],
        );
        state.services.insert(entry.key.clone(), entry);
    }
    state
}

/// `services` services with `endpoints` distinct unused endpoints each.
/// `services` is clamped to `1..=MAX_SERVICES`.
pub fn program(services: usize, endpoints: usize) -> DesiredState {
    let services = services.clamp(1, MAX_SERVICES);
    let mut state = base_state();
    for i in 0..services {
        let eps = (0..endpoints)
            .map(|j| endpoint(Ipv4Addr::from(PROGRAM_EP_BASE + (i * endpoints + j) as u32)))
            .collect();
        let entry = service(
            key_of_filler(i),
            Ipv4Addr::from(FILLER_VIP_BASE + i as u32),
            eps,
        );
        state.services.insert(entry.key.clone(), entry);
    }
    state
}

/// `state` with the first endpoint of its middle service replaced by one
/// of two spare addresses (`variant` 0 or 1): two variants let repeated
/// changes alternate without ever repeating the previous state.
pub fn with_one_endpoint_changed(state: &DesiredState, variant: usize) -> DesiredState {
    let mut next = state.clone();
    let middle = next.services.len() / 2;
    if let Some(entry) = next.services.values_mut().nth(middle)
        && let Some(first) = entry.endpoints.first_mut()
    {
        first.addr = Ipv4Addr::from(CHANGED_EP_BASE + (variant % 2) as u32);
        entry.endpoints.sort();
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proxy::model::diff;

    #[test]
    fn measured_service_is_in_the_middle_of_key_order() {
        let backends = [Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3)];
        for total in [1, 2, 3, 1000, 1001] {
            let state = traffic(total, &backends);
            assert_eq!(state.services.len(), total);
            let pos = state
                .services
                .keys()
                .position(|k| *k == measured_key())
                .expect("measured service present");
            let before = pos;
            let after = total - 1 - pos;
            assert!(before.abs_diff(after) <= 1, "{total}: {before} vs {after}");
            let m = &state.services[&measured_key()];
            assert_eq!(m.cluster_ip, Some(MEASURED_IP));
            assert_eq!(
                m.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
                backends
            );
        }
    }

    #[test]
    fn growing_the_traffic_state_only_adds_fillers() {
        let small = traffic(10, &[Ipv4Addr::new(10, 244, 1, 2)]);
        let large = traffic(100, &[Ipv4Addr::new(10, 244, 1, 2)]);
        let changes = diff(&small, &large);
        assert_eq!(changes.added.len(), 90);
        assert!(changes.updated.is_empty() && changes.removed.is_empty());
    }

    #[test]
    fn filler_addresses_are_distinct_and_clear_of_the_measured_service() {
        let state = traffic(MAX_SERVICES, &[Ipv4Addr::new(10, 244, 1, 2)]);
        let vips: std::collections::BTreeSet<_> = state
            .services
            .values()
            .filter_map(|e| e.cluster_ip)
            .collect();
        assert_eq!(vips.len(), MAX_SERVICES);
        let last = Ipv4Addr::from(FILLER_VIP_BASE + MAX_SERVICES as u32 - 2);
        assert!(vips.contains(&last) && last < Ipv4Addr::new(10, 98, 0, 0));
    }

    #[test]
    fn program_state_has_distinct_endpoints() {
        let state = program(100, 10);
        let eps: std::collections::BTreeSet<_> = state
            .services
            .values()
            .flat_map(|e| e.endpoints.iter().map(|ep| ep.addr))
            .collect();
        assert_eq!(eps.len(), 1000);
    }

    #[test]
    fn one_endpoint_change_touches_exactly_one_service() {
        let state = program(100, 10);
        let a = with_one_endpoint_changed(&state, 0);
        let b = with_one_endpoint_changed(&state, 1);
        for (from, to) in [(&state, &a), (&a, &b), (&b, &a)] {
            let changes = diff(from, to);
            assert_eq!(changes.updated.len(), 1, "{changes:?}");
            assert_eq!(changes.len(), 1);
        }
    }
}
