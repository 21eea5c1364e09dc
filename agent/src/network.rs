//! Node networking: the pod bridge, host-gateway routes to other nodes'
//! pod CIDRs, IPv4 forwarding, and masquerade for traffic leaving the
//! cluster CIDR.
//!
//! Done with the `ip` and `iptables` tools (see [`crate::command`] for why).
//! Everything the agent adds is recognisable: routes carry the routing
//! protocol number [`ROUTE_PROTO`], iptables rules live in the chains
//! [`NAT_CHAIN`] and [`FILTER_CHAIN`], so reconciliation lists exactly ours
//! and `cleanup` removes exactly ours. The decisions (which routes, which
//! rules) are pure functions tested without root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Node;

use crate::command;
use crate::error::{AgentError, Result};

/// Routing protocol number on every route the agent adds. 158 is not used
/// by the kernel, iproute2's named protocols or the usual routing daemons
/// (bird 12, zebra 11, Calico 80).
pub const ROUTE_PROTO: u8 = 158;
/// nat chain holding the masquerade rule.
pub const NAT_CHAIN: &str = "SKIFF-AGENT-POSTROUTING";
/// filter chain accepting forwarded pod traffic (hosts with a DROP policy).
pub const FILTER_CHAIN: &str = "SKIFF-AGENT-FORWARD";

/// The node's pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Bridge name.
    pub bridge: String,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Network,
    /// The whole cluster's pod CIDR.
    pub cluster_cidr: Ipv4Network,
}

impl NodeNetwork {
    /// The bridge address: first usable address of the pod CIDR (matches
    /// `skiff_ipam::PodIpAllocator::gateway`).
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.pod_cidr)
    }

    /// Makes the bridge with the gateway address, enables forwarding and
    /// installs the masquerade and forward-accept rules. Idempotent.
    pub async fn ensure(&self) -> Result<()> {
        let exists = command::output("ip", &["link", "show", "dev", &self.bridge])
            .await?
            .status
            .success();
        if !exists {
            command::checked(
                "ip",
                &["link", "add", "name", &self.bridge, "type", "bridge"],
            )
            .await?;
        }
        let addr = format!("{}/{}", self.gateway(), self.pod_cidr.prefix());
        command::checked("ip", &["addr", "replace", &addr, "dev", &self.bridge]).await?;
        command::checked("ip", &["link", "set", "dev", &self.bridge, "up"]).await?;
        // /proc/sys/net is per network namespace of the writing thread.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| AgentError::io("enable net.ipv4.ip_forward", e))?;
        for (table, chain, parent, rules) in [
            (
                "nat",
                NAT_CHAIN,
                "POSTROUTING",
                masquerade_rules(self.cluster_cidr),
            ),
            (
                "filter",
                FILTER_CHAIN,
                "FORWARD",
                forward_rules(self.cluster_cidr),
            ),
        ] {
            ensure_chain(table, chain, parent, &rules).await?;
        }
        tracing::info!(bridge = %self.bridge, gateway = %self.gateway(), pod_cidr = %self.pod_cidr, "node network ready");
        Ok(())
    }

    /// Makes the agent's routes exactly `desired` (pod CIDR → node IP).
    pub async fn sync_routes(&self, desired: &BTreeMap<Ipv4Network, Ipv4Addr>) -> Result<()> {
        let proto = ROUTE_PROTO.to_string();
        let json = command::checked("ip", &["-j", "-4", "route", "show", "proto", &proto]).await?;
        let current = parse_routes(&json)?;
        let (set, del) = route_diff(&current, desired);
        for dst in del {
            command::checked("ip", &["route", "del", &dst.to_string(), "proto", &proto]).await?;
            tracing::info!(%dst, "removed pod CIDR route");
        }
        for (dst, via) in set {
            command::checked(
                "ip",
                &[
                    "route",
                    "replace",
                    &dst.to_string(),
                    "via",
                    &via.to_string(),
                    "proto",
                    &proto,
                ],
            )
            .await?;
            tracing::info!(%dst, %via, "pod CIDR route");
        }
        Ok(())
    }
}

