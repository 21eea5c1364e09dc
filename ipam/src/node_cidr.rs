//! Splitting the cluster CIDR into per-node pod CIDRs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize};

use crate::bitmap::Pool;
use crate::cidr;
use crate::error::IpamError;
use crate::pod_ip::MAX_POD_HOST_BITS;
use crate::snapshot::{SNAPSHOT_VERSION, check_version};

/// The default cluster CIDR, 10.244.0.0/16 (flannel's and kubeadm
/// guides' usual `--cluster-cidr`).
pub const DEFAULT_CLUSTER_CIDR: IpNetwork = IpNetwork::V4(
    match Ipv4Network::new_checked(Ipv4Addr::new(10, 244, 0, 0), 16) {
        Some(n) => n,
        None => panic!("10.244.0.0/16 is a valid network"),
    },
);

/// The default per-node prefix length, /24 (kube-controller-manager's
/// `--node-cidr-mask-size` for IPv4).
pub const DEFAULT_NODE_PREFIX: u8 = 24;

/// The most node CIDRs one cluster CIDR may be split into, in bits
/// (node prefix minus cluster prefix): 2^24 subnets is a 2 MiB bitmap.
pub const MAX_NODE_CIDR_BITS: u8 = 24;

/// Hands out one pod CIDR per node, carved from the cluster CIDR.
///
/// Allocation is keyed by node name and idempotent: a node that already
/// holds a CIDR gets the same one back. Dynamic allocation uses a rotating
/// cursor, so the CIDR of a deleted node is reused only after every other
/// free one has been handed out (stale routes to it have time to go).
///
/// The node prefix must split the cluster CIDR into CIDRs a
/// [`PodIpAllocator`](crate::PodIpAllocator) accepts: between 2 and
/// [`MAX_POD_HOST_BITS`] host bits (IPv4 /8 to /30, IPv6 /104 to /126).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCidrAllocator {
    cluster: IpNetwork,
    node_prefix: u8,
    pool: Pool,
    nodes: BTreeMap<String, usize>,
    by_index: BTreeMap<usize, String>,
}

/// Persisted state of a [`NodeCidrAllocator`].
///
/// JSON shape (stable):
/// `{"version":1,"clusterCidr":"10.244.0.0/16","nodePrefix":24,"nodes":{"node-a":"10.244.0.0/24"},"next":"10.244.1.0/24"}`.
/// `next` may be omitted; the search then starts at the first subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCidrSnapshot {
    /// Format version, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The cluster CIDR the snapshot was taken from.
    pub cluster_cidr: IpNetwork,
    /// The per-node prefix length.
    pub node_prefix: u8,
    /// Node name → its pod CIDR, sorted by name.
    pub nodes: BTreeMap<String, IpNetwork>,
    /// Where [`NodeCidrAllocator::allocate`] resumes its search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<IpNetwork>,
}

impl NodeCidrAllocator {
    /// An empty allocator splitting `cluster` (host bits cleared) into
    /// `/node_prefix` subnets.
    ///
    /// Fails with `InvalidNodePrefix` when the node prefix is shorter than
    /// the cluster prefix, longer than the address, or gives node CIDRs
    /// outside 2..=[`MAX_POD_HOST_BITS`] host bits; with `RangeTooLarge`
    /// when that would make more than 2^[`MAX_NODE_CIDR_BITS`] subnets.
    pub fn new(cluster: IpNetwork, node_prefix: u8) -> Result<Self, IpamError> {
        let cluster = cidr::normalize(cluster);
        let max = cidr::max_prefix(cluster);
        let invalid = |reason| IpamError::InvalidNodePrefix {
            cluster,
            node_prefix,
            reason,
        };
        if node_prefix > max {
            return Err(invalid("longer than the address"));
        }
        if node_prefix < cluster.prefix() {
            return Err(invalid("shorter than the cluster prefix"));
        }
        let node_host_bits = max - node_prefix;
        if node_host_bits < 2 {
            return Err(invalid(
                "node CIDRs would have no room for pods (at most /30 for IPv4, /126 for IPv6)",
            ));
        }
        if node_host_bits > MAX_POD_HOST_BITS {
            return Err(invalid(
                "node CIDRs would exceed the pod IP allocator's limit (at least /8 for IPv4, /104 for IPv6)",
            ));
        }
        let bits = node_prefix - cluster.prefix();
        if bits > MAX_NODE_CIDR_BITS {
            return Err(IpamError::RangeTooLarge {
                cidr: cluster,
                bits,
                max_bits: MAX_NODE_CIDR_BITS,
            });
        }
        Ok(Self::unvalidated(cluster, node_prefix))
    }

