//! ClusterIP allocation from the service CIDR.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::ip_pool::IpPool;
use crate::snapshot::{SNAPSHOT_VERSION, check_range, check_version};

/// The default service CIDR, as kube-apiserver's `--service-cluster-ip-range`
/// defaults in kubeadm: 10.96.0.0/12.
pub const DEFAULT_SERVICE_CIDR: IpNetwork = IpNetwork::V4(
    match Ipv4Network::new_checked(Ipv4Addr::new(10, 96, 0, 0), 12) {
        Some(n) => n,
        None => panic!("10.96.0.0/12 is a valid network"),
    },
);

/// The largest service CIDR accepted, in host bits (a /12 for IPv4, a /108
/// for IPv6): kube-apiserver's limit, which keeps the bitmap at 128 KiB.
pub const MAX_SERVICE_HOST_BITS: u8 = 20;

/// Hands out ClusterIPs from a service CIDR.
///
/// Never allocatable: the network address and, for IPv4, the broadcast
/// address. The first usable address ([`reserved_first`]: 10.96.0.1 in the
/// default CIDR) belongs to the `kubernetes` service, as in Kubernetes:
/// [`allocate_next`] never returns it, and the control plane claims it with
/// `allocate_specific(alloc.reserved_first())` when it creates that service.
///
/// [`allocate_next`] uses a rotating cursor, so a released IP is reused only
/// after every other free address has been handed out once.
///
/// Counting: [`used`] counts every held address (the reserved first one
/// included once claimed); [`free`] counts what [`allocate_next`] can still
/// return, so `free() == 0` exactly when it would fail with `Exhausted`;
/// [`capacity`] counts all allocatable addresses, the reserved one included.
///
/// [`reserved_first`]: Self::reserved_first
/// [`allocate_next`]: Self::allocate_next
/// [`used`]: Self::used
/// [`free`]: Self::free
/// [`capacity`]: Self::capacity
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIpAllocator {
    ips: IpPool,
}

/// Persisted state of a [`ServiceIpAllocator`].
///
/// JSON shape (stable):
/// `{"version":1,"cidr":"10.96.0.0/12","allocated":["10.96.0.1","10.96.0.10"],"next":"10.96.0.11"}`.
/// `next` (where the rotating search resumes) may be omitted; it then
/// starts at the beginning of the dynamic range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIpSnapshot {
    /// Format version, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The service CIDR the snapshot was taken from.
    pub cidr: IpNetwork,
    /// Held ClusterIPs, ascending.
    pub allocated: Vec<IpAddr>,
    /// Where [`ServiceIpAllocator::allocate_next`] resumes its search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<IpAddr>,
}

impl ServiceIpAllocator {
    /// An empty allocator over `cidr` (host bits are cleared first, as
    /// kube-apiserver does).
    ///
    /// Fails with `RangeTooLarge` beyond [`MAX_SERVICE_HOST_BITS`] host
    /// bits, and with `RangeTooSmall` when the CIDR has no address left for
    /// dynamic allocation besides the reserved first one (an IPv4 /31 or
    /// /32, an IPv6 /127 or /128).
    pub fn new(cidr: IpNetwork) -> Result<Self, IpamError> {
        // Pool index 0 is offset 1 (the reserved first address); dynamic
        // allocation starts at index 1; at least one dynamic address.
        Ok(Self {
            ips: IpPool::new(cidr, 1, 1, MAX_SERVICE_HOST_BITS, 2)?,
        })
    }

