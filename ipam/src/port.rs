//! NodePort allocation from a port range.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bitmap::Pool;
use crate::error::IpamError;
use crate::snapshot::{SNAPSHOT_VERSION, check_range, check_version};

/// An inclusive range of ports, `first..=last`, never containing port 0.
///
/// Parses and displays like kube-apiserver's `--service-node-port-range`:
/// `"30000-32767"`, `"30000+2767"` (first plus offset of the last port) or a
/// single port `"30000"`; serialises as the `"first-last"` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// The default NodePort range, 30000–32767, as in Kubernetes.
pub const DEFAULT_NODE_PORT_RANGE: PortRange = PortRange {
    first: 30000,
    last: 32767,
};

impl PortRange {
    /// The range `first..=last`; `InvalidPortRange` when `first` is 0 or
    /// above `last`.
    pub fn new(first: u16, last: u16) -> Result<Self, IpamError> {
        let invalid = |reason| IpamError::InvalidPortRange {
            input: format!("{first}-{last}"),
            reason,
        };
        if first == 0 {
            return Err(invalid("port 0 cannot be allocated"));
        }
        if first > last {
            return Err(invalid("first port is above last port"));
        }
        Ok(Self { first, last })
    }

    /// The lowest port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The highest port.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Number of ports (at least 1).
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Always false: a range holds at least one port. Present for the
    /// `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    /// [`DEFAULT_NODE_PORT_RANGE`].
    fn default() -> Self {
        DEFAULT_NODE_PORT_RANGE
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| IpamError::InvalidPortRange {
            input: s.to_owned(),
            reason,
        };
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| invalid("ports must be integers from 1 to 65535"))
        };
        let trimmed = s.trim();
        let (first, last) = if let Some((a, b)) = trimmed.split_once('-') {
            (port(a)?, port(b)?)
        } else if let Some((a, n)) = trimmed.split_once('+') {
            let first = port(a)?;
            let last = first
                .checked_add(port(n)?)
                .ok_or_else(|| invalid("range goes past port 65535"))?;
            (first, last)
        } else {
            let p = port(trimmed)?;
            (p, p)
        };
        // Re-label errors from `new` with the text the user gave.
        Self::new(first, last).map_err(|e| match e {
            IpamError::InvalidPortRange { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

impl TryFrom<String> for PortRange {
    type Error = IpamError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> Self {
        r.to_string()
    }
}

/// Hands out NodePorts from a [`PortRange`].
///
/// Same shape as [`ServiceIpAllocator`](crate::ServiceIpAllocator): a
/// rotating cursor for [`allocate_next`](Self::allocate_next), explicit
/// requests through [`allocate_specific`](Self::allocate_specific), and
/// `used() + free() == capacity()` always (no port is reserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAllocator {
    range: PortRange,
    pool: Pool,
}

/// Persisted state of a [`PortAllocator`].
///
/// JSON shape (stable):
/// `{"version":1,"range":"30000-32767","allocated":[30000,31080],"next":30001}`.
/// `next` may be omitted; the search then starts at the first port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSnapshot {
    /// Format version, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The range the snapshot was taken from.
    pub range: PortRange,
    /// Held ports, ascending.
    pub allocated: Vec<u16>,
    /// Where [`PortAllocator::allocate_next`] resumes its search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u16>,
}

impl PortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            pool: Pool::new(range.len(), 0),
        }
    }

    /// An allocator over `range` holding `in_use` (rebuilt from Service
    /// objects). Strict: fails on the first port outside the range or listed
    /// twice; for a lenient repair call [`new`](Self::new) then
    /// [`allocate_specific`](Self::allocate_specific) per port.
    pub fn from_in_use(
        range: PortRange,
        in_use: impl IntoIterator<Item = u16>,
    ) -> Result<Self, IpamError> {
        let mut alloc = Self::new(range);
        for port in in_use {
            alloc.allocate_specific(port)?;
        }
        Ok(alloc)
    }

    /// An allocator over the snapshot's own range with its state.
    pub fn from_snapshot(snapshot: &PortSnapshot) -> Result<Self, IpamError> {
        check_version(snapshot.version)?;
        let mut alloc = Self::from_in_use(snapshot.range, snapshot.allocated.iter().copied())?;
        if let Some(next) = snapshot.next {
            let i = alloc.index_of(next)?;
            alloc.pool.set_cursor(i);
        }
        Ok(alloc)
    }

    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    fn index_of(&self, port: u16) -> Result<usize, IpamError> {
        if self.range.contains(port) {
            Ok(usize::from(port - self.range.first))
        } else {
            Err(IpamError::PortOutOfRange {
                port,
                range: self.range,
            })
        }
    }

    fn port_at(&self, i: usize) -> u16 {
        // Indexes come from the pool, whose length is the range's, so the
        // sum stays within `first..=last`.
        self.range.first + u16::try_from(i).unwrap_or(0)
    }

    /// Allocates the next free port after the last one handed out, wrapping
    /// round; `PortsExhausted` when none is left.
    pub fn allocate_next(&mut self) -> Result<u16, IpamError> {
        match self.pool.take_next() {
            Some(i) => Ok(self.port_at(i)),
            None => Err(IpamError::PortsExhausted { range: self.range }),
        }
    }

    /// Allocates exactly `port` (a user-requested `nodePort`); fails with
    /// `PortOutOfRange` or `PortAlreadyAllocated`.
    pub fn allocate_specific(&mut self, port: u16) -> Result<(), IpamError> {
        let i = self.index_of(port)?;
        if self.pool.take(i) {
            Ok(())
        } else {
            Err(IpamError::PortAlreadyAllocated { port })
        }
    }

    /// Releases `port`: `Ok(true)` if it was held, `Ok(false)` if it was
    /// free; `PortOutOfRange` outside the range.
    pub fn release(&mut self, port: u16) -> Result<bool, IpamError> {
        let i = self.index_of(port)?;
        Ok(self.pool.put(i))
    }

    /// Whether `port` is held (false outside the range).
    pub fn is_allocated(&self, port: u16) -> bool {
        self.index_of(port).is_ok_and(|i| self.pool.contains(i))
    }

    /// Number of held ports.
    pub fn used(&self) -> usize {
        self.pool.used()
    }

    /// Number of free ports.
    pub fn free(&self) -> usize {
        self.pool.dynamic_free()
    }

    /// Number of ports in the range.
    pub fn capacity(&self) -> usize {
        self.pool.len()
    }

    /// Held ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.pool.iter().map(|i| self.port_at(i))
    }

    /// The state, for persisting.
    pub fn snapshot(&self) -> PortSnapshot {
        PortSnapshot {
            version: SNAPSHOT_VERSION,
            range: self.range,
            allocated: self.iter().collect(),
            next: Some(self.port_at(self.pool.cursor())),
        }
    }

    /// Replaces this allocator's state with the snapshot's. Fails, leaving
    /// `self` unchanged, when the snapshot's range differs
    /// (`SnapshotRangeMismatch`), its version is unknown, or it lists an
    /// invalid or duplicate port.
    pub fn restore(&mut self, snapshot: &PortSnapshot) -> Result<(), IpamError> {
        check_version(snapshot.version)?;
        check_range(&self.range, &snapshot.range)?;
        *self = Self::from_snapshot(snapshot)?;
        Ok(())
    }
}