    fn unvalidated(cluster: IpNetwork, node_prefix: u8) -> Self {
        let bits = node_prefix.saturating_sub(cluster.prefix());
        let len = 1usize.checked_shl(u32::from(bits)).unwrap_or(0);
        Self {
            cluster: cidr::normalize(cluster),
            node_prefix,
            pool: Pool::new(len, 0),
            nodes: BTreeMap::new(),
            by_index: BTreeMap::new(),
        }
    }

    /// An allocator holding `in_use` (node name, pod CIDR) pairs, rebuilt
    /// from Node objects' `spec.podCIDR`. Strict: fails on the first pair
    /// [`allocate_specific`](Self::allocate_specific) rejects; for a lenient
    /// repair call [`new`](Self::new) then `allocate_specific` per pair.
    pub fn from_in_use<S: Into<String>>(
        cluster: IpNetwork,
        node_prefix: u8,
        in_use: impl IntoIterator<Item = (S, IpNetwork)>,
    ) -> Result<Self, IpamError> {
        let mut alloc = Self::new(cluster, node_prefix)?;
        for (node, cidr) in in_use {
            alloc.allocate_specific(node, cidr)?;
        }
        Ok(alloc)
    }

    /// An allocator over the snapshot's own cluster CIDR and node prefix
    /// with its state.
    pub fn from_snapshot(snapshot: &NodeCidrSnapshot) -> Result<Self, IpamError> {
        check_version(snapshot.version)?;
        let mut alloc = Self::from_in_use(
            snapshot.cluster_cidr,
            snapshot.node_prefix,
            snapshot.nodes.iter().map(|(n, c)| (n.clone(), *c)),
        )?;
        if let Some(next) = snapshot.next {
            let i = alloc.index_of(next)?;
            alloc.pool.set_cursor(i);
        }
        Ok(alloc)
    }

    /// The cluster CIDR (normalised).
    pub fn cluster_cidr(&self) -> IpNetwork {
        self.cluster
    }

    /// The per-node prefix length.
    pub fn node_prefix(&self) -> u8 {
        self.node_prefix
    }

    fn node_host_bits(&self) -> u32 {
        u32::from(cidr::max_prefix(self.cluster) - self.node_prefix)
    }

    fn subnet_at(&self, i: usize) -> IpNetwork {
        let offset = (i as u128) << self.node_host_bits();
        let addr = cidr::addr_at(self.cluster, offset);
        // The prefix was validated against the family in `new`, so this
        // cannot fail; the fallback only avoids a panic path.
        IpNetwork::new(addr, self.node_prefix).unwrap_or(self.cluster)
    }

    fn index_of(&self, subnet: IpNetwork) -> Result<usize, IpamError> {
        let subnet = cidr::normalize(subnet);
        let not_a_node_cidr = || IpamError::NotANodeCidr {
            cidr: subnet,
            cluster: self.cluster,
            node_prefix: self.node_prefix,
        };
        if subnet.prefix() != self.node_prefix {
            return Err(not_a_node_cidr());
        }
        let offset = cidr::offset_of(self.cluster, subnet.ip()).ok_or_else(not_a_node_cidr)?;
        usize::try_from(offset >> self.node_host_bits())
            .ok()
            .filter(|&i| i < self.pool.len())
            .ok_or_else(not_a_node_cidr)
    }