    /// An allocator over `cidr` holding `in_use`: for rebuilding state from
    /// the Service objects themselves.
    ///
    /// Strict: fails on the first address that is outside the CIDR,
    /// reserved, or listed twice. For a lenient repair that skips and
    /// reports bad values, call [`new`](Self::new) and then
    /// [`allocate_specific`](Self::allocate_specific) per address.
    pub fn from_in_use(
        cidr: IpNetwork,
        in_use: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Self, IpamError> {
        let mut alloc = Self::new(cidr)?;
        for ip in in_use {
            alloc.allocate_specific(ip)?;
        }
        Ok(alloc)
    }

    /// An allocator over the snapshot's own CIDR with its state.
    pub fn from_snapshot(snapshot: &ServiceIpSnapshot) -> Result<Self, IpamError> {
        check_version(snapshot.version)?;
        let mut alloc = Self::from_in_use(snapshot.cidr, snapshot.allocated.iter().copied())?;
        if let Some(next) = snapshot.next {
            alloc.ips.set_cursor_addr(next)?;
        }
        Ok(alloc)
    }

    /// The service CIDR (normalised).
    pub fn cidr(&self) -> IpNetwork {
        self.ips.cidr()
    }

    /// The first usable address (10.96.0.1 in the default CIDR), kept for
    /// the `kubernetes` service: never returned by
    /// [`allocate_next`](Self::allocate_next); claim it with
    /// [`allocate_specific`](Self::allocate_specific).
    pub fn reserved_first(&self) -> IpAddr {
        self.ips.addr(0)
    }

    /// Allocates the next free address after the last one handed out,
    /// wrapping round; `Exhausted` when none is left.
    pub fn allocate_next(&mut self) -> Result<IpAddr, IpamError> {
        match self.ips.pool.take_next() {
            Some(i) => Ok(self.ips.addr(i)),
            None => Err(IpamError::Exhausted { cidr: self.cidr() }),
        }
    }

    /// Allocates exactly `ip` (a user-requested `spec.clusterIP`, or the
    /// reserved first address). Fails with `OutOfRange`, `ReservedAddress`
    /// (network or broadcast address) or `AlreadyAllocated`.
    pub fn allocate_specific(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let i = self.ips.index_of(ip)?;
        if self.ips.pool.take(i) {
            Ok(())
        } else {
            Err(IpamError::AlreadyAllocated { ip })
        }
    }

    /// Releases `ip`: `Ok(true)` if it was held, `Ok(false)` if it was free
    /// (so repeated releases are harmless); `OutOfRange` or
    /// `ReservedAddress` for addresses this allocator never hands out.
    pub fn release(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
        let i = self.ips.index_of(ip)?;
        Ok(self.ips.pool.put(i))
    }

    /// Whether `ip` is held (false for addresses outside the pool).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.ips.contains(ip)
    }

    /// Number of held addresses, the reserved first one included if claimed.
    pub fn used(&self) -> usize {
        self.ips.pool.used()
    }

    /// Number of addresses [`allocate_next`](Self::allocate_next) can still
    /// return (never counts the reserved first address).
    pub fn free(&self) -> usize {
        self.ips.pool.dynamic_free()
    }

    /// Number of allocatable addresses, the reserved first one included.
    pub fn capacity(&self) -> usize {
        self.ips.pool.len()
    }

    /// Held addresses, ascending.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips.iter()
    }

    /// The state, for persisting.
    pub fn snapshot(&self) -> ServiceIpSnapshot {
        ServiceIpSnapshot {
            version: SNAPSHOT_VERSION,
            cidr: self.cidr(),
            allocated: self.iter().collect(),
            next: Some(self.ips.cursor_addr()),
        }
    }

    /// Replaces this allocator's state with the snapshot's.
    ///
    /// Fails, leaving `self` unchanged, when the snapshot's CIDR differs
    /// from this allocator's (`SnapshotRangeMismatch`: the service CIDR was
    /// reconfigured; rebuild with [`from_in_use`](Self::from_in_use)
    /// instead), its version is unknown, or it lists an invalid or
    /// duplicate address.
    pub fn restore(&mut self, snapshot: &ServiceIpSnapshot) -> Result<(), IpamError> {
        check_version(snapshot.version)?;
        check_range(&self.cidr(), &crate::cidr::normalize(snapshot.cidr))?;
        *self = Self::from_snapshot(snapshot)?;
        Ok(())
    }
}