/// First usable address of `cidr`.
pub fn gateway(cidr: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

/// Rules of [`NAT_CHAIN`]: masquerade what leaves the cluster CIDR.
pub fn masquerade_rules(cluster: Ipv4Network) -> Vec<Vec<String>> {
    let c = cluster.to_string();
    vec![
        [
            "-s",
            &c,
            "!",
            "-d",
            &c,
            "-m",
            "comment",
            "--comment",
            "skiff: masquerade pod traffic leaving the cluster",
            "-j",
            "MASQUERADE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ]
}

/// Rules of [`FILTER_CHAIN`]: accept forwarded traffic from and to pods.
pub fn forward_rules(cluster: Ipv4Network) -> Vec<Vec<String>> {
    let c = cluster.to_string();
    vec![
        [
            "-s",
            &c,
            "-m",
            "comment",
            "--comment",
            "skiff: forward pod traffic",
            "-j",
            "ACCEPT",
        ]
        .map(str::to_owned)
        .to_vec(),
        [
            "-d",
            &c,
            "-m",
            "comment",
            "--comment",
            "skiff: forward pod traffic",
            "-j",
            "ACCEPT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ]
}

async fn iptables(args: &[&str]) -> Result<String> {
    command::checked("iptables", args).await
}

/// Creates `chain` in `table` (or flushes it), fills it with `rules`, and
/// jumps to it from `parent` once.
async fn ensure_chain(table: &str, chain: &str, parent: &str, rules: &[Vec<String>]) -> Result<()> {
    if iptables(&["-w", "-t", table, "-S", chain]).await.is_err() {
        iptables(&["-w", "-t", table, "-N", chain]).await?;
    }
    iptables(&["-w", "-t", table, "-F", chain]).await?;
    for rule in rules {
        let mut args = vec!["-w", "-t", table, "-A", chain];
        args.extend(rule.iter().map(String::as_str));
        iptables(&args).await?;
    }
    if iptables(&["-w", "-t", table, "-C", parent, "-j", chain])
        .await
        .is_err()
    {
        iptables(&["-w", "-t", table, "-I", parent, "1", "-j", chain]).await?;
    }
    Ok(())
}

/// Removes the agent's chains and jumps (blocking; for cleanup). Missing
/// chains are fine.
pub fn remove_iptables_blocking() -> Vec<AgentError> {
    let mut errors = Vec::new();
    for (table, chain, parent) in [
        ("nat", NAT_CHAIN, "POSTROUTING"),
        ("filter", FILTER_CHAIN, "FORWARD"),
    ] {
        // Delete every jump (there should be one; a crash could leave more).
        for _ in 0..16 {
            if command::checked_blocking(
                "iptables",
                &["-w", "-t", table, "-D", parent, "-j", chain],
            )
            .is_err()
            {
                break;
            }
        }
        if command::checked_blocking("iptables", &["-w", "-t", table, "-S", chain]).is_ok() {
            for args in [
                ["-w", "-t", table, "-F", chain],
                ["-w", "-t", table, "-X", chain],
            ] {
                if let Err(e) = command::checked_blocking("iptables", &args) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

/// Removes every route carrying [`ROUTE_PROTO`] (blocking; for cleanup).
pub fn remove_routes_blocking() -> Result<()> {
    let proto = ROUTE_PROTO.to_string();
    let json = command::checked_blocking("ip", &["-j", "-4", "route", "show", "proto", &proto])?;
    for dst in parse_routes(&json)?.keys() {
        command::checked_blocking("ip", &["route", "del", &dst.to_string(), "proto", &proto])?;
    }
    Ok(())
}

/// Parses `ip -j route show` output into destination → gateway.
pub fn parse_routes(json: &str) -> Result<BTreeMap<Ipv4Network, Ipv4Addr>> {
    #[derive(serde::Deserialize)]
    struct Route {
        dst: String,
        gateway: Option<Ipv4Addr>,
    }
    let json = if json.trim().is_empty() { "[]" } else { json };
    let routes: Vec<Route> = serde_json::from_str(json).map_err(|source| AgentError::State {
        path: "ip -j route show".into(),
        source,
    })?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let dst: Ipv4Network = r.dst.parse().ok()?;
            Some((dst, r.gateway?))
        })
        .collect())
}

/// What to replace and what to delete to get from `current` to `desired`.
pub fn route_diff(
    current: &BTreeMap<Ipv4Network, Ipv4Addr>,
    desired: &BTreeMap<Ipv4Network, Ipv4Addr>,
) -> (Vec<(Ipv4Network, Ipv4Addr)>, Vec<Ipv4Network>) {
    let set = desired
        .iter()
        .filter(|(d, via)| current.get(d) != Some(via))
        .map(|(d, v)| (*d, *v))
        .collect();
    let del = current
        .keys()
        .filter(|d| !desired.contains_key(d))
        .copied()
        .collect();
    (set, del)
}

/// Routes this node needs: every *other* node's pod CIDR via its InternalIP.
/// Nodes without either are skipped; so is a CIDR equal to ours.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    self_name: &str,
    own_cidr: Ipv4Network,
) -> BTreeMap<Ipv4Network, Ipv4Addr> {
    nodes
        .into_iter()
        .filter(|n| n.metadata.name.as_deref() != Some(self_name))
        .filter_map(|n| {
            let cidr: Ipv4Network = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
            let ip = internal_ip(n)?;
            (cidr != own_cidr).then_some((cidr, ip))
        })
        .collect()
}

/// A node's first IPv4 InternalIP.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("net")
    }

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {"addresses": []}});
        if let Some(c) = cidr {
            v["spec"]["podCIDR"] = json!(c);
        }
        if let Some(ip) = ip {
            v["status"]["addresses"] = json!([{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]);
        }
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn routes_go_to_other_nodes_with_cidr_and_ip() {
        let nodes = [
            node("n0", Some("10.244.0.0/24"), Some("192.168.250.1")),
            node("n1", Some("10.244.1.0/24"), Some("192.168.250.2")),
            node("n2", None, Some("192.168.250.3")),
            node("n3", Some("10.244.3.0/24"), None),
        ];
        let want = desired_routes(&nodes, "n0", net("10.244.0.0/24"));
        assert_eq!(
            want,
            BTreeMap::from([(net("10.244.1.0/24"), Ipv4Addr::new(192, 168, 250, 2))])
        );
    }

    #[test]
    fn diff_replaces_changed_and_deletes_stale() {
        let a = Ipv4Addr::new(192, 168, 250, 2);
        let b = Ipv4Addr::new(192, 168, 250, 3);
        let current = BTreeMap::from([
            (net("10.244.1.0/24"), a),
            (net("10.244.2.0/24"), a),
            (net("10.244.9.0/24"), b),
        ]);
        let desired = BTreeMap::from([
            (net("10.244.1.0/24"), a),
            (net("10.244.2.0/24"), b),
            (net("10.244.3.0/24"), b),
        ]);
        let (set, del) = route_diff(&current, &desired);
        assert_eq!(set, [(net("10.244.2.0/24"), b), (net("10.244.3.0/24"), b)]);
        assert_eq!(del, [net("10.244.9.0/24")]);
    }

    #[test]
    fn parses_ip_json_routes() {
        let json = r#"[{"dst":"10.244.1.0/24","gateway":"192.168.250.2","dev":"skiff-ul","protocol":"158","flags":[]},
                       {"dst":"default","gateway":"10.0.0.1","dev":"eth0","flags":[]}]"#;
        assert_eq!(
            parse_routes(json).expect("parse"),
            BTreeMap::from([(net("10.244.1.0/24"), Ipv4Addr::new(192, 168, 250, 2))])
        );
        assert!(parse_routes("").expect("empty").is_empty());
    }

    #[test]
    fn rules_and_gateway() {
        let c = net("10.244.0.0/16");
        assert_eq!(
            masquerade_rules(c)[0][..5],
            ["-s", "10.244.0.0/16", "!", "-d", "10.244.0.0/16"]
        );
        assert_eq!(
            masquerade_rules(c)[0].last().map(String::as_str),
            Some("MASQUERADE")
        );
        assert_eq!(forward_rules(c).len(), 2);
        assert_eq!(gateway(net("10.244.3.0/24")), Ipv4Addr::new(10, 244, 3, 1));
    }
}
