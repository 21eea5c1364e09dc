//! Pod IP allocation inside one node's pod CIDR.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::ip_pool::IpPool;
use crate::snapshot::{SNAPSHOT_VERSION, check_range, check_version};

/// The largest node CIDR accepted, in host bits (IPv4 /8, IPv6 /104):
/// 2^24 addresses is a 2 MiB bitmap.
pub const MAX_POD_HOST_BITS: u8 = 24;

/// Hands out pod IPs from one node's pod CIDR, keyed by owner (the pod uid).
///
/// Never allocatable: the network address, the IPv4 broadcast address, and
/// the first usable address, which is the node bridge's gateway
/// ([`gateway`](Self::gateway): 10.244.1.1 in 10.244.1.0/24).
///
/// Allocation is idempotent per owner: an owner that holds an IP gets the
/// same one back, so an agent that retries pod setup after a crash does not
/// leak addresses. Dynamic allocation uses a rotating cursor, so a deleted
/// pod's IP is not given to the very next pod (endpoints and conntrack
/// entries still naming it have time to go). `used() + free() ==
/// capacity()` always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIpAllocator {
    ips: IpPool,
    owners: BTreeMap<String, usize>,
    by_index: BTreeMap<usize, String>,
}

/// Persisted state of a [`PodIpAllocator`].
///
/// JSON shape (stable):
/// `{"version":1,"nodeCidr":"10.244.1.0/24","owners":{"<pod uid>":"10.244.1.2"},"next":"10.244.1.3"}`.
/// `next` may be omitted; the search then starts just after the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIpSnapshot {
    /// Format version, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The node CIDR the snapshot was taken from.
    pub node_cidr: IpNetwork,
    /// Owner (pod uid) → IP, sorted by owner.
    pub owners: BTreeMap<String, IpAddr>,
    /// Where [`PodIpAllocator::allocate`] resumes its search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<IpAddr>,
}

impl PodIpAllocator {
    /// An empty allocator over `node_cidr` (host bits cleared).
    ///
    /// Fails with `RangeTooLarge` beyond [`MAX_POD_HOST_BITS`] host bits and
    /// `RangeTooSmall` when no pod address remains after the network,
    /// gateway and broadcast addresses (an IPv4 /31 or /32, IPv6 /127 or
    /// /128).
    pub fn new(node_cidr: IpNetwork) -> Result<Self, IpamError> {
        Ok(Self {
            // Pool index 0 is offset 2: offset 0 is the network address and
            // offset 1 the gateway, neither ever allocatable.
            ips: IpPool::new(node_cidr, 2, 0, MAX_POD_HOST_BITS, 1)?,
            owners: BTreeMap::new(),
            by_index: BTreeMap::new(),
        })
    }

    /// An allocator holding `in_use` (owner, IP) pairs, rebuilt from the
    /// node's pods. Strict: fails on the first pair
    /// [`allocate_specific`](Self::allocate_specific) rejects; for a lenient
    /// repair call [`new`](Self::new) then `allocate_specific` per pair.
    pub fn from_in_use<S: Into<String>>(
        node_cidr: IpNetwork,
        in_use: impl IntoIterator<Item = (S, IpAddr)>,
    ) -> Result<Self, IpamError> {
        let mut alloc = Self::new(node_cidr)?;
        for (owner, ip) in in_use {
            alloc.allocate_specific(owner, ip)?;
        }
        Ok(alloc)
    }

    /// An allocator over the snapshot's own node CIDR with its state.
    pub fn from_snapshot(snapshot: &PodIpSnapshot) -> Result<Self, IpamError> {
        check_version(snapshot.version)?;
        let mut alloc = Self::from_in_use(
            snapshot.node_cidr,
            snapshot.owners.iter().map(|(o, ip)| (o.clone(), *ip)),
        )?;
        if let Some(next) = snapshot.next {
            alloc.ips.set_cursor_addr(next)?;
        }
        Ok(alloc)
    }

    /// The node CIDR (normalised).
    pub fn cidr(&self) -> IpNetwork {
        self.ips.cidr()
    }

    /// The node bridge's address: the first usable address of the CIDR,
    /// never handed to a pod.
    pub fn gateway(&self) -> IpAddr {
        crate::cidr::addr_at(self.cidr(), 1)
    }