    /// The pod CIDR of `node`, allocating the next free one if it has none.
    /// `Exhausted` when every subnet is taken.
    pub fn allocate(&mut self, node: &str) -> Result<IpNetwork, IpamError> {
        if let Some(cidr) = self.get(node) {
            return Ok(cidr);
        }
        let i = self
            .pool
            .take_next()
            .ok_or(IpamError::Exhausted { cidr: self.cluster })?;
        self.nodes.insert(node.to_owned(), i);
        self.by_index.insert(i, node.to_owned());
        Ok(self.subnet_at(i))
    }

    /// Gives `node` exactly `cidr` (host bits cleared), e.g. a `podCIDR`
    /// already set on a Node. Idempotent when the node already holds it.
    /// Fails with `NotANodeCidr` (wrong size, unaligned, or outside the
    /// cluster CIDR), `CidrAlreadyAllocated` (another node holds it) or
    /// `NodeHasOtherCidr`.
    pub fn allocate_specific(
        &mut self,
        node: impl Into<String>,
        cidr: IpNetwork,
    ) -> Result<(), IpamError> {
        let node = node.into();
        let i = self.index_of(cidr)?;
        if let Some(&held) = self.nodes.get(&node) {
            return if held == i {
                Ok(())
            } else {
                Err(IpamError::NodeHasOtherCidr {
                    cidr: self.subnet_at(held),
                    node,
                })
            };
        }
        if let Some(other) = self.by_index.get(&i) {
            return Err(IpamError::CidrAlreadyAllocated {
                cidr: self.subnet_at(i),
                node: other.clone(),
            });
        }
        self.pool.take(i);
        self.by_index.insert(i, node.clone());
        self.nodes.insert(node, i);
        Ok(())
    }

    /// Frees the CIDR of `node`, returning it; None if the node held none.
    pub fn release(&mut self, node: &str) -> Option<IpNetwork> {
        let i = self.nodes.remove(node)?;
        self.by_index.remove(&i);
        self.pool.put(i);
        Some(self.subnet_at(i))
    }

    /// The pod CIDR `node` holds.
    pub fn get(&self, node: &str) -> Option<IpNetwork> {
        self.nodes.get(node).map(|&i| self.subnet_at(i))
    }

    /// The node holding `cidr`, if any.
    pub fn node_of(&self, cidr: IpNetwork) -> Option<&str> {
        let i = self.index_of(cidr).ok()?;
        self.by_index.get(&i).map(String::as_str)
    }

    /// Number of node CIDRs held.
    pub fn used(&self) -> usize {
        self.pool.used()
    }

    /// Number of node CIDRs still free.
    pub fn free(&self) -> usize {
        self.pool.dynamic_free()
    }

    /// Number of node CIDRs the cluster CIDR splits into.
    pub fn capacity(&self) -> usize {
        self.pool.len()
    }

    /// (node, CIDR) pairs, sorted by node name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpNetwork)> + '_ {
        self.nodes
            .iter()
            .map(|(node, &i)| (node.as_str(), self.subnet_at(i)))
    }

    /// The state, for persisting.
    pub fn snapshot(&self) -> NodeCidrSnapshot {
        NodeCidrSnapshot {
            version: SNAPSHOT_VERSION,
            cluster_cidr: self.cluster,
            node_prefix: self.node_prefix,
            nodes: self.iter().map(|(n, c)| (n.to_owned(), c)).collect(),
            next: Some(self.subnet_at(self.pool.cursor())),
        }
    }

    /// Replaces this allocator's state with the snapshot's. Fails, leaving
    /// `self` unchanged, when the snapshot's cluster CIDR or node prefix
    /// differs (`SnapshotRangeMismatch`), its version is unknown, or its
    /// contents are invalid.
    pub fn restore(&mut self, snapshot: &NodeCidrSnapshot) -> Result<(), IpamError> {
        check_version(snapshot.version)?;
        let found = (cidr::normalize(snapshot.cluster_cidr), snapshot.node_prefix);
        if found != (self.cluster, self.node_prefix) {
            return Err(IpamError::SnapshotRangeMismatch {
                expected: format!("{} split into /{}", self.cluster, self.node_prefix),
                found: format!("{} split into /{}", found.0, found.1),
            });
        }
        *self = Self::from_snapshot(snapshot)?;
        Ok(())
    }
}