impl Default for PortAllocator {
    /// An empty allocator over [`DEFAULT_NODE_PORT_RANGE`].
    fn default() -> Self {
        Self::new(DEFAULT_NODE_PORT_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_apiserver_forms() {
        assert_eq!(
            "30000-32767".parse::<PortRange>().unwrap(),
            DEFAULT_NODE_PORT_RANGE
        );
        assert_eq!(
            " 30000 - 32767 ".parse::<PortRange>().unwrap(),
            DEFAULT_NODE_PORT_RANGE
        );
        assert_eq!(
            "30000+2767".parse::<PortRange>().unwrap(),
            DEFAULT_NODE_PORT_RANGE
        );
        assert_eq!(
            "8080".parse::<PortRange>().unwrap(),
            PortRange::new(8080, 8080).unwrap()
        );
        assert_eq!(DEFAULT_NODE_PORT_RANGE.to_string(), "30000-32767");
        assert_eq!(DEFAULT_NODE_PORT_RANGE.len(), 2768);
    }

    #[test]
    fn rejects_bad_ranges() {
        for bad in [
            "",
            "abc",
            "30000-",
            "32767-30000",
            "0-10",
            "65000+1000",
            "1-70000",
            "-5",
        ] {
            match bad.parse::<PortRange>() {
                Err(IpamError::InvalidPortRange { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            PortRange::new(0, 5),
            Err(IpamError::InvalidPortRange { .. })
        ));
        assert!(matches!(
            PortRange::new(6, 5),
            Err(IpamError::InvalidPortRange { .. })
        ));
    }

    #[test]
    fn range_serialises_as_string_and_validates_on_read() {
        assert_eq!(
            serde_json::to_string(&DEFAULT_NODE_PORT_RANGE).unwrap(),
            r#""30000-32767""#
        );
        assert!(serde_json::from_str::<PortRange>(r#""9-1""#).is_err());
    }

    #[test]
    fn allocates_in_order_rotating_and_exhausts() {
        let range = PortRange::new(30000, 30002).unwrap();
        let mut a = PortAllocator::new(range);
        assert_eq!(a.allocate_next().unwrap(), 30000);
        assert_eq!(a.allocate_next().unwrap(), 30001);
        assert_eq!(a.release(30000), Ok(true));
        // The just-released port waits behind the untouched 30002.
        assert_eq!(a.allocate_next().unwrap(), 30002);
        assert_eq!(a.allocate_next().unwrap(), 30000);
        assert_eq!(a.allocate_next(), Err(IpamError::PortsExhausted { range }));
        assert_eq!(a.used(), 3);
        assert_eq!(a.free(), 0);
    }

    #[test]
    fn specific_and_release_errors() {
        let mut a = PortAllocator::default();
        a.allocate_specific(31080).unwrap();
        assert_eq!(
            a.allocate_specific(31080),
            Err(IpamError::PortAlreadyAllocated { port: 31080 })
        );
        assert_eq!(
            a.allocate_specific(80),
            Err(IpamError::PortOutOfRange {
                port: 80,
                range: DEFAULT_NODE_PORT_RANGE
            })
        );
        assert_eq!(
            a.release(32768),
            Err(IpamError::PortOutOfRange {
                port: 32768,
                range: DEFAULT_NODE_PORT_RANGE
            })
        );
        assert!(a.is_allocated(31080));
        assert!(!a.is_allocated(80));
        assert_eq!(a.release(31080), Ok(true));
        assert_eq!(a.release(31080), Ok(false));
        assert_eq!(a.used() + a.free(), a.capacity());
    }

    #[test]
    fn single_port_range_at_the_top_of_the_port_space() {
        let mut a = PortAllocator::new("65535".parse().unwrap());
        assert_eq!(a.allocate_next().unwrap(), 65535);
        assert!(matches!(
            a.allocate_next(),
            Err(IpamError::PortsExhausted { .. })
        ));
        assert_eq!(a.snapshot().next, Some(65535));
    }

    #[test]
    fn from_in_use_is_strict() {
        let a = PortAllocator::from_in_use(DEFAULT_NODE_PORT_RANGE, [30000, 31000]).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![30000, 31000]);
        assert_eq!(
            PortAllocator::from_in_use(DEFAULT_NODE_PORT_RANGE, [30000, 30000]),
            Err(IpamError::PortAlreadyAllocated { port: 30000 })
        );
    }

    #[test]
    fn snapshot_shape_round_trip_and_mismatch() {
        let mut a = PortAllocator::default();
        a.allocate_specific(31080).unwrap();
        a.allocate_next().unwrap();
        let json = serde_json::to_value(a.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "range": "30000-32767",
                "allocated": [30000, 31080],
                "next": 30001
            })
        );
        let snap: PortSnapshot = serde_json::from_value(json).unwrap();
        let mut b = PortAllocator::default();
        b.restore(&snap).unwrap();
        assert_eq!(a, b);

        let mut other = PortAllocator::new(PortRange::new(20000, 20010).unwrap());
        let before = other.clone();
        assert_eq!(
            other.restore(&snap),
            Err(IpamError::SnapshotRangeMismatch {
                expected: "20000-20010".into(),
                found: "30000-32767".into()
            })
        );
        assert_eq!(other, before);
    }
}