impl Default for ServiceIpAllocator {
    /// An empty allocator over [`DEFAULT_SERVICE_CIDR`].
    fn default() -> Self {
        // The constant passes `new`'s checks; a unit test asserts that
        // this equals `new(DEFAULT_SERVICE_CIDR)`.
        Self {
            ips: IpPool::unvalidated(DEFAULT_SERVICE_CIDR, 1, 1),
        }
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
    fn default_is_10_96_0_0_12_with_first_reserved() {
        let a = ServiceIpAllocator::default();
        assert_eq!(a, ServiceIpAllocator::new(net("10.96.0.0/12")).unwrap());
        assert_eq!(a.cidr(), net("10.96.0.0/12"));
        assert_eq!(a.reserved_first(), ip("10.96.0.1"));
        // 2^20 minus network and broadcast.
        assert_eq!(a.capacity(), (1 << 20) - 2);
        assert_eq!(a.free(), (1 << 20) - 3);
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn allocate_next_skips_network_and_reserved_first() {
        let mut a = ServiceIpAllocator::default();
        assert_eq!(a.allocate_next().unwrap(), ip("10.96.0.2"));
        assert_eq!(a.allocate_next().unwrap(), ip("10.96.0.3"));
        assert!(a.is_allocated(ip("10.96.0.2")));
        assert!(!a.is_allocated(ip("10.96.0.1")));
        assert_eq!(a.used(), 2);
    }

    #[test]
    fn reserved_first_is_claimable_explicitly() {
        let mut a = ServiceIpAllocator::default();
        let free_before = a.free();
        a.allocate_specific(a.reserved_first()).unwrap();
        assert!(a.is_allocated(ip("10.96.0.1")));
        assert_eq!(a.used(), 1);
        assert_eq!(a.free(), free_before, "reserved slot is not part of free()");
        assert_eq!(
            a.allocate_specific(ip("10.96.0.1")),
            Err(IpamError::AlreadyAllocated {
                ip: ip("10.96.0.1")
            })
        );
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out() {
        let mut a = ServiceIpAllocator::new(net("10.0.0.0/29")).unwrap();
        let cidr = a.cidr();
        for bad in ["10.0.0.0", "10.0.0.7"] {
            assert_eq!(
                a.allocate_specific(ip(bad)),
                Err(IpamError::ReservedAddress { ip: ip(bad), cidr })
            );
            assert_eq!(
                a.release(ip(bad)),
                Err(IpamError::ReservedAddress { ip: ip(bad), cidr })
            );
        }
        let mut got = Vec::new();
        while let Ok(x) = a.allocate_next() {
            got.push(x);
        }
        let expected: Vec<IpAddr> = (2..=6).map(|h| ip(&format!("10.0.0.{h}"))).collect();
        assert_eq!(got, expected);
        assert_eq!(a.allocate_next(), Err(IpamError::Exhausted { cidr }));
        assert_eq!(a.free(), 0);
    }

    #[test]
    fn allocate_specific_errors() {
        let mut a = ServiceIpAllocator::default();
        let cidr = a.cidr();
        a.allocate_specific(ip("10.100.0.10")).unwrap();
        assert_eq!(
            a.allocate_specific(ip("10.100.0.10")),
            Err(IpamError::AlreadyAllocated {
                ip: ip("10.100.0.10")
            })
        );
        assert_eq!(
            a.allocate_specific(ip("10.112.0.1")),
            Err(IpamError::OutOfRange {
                ip: ip("10.112.0.1"),
                cidr
            })
        );
        assert_eq!(
            a.allocate_specific(ip("fd00::1")),
            Err(IpamError::OutOfRange {
                ip: ip("fd00::1"),
                cidr
            })
        );
        assert_eq!(a.used(), 1);
    }

    #[test]
    fn release_is_idempotent_and_typed() {
        let mut a = ServiceIpAllocator::default();
        let x = a.allocate_next().unwrap();
        assert_eq!(a.release(x), Ok(true));
        assert_eq!(a.release(x), Ok(false));
        assert!(!a.is_allocated(x));
        assert_eq!(
            a.release(ip("192.168.0.1")),
            Err(IpamError::OutOfRange {
                ip: ip("192.168.0.1"),
                cidr: a.cidr()
            })
        );
    }

    #[test]
    fn just_released_ip_is_not_reused_immediately() {
        let mut a = ServiceIpAllocator::new(net("10.0.0.0/28")).unwrap();
        let first = a.allocate_next().unwrap();
        a.release(first).unwrap();
        let second = a.allocate_next().unwrap();
        assert_ne!(first, second);
        // It comes back only after the cursor has gone round.
        let mut seen = vec![second];
        while let Ok(x) = a.allocate_next() {
            seen.push(x);
        }
        assert_eq!(seen.last(), Some(&first));
        assert_eq!(seen.len(), a.capacity() - 1);
    }

    #[test]
    fn exhaustion_then_release_allows_reuse() {
        let mut a = ServiceIpAllocator::new(net("10.0.0.0/30")).unwrap();
        // /30: .1 reserved, .2 the only dynamic address.
        assert_eq!(a.allocate_next().unwrap(), ip("10.0.0.2"));
        assert!(matches!(
            a.allocate_next(),
            Err(IpamError::Exhausted { .. })
        ));
        a.release(ip("10.0.0.2")).unwrap();
        assert_eq!(a.allocate_next().unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn cidr_limits() {
        assert_eq!(
            ServiceIpAllocator::new(net("10.0.0.0/11")),
            Err(IpamError::RangeTooLarge {
                cidr: net("10.0.0.0/11"),
                bits: 21,
                max_bits: 20
            })
        );
        for small in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"] {
            assert_eq!(
                ServiceIpAllocator::new(net(small)),
                Err(IpamError::RangeTooSmall { cidr: net(small) }),
                "{small}"
            );
        }
        assert!(ServiceIpAllocator::new(net("fd00::/126")).is_ok());
    }

    #[test]
    fn host_bits_are_cleared() {
        let a = ServiceIpAllocator::new(net("10.96.3.7/12")).unwrap();
        assert_eq!(a.cidr().ip(), ip("10.96.0.0"));
        assert_eq!(a, ServiceIpAllocator::default());
    }

    #[test]
    fn ipv6_has_no_broadcast_exclusion() {
        let mut a = ServiceIpAllocator::new(net("fd00:10::/125")).unwrap();
        assert_eq!(a.reserved_first(), ip("fd00:10::1"));
        assert_eq!(a.capacity(), 7);
        let mut got = Vec::new();
        while let Ok(x) = a.allocate_next() {
            got.push(x);
        }
        assert_eq!(got.first(), Some(&ip("fd00:10::2")));
        assert_eq!(got.last(), Some(&ip("fd00:10::7")));
        assert_eq!(got.len(), 6);
        assert!(matches!(
            a.allocate_specific(ip("fd00:10::")),
            Err(IpamError::ReservedAddress { .. })
        ));
    }

    #[test]
    fn from_in_use_rebuilds_and_is_strict() {
        let cidr = DEFAULT_SERVICE_CIDR;
        let a = ServiceIpAllocator::from_in_use(cidr, [ip("10.96.0.1"), ip("10.96.0.10")]).unwrap();
        assert_eq!(a.used(), 2);
        assert!(a.is_allocated(ip("10.96.0.10")));
        assert_eq!(
            ServiceIpAllocator::from_in_use(cidr, [ip("10.96.0.10"), ip("10.96.0.10")]),
            Err(IpamError::AlreadyAllocated {
                ip: ip("10.96.0.10")
            })
        );
        assert!(matches!(
            ServiceIpAllocator::from_in_use(cidr, [ip("10.0.0.1")]),
            Err(IpamError::OutOfRange { .. })
        ));
    }

    #[test]
    fn snapshot_json_shape_is_stable() {
        let mut a = ServiceIpAllocator::default();
        a.allocate_specific(ip("10.96.0.1")).unwrap();
        a.allocate_specific(ip("10.96.0.10")).unwrap();
        a.allocate_next().unwrap();
        let json = serde_json::to_value(a.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "cidr": "10.96.0.0/12",
                "allocated": ["10.96.0.1", "10.96.0.2", "10.96.0.10"],
                "next": "10.96.0.3"
            })
        );
    }

    #[test]
    fn snapshot_restore_round_trip_keeps_cursor() {
        let mut a = ServiceIpAllocator::new(net("10.0.0.0/28")).unwrap();
        let x = a.allocate_next().unwrap();
        a.allocate_next().unwrap();
        a.release(x).unwrap();
        let json = serde_json::to_string(&a.snapshot()).unwrap();
        let snap: ServiceIpSnapshot = serde_json::from_str(&json).unwrap();
        let mut b = ServiceIpAllocator::new(net("10.0.0.0/28")).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(a, b);
        // Same cursor: both continue identically, without reusing x.
        assert_eq!(a.allocate_next().unwrap(), b.allocate_next().unwrap());
        assert_ne!(b.allocate_next().unwrap(), x);
    }

    #[test]
    fn restore_rejects_other_cidr_and_leaves_state() {
        let mut a = ServiceIpAllocator::default();
        a.allocate_next().unwrap();
        let before = a.clone();
        let other = ServiceIpAllocator::new(net("10.0.0.0/16"))
            .unwrap()
            .snapshot();
        assert_eq!(
            a.restore(&other),
            Err(IpamError::SnapshotRangeMismatch {
                expected: "10.96.0.0/12".into(),
                found: "10.0.0.0/16".into()
            })
        );
        assert_eq!(a, before);
    }

    #[test]
    fn restore_rejects_bad_contents() {
        let mut a = ServiceIpAllocator::default();
        let before = a.clone();
        let mut snap = a.snapshot();
        snap.version = 2;
        assert_eq!(
            a.restore(&snap),
            Err(IpamError::UnsupportedSnapshotVersion {
                found: 2,
                supported: 1
            })
        );
        let mut snap = a.snapshot();
        snap.allocated = vec![ip("10.96.0.5"), ip("10.96.0.5")];
        assert!(matches!(
            a.restore(&snap),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        let mut snap = a.snapshot();
        snap.next = Some(ip("10.96.0.1"));
        assert!(matches!(
            a.restore(&snap),
            Err(IpamError::ReservedAddress { .. })
        ));
        assert_eq!(a, before);
    }

    #[test]
    fn snapshot_without_next_is_accepted() {
        let snap: ServiceIpSnapshot = serde_json::from_str(
            r#"{"version":1,"cidr":"10.96.0.0/12","allocated":["10.96.0.2"]}"#,
        )
        .unwrap();
        let mut a = ServiceIpAllocator::from_snapshot(&snap).unwrap();
        assert_eq!(a.allocate_next().unwrap(), ip("10.96.0.3"));
    }

    #[test]
    fn allocate_next_scans_a_full_12_round_to_the_one_gap() {
        // Fill the whole /12, free one address near the end, and ask again:
        // the cursor has wrapped to the start, so the word-level scan must
        // cross all 16 Ki words to find the gap.
        let mut a = ServiceIpAllocator::default();
        while a.free() > 0 {
            a.allocate_next().unwrap();
        }
        assert_eq!(a.used(), (1 << 20) - 3);
        assert!(a.is_allocated(ip("10.111.255.254")));
        assert_eq!(a.release(ip("10.111.255.200")), Ok(true));
        assert_eq!(a.allocate_next().unwrap(), ip("10.111.255.200"));
        assert!(matches!(
            a.allocate_next(),
            Err(IpamError::Exhausted { .. })
        ));
    }
}