    /// The IP of `owner`, allocating the next free one if it has none.
    /// `Exhausted` when the node CIDR is full.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, IpamError> {
        if let Some(ip) = self.get(owner) {
            return Ok(ip);
        }
        let i = self
            .ips
            .pool
            .take_next()
            .ok_or(IpamError::Exhausted { cidr: self.cidr() })?;
        self.owners.insert(owner.to_owned(), i);
        self.by_index.insert(i, owner.to_owned());
        Ok(self.ips.addr(i))
    }

    /// Gives `owner` exactly `ip` (e.g. a pod's recorded `status.podIP`).
    /// Idempotent when the owner already holds it. Fails with `OutOfRange`,
    /// `ReservedAddress` (network, gateway, broadcast), `AlreadyAllocated`
    /// (another owner holds it; see [`owner_of`](Self::owner_of)) or
    /// `OwnerHasOtherIp`.
    pub fn allocate_specific(
        &mut self,
        owner: impl Into<String>,
        ip: IpAddr,
    ) -> Result<(), IpamError> {
        let owner = owner.into();
        let i = self.ips.index_of(ip)?;
        if let Some(&held) = self.owners.get(&owner) {
            return if held == i {
                Ok(())
            } else {
                Err(IpamError::OwnerHasOtherIp {
                    ip: self.ips.addr(held),
                    owner,
                })
            };
        }
        if !self.ips.pool.take(i) {
            return Err(IpamError::AlreadyAllocated { ip });
        }
        self.by_index.insert(i, owner.clone());
        self.owners.insert(owner, i);
        Ok(())
    }

    /// Frees the IP of `owner`, returning it; None if the owner held none.
    pub fn release(&mut self, owner: &str) -> Option<IpAddr> {
        let i = self.owners.remove(owner)?;
        self.by_index.remove(&i);
        self.ips.pool.put(i);
        Some(self.ips.addr(i))
    }

    /// The IP `owner` holds.
    pub fn get(&self, owner: &str) -> Option<IpAddr> {
        self.owners.get(owner).map(|&i| self.ips.addr(i))
    }

    /// The owner holding `ip`, if any.
    pub fn owner_of(&self, ip: IpAddr) -> Option<&str> {
        let i = self.ips.index_of(ip).ok()?;
        self.by_index.get(&i).map(String::as_str)
    }

    /// Whether `ip` is held (false for addresses outside the pool).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.ips.contains(ip)
    }

    /// Number of held IPs.
    pub fn used(&self) -> usize {
        self.ips.pool.used()
    }

    /// Number of free pod IPs.
    pub fn free(&self) -> usize {
        self.ips.pool.dynamic_free()
    }

    /// Number of pod IPs the node CIDR offers (without network, gateway and
    /// broadcast).
    pub fn capacity(&self) -> usize {
        self.ips.pool.len()
    }

    /// (owner, IP) pairs, sorted by owner.
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.owners
            .iter()
            .map(|(owner, &i)| (owner.as_str(), self.ips.addr(i)))
    }

    /// The state, for persisting.
    pub fn snapshot(&self) -> PodIpSnapshot {
        PodIpSnapshot {
            version: SNAPSHOT_VERSION,
            node_cidr: self.cidr(),
            owners: self.iter().map(|(o, ip)| (o.to_owned(), ip)).collect(),
            next: Some(self.ips.cursor_addr()),
        }
    }

    /// Replaces this allocator's state with the snapshot's. Fails, leaving
    /// `self` unchanged, when the snapshot's node CIDR differs
    /// (`SnapshotRangeMismatch`), its version is unknown, or its contents
    /// are invalid.
    pub fn restore(&mut self, snapshot: &PodIpSnapshot) -> Result<(), IpamError> {
        check_version(snapshot.version)?;
        check_range(&self.cidr(), &crate::cidr::normalize(snapshot.node_cidr))?;
        *self = Self::from_snapshot(snapshot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_reserved_and_first_pod_gets_dot_two() {
        let mut a = PodIpAllocator::new(net("10.244.1.0/24")).unwrap();
        assert_eq!(a.gateway(), ip("10.244.1.1"));
        assert_eq!(a.capacity(), 253);
        assert_eq!(a.allocate("uid-1").unwrap(), ip("10.244.1.2"));
        let cidr = a.cidr();
        for reserved in ["10.244.1.0", "10.244.1.1", "10.244.1.255"] {
            assert_eq!(
                a.allocate_specific("uid-x", ip(reserved)),
                Err(IpamError::ReservedAddress {
                    ip: ip(reserved),
                    cidr
                })
            );
        }
    }

    #[test]
    fn allocate_is_idempotent_per_owner() {
        let mut a = PodIpAllocator::new(net("10.244.1.0/24")).unwrap();
        let x = a.allocate("uid-1").unwrap();
        let y = a.allocate("uid-2").unwrap();
        assert_ne!(x, y);
        assert_eq!(a.allocate("uid-1").unwrap(), x);
        assert_eq!(a.used(), 2);
        assert_eq!(a.owner_of(x), Some("uid-1"));
        assert_eq!(a.owner_of(ip("10.244.1.200")), None);
        assert_eq!(a.owner_of(ip("10.0.0.1")), None);
        assert_eq!(a.get("uid-2"), Some(y));
    }

    #[test]
    fn release_by_owner_and_no_immediate_reuse() {
        let mut a = PodIpAllocator::new(net("10.244.1.0/29")).unwrap();
        // /29: .2 to .6 are pod addresses.
        let x = a.allocate("a").unwrap();
        assert_eq!(a.release("a"), Some(x));
        assert_eq!(a.release("a"), None);
        assert!(!a.is_allocated(x));
        assert_eq!(a.allocate("b").unwrap(), ip("10.244.1.3"));
        for owner in ["c", "d", "e"] {
            a.allocate(owner).unwrap();
        }
        // Only the released .2 is left; the cursor wraps round to it.
        assert_eq!(a.allocate("f").unwrap(), x);
        assert_eq!(
            a.allocate("g"),
            Err(IpamError::Exhausted {
                cidr: net("10.244.1.0/29")
            })
        );
        assert_eq!(a.used() + a.free(), a.capacity());
    }

    #[test]
    fn allocate_specific_rules() {
        let mut a = PodIpAllocator::new(net("10.244.1.0/24")).unwrap();
        a.allocate_specific("a", ip("10.244.1.9")).unwrap();
        a.allocate_specific("a", ip("10.244.1.9")).unwrap();
        assert_eq!(
            a.allocate_specific("b", ip("10.244.1.9")),
            Err(IpamError::AlreadyAllocated {
                ip: ip("10.244.1.9")
            })
        );
        assert_eq!(
            a.allocate_specific("a", ip("10.244.1.10")),
            Err(IpamError::OwnerHasOtherIp {
                owner: "a".into(),
                ip: ip("10.244.1.9")
            })
        );
        assert_eq!(
            a.allocate_specific("c", ip("10.244.2.9")),
            Err(IpamError::OutOfRange {
                ip: ip("10.244.2.9"),
                cidr: net("10.244.1.0/24")
            })
        );
        assert_eq!(a.used(), 1);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![("a", ip("10.244.1.9"))]);
    }

    #[test]
    fn size_limits() {
        for small in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127"] {
            assert_eq!(
                PodIpAllocator::new(net(small)),
                Err(IpamError::RangeTooSmall { cidr: net(small) })
            );
        }
        let mut tiny = PodIpAllocator::new(net("10.0.0.0/30")).unwrap();
        assert_eq!(tiny.allocate("a").unwrap(), ip("10.0.0.2"));
        assert!(matches!(
            tiny.allocate("b"),
            Err(IpamError::Exhausted { .. })
        ));
        assert_eq!(
            PodIpAllocator::new(net("fd00::/64")),
            Err(IpamError::RangeTooLarge {
                cidr: net("fd00::/64"),
                bits: 64,
                max_bits: MAX_POD_HOST_BITS
            })
        );
    }

    #[test]
    fn ipv6_node_cidr() {
        let mut a = PodIpAllocator::new(net("fd00:10:244::1:0/112")).unwrap();
        assert_eq!(a.gateway(), ip("fd00:10:244::1:1"));
        assert_eq!(a.allocate("a").unwrap(), ip("fd00:10:244::1:2"));
        // No broadcast in IPv6: the last address is a pod address.
        a.allocate_specific("b", ip("fd00:10:244::1:ffff")).unwrap();
        assert_eq!(a.capacity(), (1 << 16) - 2);
    }

    #[test]
    fn snapshot_shape_round_trip_and_mismatch() {
        let mut a = PodIpAllocator::new(net("10.244.1.0/24")).unwrap();
        a.allocate("pod-b").unwrap();
        a.allocate_specific("pod-a", ip("10.244.1.50")).unwrap();
        let json = serde_json::to_value(a.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "nodeCidr": "10.244.1.0/24",
                "owners": {"pod-a": "10.244.1.50", "pod-b": "10.244.1.2"},
                "next": "10.244.1.3"
            })
        );
        let snap: PodIpSnapshot = serde_json::from_value(json).unwrap();
        let mut b = PodIpAllocator::new(net("10.244.1.0/24")).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.allocate("pod-c").unwrap(), ip("10.244.1.3"));

        let mut other = PodIpAllocator::new(net("10.244.2.0/24")).unwrap();
        assert_eq!(
            other.restore(&snap),
            Err(IpamError::SnapshotRangeMismatch {
                expected: "10.244.2.0/24".into(),
                found: "10.244.1.0/24".into()
            })
        );
        assert_eq!(other.used(), 0);

        let mut bad = snap.clone();
        bad.owners.insert("pod-x".into(), ip("10.244.1.1"));
        assert!(matches!(
            PodIpAllocator::from_snapshot(&bad),
            Err(IpamError::ReservedAddress { .. })
        ));
    }

    #[test]
    fn from_in_use_rebuilds_owner_map() {
        let a = PodIpAllocator::from_in_use(
            net("10.244.1.0/24"),
            [("u1", ip("10.244.1.7")), ("u2", ip("10.244.1.3"))],
        )
        .unwrap();
        assert_eq!(a.owner_of(ip("10.244.1.3")), Some("u2"));
        assert_eq!(a.get("u1"), Some(ip("10.244.1.7")));
        assert_eq!(
            PodIpAllocator::from_in_use(
                net("10.244.1.0/24"),
                [("u1", ip("10.244.1.7")), ("u2", ip("10.244.1.7"))],
            ),
            Err(IpamError::AlreadyAllocated {
                ip: ip("10.244.1.7")
            })
        );
    }
}
