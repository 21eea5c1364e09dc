//! [`Cluster`]: N node namespaces and one "outside" client namespace on a
//! shared underlay bridge, with no path to the machine's own network.
//!
//! ```text
//!              skiff-ul-… (underlay namespace)
//!           ┌───────── skiff-br (bridge) ─────────┐
//!      skiff-n0      skiff-n1   …            skiff-out
//!         │             │                        │
//!      skiff-ul      skiff-ul                 skiff-ul
//!   skiff-node0-…  skiff-node1-…           skiff-out-…
//!   192.168.250.1  192.168.250.2           192.168.250.254
//! ```
//!
//! Conventions the agent and e2e suite build on:
//! - node `i` has underlay address `underlay.nth(i + 1)` on interface
//!   [`Cluster::UNDERLAY_IF`], and IPv4 forwarding on;
//! - the outside client has the last usable address of the underlay;
//! - node `i` owns pod CIDR [`Cluster::pod_cidr`]`(i)` = `10.244.i.0/24`,
//!   carved from [`Cluster::CLUSTER_CIDR`] `10.244.0.0/16`; routes to other
//!   nodes' pod CIDRs go via their underlay addresses (the agent adds them).
//!
//! No namespace has a default route, and every veth's peer is in one of the
//! cluster's namespaces; [`Cluster::build`] checks both before returning.

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

use crate::error::{Error, Result};
use crate::isolation;
use crate::netns::{Netns, link_veth};

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of node namespaces (at least one).
    pub nodes: usize,
    /// Underlay subnet; node and outside addresses come from it. Each
    /// cluster has its own bridge, so concurrent clusters may share it.
    pub underlay: Ipv4Network,
}

/// The default underlay: a private /24 that exists only inside a cluster's
/// namespaces.
pub const DEFAULT_UNDERLAY: Ipv4Network = const_net(Ipv4Addr::new(192, 168, 250, 0), 24);

impl Default for ClusterSpec {
    /// Two nodes on [`DEFAULT_UNDERLAY`].
    fn default() -> Self {
        Self {
            nodes: 2,
            underlay: DEFAULT_UNDERLAY,
        }
    }
}

/// Compile-time network constant; an invalid prefix fails the build.
const fn const_net(addr: Ipv4Addr, prefix: u8) -> Ipv4Network {
    match Ipv4Network::new_checked(addr, prefix) {
        Some(net) => net,
        None => panic!("invalid network constant"),
    }
}

/// A namespace on the underlay with its address: a node or the outside client.
#[derive(Debug)]
pub struct Node {
    name: String,
    addr: Ipv4Addr,
    netns: Netns,
}

impl Node {
    /// Logical name: `node0`, `node1`, …, or `outside`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address on the underlay (on [`Cluster::UNDERLAY_IF`]).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The namespace, for `exec`, `spawn`, `run_in` and the link helpers.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
}

/// A built cluster; dropping it stops spawned processes and deletes every
/// namespace (and with them every veth and the bridge), also on panic.
#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: nodes and outside first, underlay last.
    nodes: Vec<Node>,
    outside: Node,
    underlay: Netns,
    underlay_cidr: Ipv4Network,
}

/// Addresses [`Cluster::build`] will assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddressPlan {
    pub(crate) nodes: Vec<Ipv4Network>,
    pub(crate) outside: Ipv4Network,
}

/// Node `i` gets host `i + 1`, the outside client the last usable host.
/// Fails if there are no nodes or they do not fit below the outside address.
pub(crate) fn plan_addresses(underlay: Ipv4Network, nodes: usize) -> Result<AddressPlan> {
    let too_small = || Error::UnderlayTooSmall { underlay, nodes };
    if nodes == 0 || underlay.prefix() > 30 {
        return Err(too_small());
    }
    let outside_index = underlay.size().checked_sub(2).ok_or_else(too_small)?;
    let node_count = u32::try_from(nodes).map_err(|_| too_small())?;
    if node_count >= outside_index {
        return Err(too_small());
    }
    let host = |i| {
        let addr = underlay.nth(i).ok_or_else(too_small)?;
        Ipv4Network::new(addr, underlay.prefix()).map_err(|_| too_small())
    };
    let outside = host(outside_index)?;
    let nodes = (1..=node_count).map(host).collect::<Result<_>>()?;
    Ok(AddressPlan { nodes, outside })
}

impl Cluster {
    /// Interface name of a node's (and the outside client's) underlay port.
    pub const UNDERLAY_IF: &str = "skiff-ul";
    /// The bridge in the underlay namespace.
    pub const BRIDGE_IF: &str = "skiff-br";
    /// Supernet of all node pod CIDRs.
    pub const CLUSTER_CIDR: Ipv4Network = const_net(Ipv4Addr::new(10, 244, 0, 0), 16);

