//! Which UDP conntrack entries go stale when services change (pure).
//!
//! TCP needs nothing: a removed endpoint's connections break on their own
//! and new ones pass through nat again. A UDP "connection" lives as long as
//! packets keep flowing, so without cleanup a client that keeps sending
//! from one socket is stuck on a removed endpoint (kube-proxy deletes the
//! same entries).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::model::{DesiredState, Endpoint, Protocol, ServiceEntry, ServicePortKey};

/// A set of UDP conntrack entries to delete, as `conntrack -D` filters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StaleFlow {
    /// Original destination address (the ClusterIP); `None` for NodePort
    /// flows, which may have been sent to any node address.
    pub orig_dst: Option<Ipv4Addr>,
    /// Original destination port (service port or node port).
    pub orig_dst_port: u16,
    /// Endpoint the flow was translated to (`--reply-src`,
    /// `--reply-port-src`); `None` deletes every flow to the destination.
    pub endpoint: Option<(Ipv4Addr, u16)>,
}

impl StaleFlow {
    /// Arguments for `conntrack`.
    pub fn conntrack_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        if let Some(dst) = self.orig_dst {
            args.extend(["--orig-dst".to_string(), dst.to_string()]);
        }
        args.extend([
            "--orig-port-dst".to_string(),
            self.orig_dst_port.to_string(),
        ]);
        if let Some((addr, port)) = self.endpoint {
            args.extend([
                "--reply-src".to_string(),
                addr.to_string(),
                "--reply-port-src".to_string(),
                port.to_string(),
            ]);
        }
        args
    }
}

/// Endpoints a service's rules actually send to (internal or external).
fn used_endpoints(entry: &ServiceEntry) -> BTreeSet<&Endpoint> {
    let mut used: BTreeSet<&Endpoint> = entry.usable_endpoints(false).into_iter().collect();
    if entry.node_port.is_some() {
        used.extend(entry.usable_endpoints(true));
    }
    used
}

/// (destination, port) pairs a UDP service answers on, each with the
/// endpoints traffic there may be translated to.
type UdpTargets = BTreeMap<(Option<Ipv4Addr>, u16), BTreeSet<(Ipv4Addr, u16)>>;

fn udp_targets(entry: Option<&ServiceEntry>) -> UdpTargets {
    let mut targets = BTreeMap::new();
    let Some(entry) = entry.filter(|e| e.protocol == Protocol::Udp) else {
        return targets;
    };
    let eps: BTreeSet<(Ipv4Addr, u16)> = used_endpoints(entry)
        .into_iter()
        .map(|ep| (ep.addr, ep.port))
        .collect();
    if let Some(ip) = entry.cluster_ip {
        targets.insert((Some(ip), entry.port), eps.clone());
    }
    if let Some(node_port) = entry.node_port {
        targets.insert((None, node_port), eps);
    }
    targets
}

/// Conntrack entries to delete after moving from `old` to `new` for the
/// given (changed) services:
///
/// - flows translated to an endpoint that the service no longer uses;
/// - all flows to a service destination that had no endpoints before and
///   has some now (entries made while nothing answered would otherwise
///   keep bypassing the new DNAT rules).
pub fn stale_udp_flows<'a>(
    old: &DesiredState,
    new: &DesiredState,
    changed: impl IntoIterator<Item = &'a ServicePortKey>,
) -> Vec<StaleFlow> {
    let mut flows = BTreeSet::new();
    for key in changed {
        let before = udp_targets(old.services.get(key));
        let after = udp_targets(new.services.get(key));
        for ((dst, port), old_eps) in &before {
            let new_eps = after.get(&(*dst, *port));
            for ep in old_eps {
                if !new_eps.is_some_and(|eps| eps.contains(ep)) {
                    flows.insert(StaleFlow {
                        orig_dst: *dst,
                        orig_dst_port: *port,
                        endpoint: Some(*ep),
                    });
                }
            }
        }
        for ((dst, port), new_eps) in &after {
            let had_none = before.get(&(*dst, *port)).is_none_or(BTreeSet::is_empty);
            if had_none && !new_eps.is_empty() {
                flows.insert(StaleFlow {
                    orig_dst: *dst,
                    orig_dst_port: *port,
                    endpoint: None,
                });
            }
        }
    }
    flows.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::new(10, 244, 0, last),
            port: 5353,
            node_name: None,
            is_local: false,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn dns(protocol: Protocol, eps: Vec<Endpoint>) -> DesiredState {
        let key = ServicePortKey::new("kube-system", "dns", "dns");
        let entry = ServiceEntry {
            key: key.clone(),
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 53,
            protocol,
            node_port: Some(30053),
            external_local: false,
            internal_local: false,
            affinity_timeout_secs: None,
            endpoints: eps,
        };
        DesiredState {
            services: [(key, entry)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn key() -> ServicePortKey {
        ServicePortKey::new("kube-system", "dns", "dns")
    }

    #[test]
    fn removed_endpoint_flows_are_stale() {
        let old = dns(Protocol::Udp, vec![ep(1), ep(2)]);
        let new = dns(Protocol::Udp, vec![ep(2)]);
        let flows = stale_udp_flows(&old, &new, [&key()]);
        assert_eq!(
            flows,
            [
                StaleFlow {
                    orig_dst: None,
                    orig_dst_port: 30053,
                    endpoint: Some((ep(1).addr, 5353))
                },
                StaleFlow {
                    orig_dst: Some(Ipv4Addr::new(10, 96, 0, 10)),
                    orig_dst_port: 53,
                    endpoint: Some((ep(1).addr, 5353)),
                },
            ]
        );
        assert_eq!(
            flows[1].conntrack_args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.1 --reply-port-src 5353"
        );
    }

    #[test]
    fn not_ready_endpoint_counts_as_removed() {
        let old = dns(Protocol::Udp, vec![ep(1), ep(2)]);
        let mut not_ready = ep(1);
        not_ready.ready = false;
        let new = dns(Protocol::Udp, vec![not_ready, ep(2)]);
        assert_eq!(stale_udp_flows(&old, &new, [&key()]).len(), 2);
    }

    #[test]
    fn first_endpoint_clears_flows_to_the_service() {
        let old = dns(Protocol::Udp, vec![]);
        let new = dns(Protocol::Udp, vec![ep(1)]);
        let flows = stale_udp_flows(&old, &new, [&key()]);
        assert_eq!(flows.len(), 2);
        assert!(flows.iter().all(|f| f.endpoint.is_none()));
        assert_eq!(
            flows[0].conntrack_args().join(" "),
            "-D -p udp --orig-port-dst 30053"
        );
    }

    #[test]
    fn tcp_and_unchanged_need_nothing() {
        let old = dns(Protocol::Tcp, vec![ep(1), ep(2)]);
        let new = dns(Protocol::Tcp, vec![ep(2)]);
        assert!(stale_udp_flows(&old, &new, [&key()]).is_empty());
        let same = dns(Protocol::Udp, vec![ep(1)]);
        assert!(stale_udp_flows(&same, &same, [&key()]).is_empty());
    }
}