impl Default for NodeCidrAllocator {
    /// An empty allocator splitting [`DEFAULT_CLUSTER_CIDR`] into
    /// [`DEFAULT_NODE_PREFIX`] subnets.
    fn default() -> Self {
        // The constants pass `new`'s checks; a unit test asserts equality.
        Self::unvalidated(DEFAULT_CLUSTER_CIDR, DEFAULT_NODE_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn default_splits_10_244_into_256_slash_24s() {
        let a = NodeCidrAllocator::default();
        assert_eq!(a, NodeCidrAllocator::new(net("10.244.0.0/16"), 24).unwrap());
        assert_eq!(a.capacity(), 256);
        assert_eq!(a.free(), 256);
        assert_eq!(a.node_prefix(), 24);
    }

    #[test]
    fn allocate_is_idempotent_per_node() {
        let mut a = NodeCidrAllocator::default();
        assert_eq!(a.allocate("node-a").unwrap(), net("10.244.0.0/24"));
        assert_eq!(a.allocate("node-b").unwrap(), net("10.244.1.0/24"));
        assert_eq!(a.allocate("node-a").unwrap(), net("10.244.0.0/24"));
        assert_eq!(a.used(), 2);
        assert_eq!(a.get("node-b"), Some(net("10.244.1.0/24")));
        assert_eq!(a.get("node-c"), None);
        assert_eq!(a.node_of(net("10.244.1.0/24")), Some("node-b"));
        assert_eq!(a.node_of(net("10.244.2.0/24")), None);
    }

    #[test]
    fn release_by_node_and_rotation() {
        let mut a = NodeCidrAllocator::new(net("10.244.0.0/22"), 24).unwrap();
        a.allocate("a").unwrap();
        assert_eq!(a.release("a"), Some(net("10.244.0.0/24")));
        assert_eq!(a.release("a"), None);
        assert_eq!(a.get("a"), None);
        // The freed subnet is not handed straight to the next node.
        assert_eq!(a.allocate("b").unwrap(), net("10.244.1.0/24"));
        assert_eq!(a.allocate("c").unwrap(), net("10.244.2.0/24"));
        assert_eq!(a.allocate("d").unwrap(), net("10.244.3.0/24"));
        assert_eq!(a.allocate("e").unwrap(), net("10.244.0.0/24"));
        assert_eq!(
            a.allocate("f"),
            Err(IpamError::Exhausted {
                cidr: net("10.244.0.0/22")
            })
        );
        // Idempotent lookups still work when full.
        assert_eq!(a.allocate("b").unwrap(), net("10.244.1.0/24"));
        assert_eq!(a.free(), 0);
    }

    #[test]
    fn invalid_masks() {
        let c = net("10.244.0.0/16");
        for (prefix, why) in [
            (15, "shorter"),
            (33, "longer"),
            (31, "no room"),
            (32, "no room"),
        ] {
            match NodeCidrAllocator::new(c, prefix) {
                Err(IpamError::InvalidNodePrefix {
                    cluster,
                    node_prefix,
                    reason,
                }) => {
                    assert_eq!((cluster, node_prefix), (c, prefix));
                    assert!(reason.contains(why), "/{prefix}: {reason}");
                }
                other => panic!("/{prefix}: {other:?}"),
            }
        }
        assert!(matches!(
            NodeCidrAllocator::new(net("10.0.0.0/8"), 7),
            Err(IpamError::InvalidNodePrefix { .. })
        ));
        assert!(matches!(
            NodeCidrAllocator::new(net("fd00::/48"), 64),
            Err(IpamError::InvalidNodePrefix { .. })
        ));
        assert_eq!(
            NodeCidrAllocator::new(net("fd00::/48"), 112),
            Err(IpamError::RangeTooLarge {
                cidr: net("fd00::/48"),
                bits: 64,
                max_bits: MAX_NODE_CIDR_BITS
            })
        );
        // Equal prefixes: one node CIDR, the whole cluster CIDR.
        let mut one = NodeCidrAllocator::new(net("10.1.0.0/24"), 24).unwrap();
        assert_eq!(one.allocate("only").unwrap(), net("10.1.0.0/24"));
        assert!(matches!(
            one.allocate("second"),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn ipv6_split() {
        let mut a = NodeCidrAllocator::new(net("fd00:10:244::/96"), 112).unwrap();
        assert_eq!(a.capacity(), 1 << 16);
        assert_eq!(a.allocate("a").unwrap(), net("fd00:10:244::/112"));
        assert_eq!(a.allocate("b").unwrap(), net("fd00:10:244::1:0/112"));
    }

    #[test]
    fn allocate_specific_rules() {
        let mut a = NodeCidrAllocator::default();
        let cluster = a.cluster_cidr();
        a.allocate_specific("a", net("10.244.7.0/24")).unwrap();
        a.allocate_specific("a", net("10.244.7.0/24")).unwrap();
        assert_eq!(a.used(), 1);
        assert_eq!(
            a.allocate_specific("b", net("10.244.7.0/24")),
            Err(IpamError::CidrAlreadyAllocated {
                cidr: net("10.244.7.0/24"),
                node: "a".into()
            })
        );
        assert_eq!(
            a.allocate_specific("a", net("10.244.8.0/24")),
            Err(IpamError::NodeHasOtherCidr {
                node: "a".into(),
                cidr: net("10.244.7.0/24")
            })
        );
        for bad in [
            "10.244.8.0/25",
            "10.245.0.0/24",
            "192.168.0.0/24",
            "fd00::/24",
        ] {
            let bad = net(bad);
            assert_eq!(
                a.allocate_specific("c", bad),
                Err(IpamError::NotANodeCidr {
                    cidr: cidr::normalize(bad),
                    cluster,
                    node_prefix: 24
                }),
                "{bad}"
            );
        }
        // Host bits in a podCIDR are cleared, as Go's ParseCIDR would.
        a.allocate_specific("c", net("10.244.9.5/24")).unwrap();
        assert_eq!(a.get("c"), Some(net("10.244.9.0/24")));
        // Dynamic allocation skips explicitly taken subnets.
        assert_eq!(a.allocate("d").unwrap(), net("10.244.0.0/24"));
    }

    #[test]
    fn from_in_use_and_snapshot_shape() {
        let a = NodeCidrAllocator::from_in_use(
            DEFAULT_CLUSTER_CIDR,
            24,
            [
                ("node-b", net("10.244.1.0/24")),
                ("node-a", net("10.244.0.0/24")),
            ],
        )
        .unwrap();
        let json = serde_json::to_value(a.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "clusterCidr": "10.244.0.0/16",
                "nodePrefix": 24,
                "nodes": {"node-a": "10.244.0.0/24", "node-b": "10.244.1.0/24"},
                "next": "10.244.0.0/24"
            })
        );
        let snap: NodeCidrSnapshot = serde_json::from_value(json).unwrap();
        let mut b = NodeCidrAllocator::default();
        b.restore(&snap).unwrap();
        assert_eq!(a, b);
        // A restored allocator does not hand out a held CIDR again.
        assert_eq!(b.allocate("node-c").unwrap(), net("10.244.2.0/24"));
    }

    #[test]
    fn restore_rejects_other_split() {
        let snap = NodeCidrAllocator::default().snapshot();
        let mut a = NodeCidrAllocator::new(DEFAULT_CLUSTER_CIDR, 25).unwrap();
        a.allocate("x").unwrap();
        let before = a.clone();
        assert_eq!(
            a.restore(&snap),
            Err(IpamError::SnapshotRangeMismatch {
                expected: "10.244.0.0/16 split into /25".into(),
                found: "10.244.0.0/16 split into /24".into()
            })
        );
        assert_eq!(a, before);
        let mut dup = snap.clone();
        dup.nodes.insert("a".into(), net("10.244.3.0/24"));
        dup.nodes.insert("b".into(), net("10.244.3.0/24"));
        assert!(matches!(
            NodeCidrAllocator::from_snapshot(&dup),
            Err(IpamError::CidrAlreadyAllocated { .. })
        ));
    }
}