    /// Builds the topology described by `spec` and checks its isolation.
    ///
    /// Fails if the underlay is too small, any `ip` step fails, or the
    /// isolation check finds a way out; whatever was already created is torn
    /// down before the error returns. Needs root.
    pub fn build(spec: ClusterSpec) -> Result<Self> {
        let plan = plan_addresses(spec.underlay, spec.nodes)?;
        let underlay = Netns::new("ul")?;
        underlay.ip(["link", "add", Self::BRIDGE_IF, "type", "bridge"])?;
        underlay.set_up(Self::BRIDGE_IF)?;

        let mut nodes = Vec::with_capacity(spec.nodes);
        for (i, addr) in plan.nodes.iter().enumerate() {
            let name = format!("node{i}");
            let node = attach(&underlay, &name, &format!("skiff-n{i}"), *addr)?;
            node.netns.set_sysctl("net.ipv4.ip_forward", "1")?;
            nodes.push(node);
        }
        let outside = attach(&underlay, "outside", "skiff-out", plan.outside)?;

        let cluster = Self {
            nodes,
            outside,
            underlay,
            underlay_cidr: spec.underlay,
        };
        cluster.check_isolation()?;
        tracing::info!(
            underlay = %cluster.underlay.name(),
            nodes = cluster.nodes.len(),
            cidr = %cluster.underlay_cidr,
            "built test cluster"
        );
        Ok(cluster)
    }

    /// The node namespaces, in index order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`, if it exists.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)
    }

    /// The outside client: on the underlay, but not a node.
    pub fn outside(&self) -> &Node {
        &self.outside
    }

    /// The namespace holding the underlay bridge.
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// The underlay subnet.
    pub fn underlay_cidr(&self) -> Ipv4Network {
        self.underlay_cidr
    }

    /// Every namespace of the cluster: underlay, nodes, outside.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.underlay)
            .chain(self.nodes.iter().map(Node::netns))
            .chain(std::iter::once(self.outside.netns()))
    }

    /// Pod CIDR of node `i`: `10.244.i.0/24`; `None` past node 255.
    pub fn pod_cidr(i: usize) -> Option<Ipv4Network> {
        let third = u8::try_from(i).ok()?;
        Ipv4Network::new(Ipv4Addr::new(10, 244, third, 0), 24).ok()
    }

    /// Re-checks that no interface of any cluster namespace leads outside the
    /// cluster and no namespace has a default route. Call again after adding
    /// links if in doubt; fails with [`Error::Isolation`].
    pub fn check_isolation(&self) -> Result<()> {
        let names: Vec<&str> = self.namespaces().map(Netns::name).collect();
        for ns in self.namespaces() {
            isolation::check_netns(ns, &names)?;
        }
        Ok(())
    }
}

/// Creates a namespace for `name`, links it to the underlay bridge through
/// `port` and gives it `addr`.
fn attach(underlay: &Netns, name: &str, port: &str, addr: Ipv4Network) -> Result<Node> {
    let netns = Netns::new(name)?;
    link_veth(&netns, Cluster::UNDERLAY_IF, underlay, port)?;
    underlay.ip(["link", "set", "dev", port, "master", Cluster::BRIDGE_IF])?;
    netns.add_addr(Cluster::UNDERLAY_IF, IpNetwork::V4(addr))?;
    Ok(Node {
        name: name.to_owned(),
        addr: addr.ip(),
        netns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("valid network")
    }

    #[test]
    fn default_plan_puts_nodes_low_and_outside_high() {
        let plan = plan_addresses(ClusterSpec::default().underlay, 3).expect("fits");
        assert_eq!(
            plan.nodes,
            [
                net("192.168.250.1/24"),
                net("192.168.250.2/24"),
                net("192.168.250.3/24")
            ]
        );
        assert_eq!(plan.outside, net("192.168.250.254/24"));
    }

    #[test]
    fn plan_fills_a_small_subnet_exactly() {
        // /29: hosts .1-.6; five nodes plus outside at .6.
        let plan = plan_addresses(net("10.9.0.0/29"), 5).expect("fits");
        assert_eq!(plan.nodes.last(), Some(&net("10.9.0.5/29")));
        assert_eq!(plan.outside, net("10.9.0.6/29"));
        assert!(plan_addresses(net("10.9.0.0/29"), 6).is_err());
    }

    #[test]
    fn plan_rejects_impossible_specs() {
        for (cidr, nodes) in [
            ("10.9.0.0/24", 0),
            ("10.9.0.0/31", 1),
            ("10.9.0.0/32", 1),
            ("10.9.0.0/30", 2),
        ] {
            assert!(
                matches!(
                    plan_addresses(net(cidr), nodes),
                    Err(Error::UnderlayTooSmall { .. })
                ),
                "{cidr} x {nodes}"
            );
        }
        plan_addresses(net("10.9.0.0/30"), 1).expect("one node and outside fit in a /30");
    }

    #[test]
    fn plan_addresses_are_distinct_usable_hosts() {
        let cidr = net("192.168.250.0/24");
        let plan = plan_addresses(cidr, 200).expect("fits");
        let mut all: Vec<Ipv4Addr> = plan.nodes.iter().map(|n| n.ip()).collect();
        all.push(plan.outside.ip());
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
        for a in all {
            assert!(cidr.contains(a));
            assert_ne!(a, cidr.network());
            assert_ne!(a, cidr.broadcast());
        }
    }

    #[test]
    fn pod_cidrs_are_per_node_slices_of_the_cluster_cidr() {
        assert_eq!(Cluster::pod_cidr(0), Some(net("10.244.0.0/24")));
        assert_eq!(Cluster::pod_cidr(7), Some(net("10.244.7.0/24")));
        assert_eq!(Cluster::pod_cidr(255), Some(net("10.244.255.0/24")));
        assert_eq!(Cluster::pod_cidr(256), None);
        for i in [0, 1, 255] {
            let cidr = Cluster::pod_cidr(i).expect("in range");
            assert!(Cluster::CLUSTER_CIDR.contains(cidr.network()));
        }
        assert_eq!(Cluster::CLUSTER_CIDR, net("10.244.0.0/16"));
    }
}
