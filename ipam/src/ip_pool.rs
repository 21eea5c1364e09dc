//! A [`Pool`] whose indexes are the consecutive addresses of a CIDR from a
//! fixed first offset; shared by the ClusterIP and pod IP allocators.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::bitmap::Pool;
use crate::cidr;
use crate::error::IpamError;

/// Addresses `first..end` (offsets from the network address) of `cidr`,
/// tracked by a pool whose index 0 is offset `first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpPool {
    cidr: IpNetwork,
    first: u128,
    pub(crate) pool: Pool,
}

/// The offset just past the last usable address of `cidr`: IPv4 loses its
/// broadcast address, IPv6 has none.
pub(crate) fn usable_end(cidr: IpNetwork) -> u128 {
    let size = cidr::size(cidr);
    match cidr {
        IpNetwork::V4(_) => size.saturating_sub(1),
        IpNetwork::V6(_) => size,
    }
}

impl IpPool {
    /// Validates `cidr` (normalised first) and builds the pool over offsets
    /// `first..usable_end(cidr)`, of which the first `dynamic_start` indexes
    /// are only explicitly allocatable. Fails when the CIDR has more than
    /// `max_bits` host bits or fewer than `min_len` pool addresses.
    pub(crate) fn new(
        cidr: IpNetwork,
        first: u128,
        dynamic_start: usize,
        max_bits: u8,
        min_len: usize,
    ) -> Result<Self, IpamError> {
        let cidr = cidr::normalize(cidr);
        let bits = cidr::host_bits(cidr);
        if bits > max_bits {
            return Err(IpamError::RangeTooLarge {
                cidr,
                bits,
                max_bits,
            });
        }
        let ips = Self::unvalidated(cidr, first, dynamic_start);
        if ips.pool.len() < min_len {
            return Err(IpamError::RangeTooSmall { cidr });
        }
        Ok(ips)
    }

    /// The pool over `cidr` without the size checks of [`IpPool::new`]; for
    /// compile-time defaults known to be valid. A CIDR too large for memory
    /// yields an empty pool rather than a panic.
    pub(crate) fn unvalidated(cidr: IpNetwork, first: u128, dynamic_start: usize) -> Self {
        let cidr = cidr::normalize(cidr);
        let len = usize::try_from(usable_end(cidr).saturating_sub(first)).unwrap_or(0);
        Self {
            cidr,
            first,
            pool: Pool::new(len, dynamic_start),
        }
    }

    /// The (normalised) CIDR.
    pub(crate) fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// The address at pool index `i`.
    pub(crate) fn addr(&self, i: usize) -> IpAddr {
        cidr::addr_at(self.cidr, self.first + i as u128)
    }

    /// The pool index of `ip`: `OutOfRange` outside the CIDR,
    /// `ReservedAddress` for the CIDR's addresses that the pool does not
    /// cover (network, broadcast, gateway).
    pub(crate) fn index_of(&self, ip: IpAddr) -> Result<usize, IpamError> {
        let offset = cidr::offset_of(self.cidr, ip).ok_or(IpamError::OutOfRange {
            ip,
            cidr: self.cidr,
        })?;
        offset
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.pool.len())
            .ok_or(IpamError::ReservedAddress {
                ip,
                cidr: self.cidr,
            })
    }

    /// Whether `ip` is held (false for anything outside the pool).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.index_of(ip).is_ok_and(|i| self.pool.contains(i))
    }

    /// Held addresses, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pool.iter().map(|i| self.addr(i))
    }

    /// The address the next dynamic search starts at.
    pub(crate) fn cursor_addr(&self) -> IpAddr {
        self.addr(self.pool.cursor())
    }

    /// Sets the cursor to `ip`; errors if `ip` is not a dynamic address.
    pub(crate) fn set_cursor_addr(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let i = self.index_of(ip)?;
        if self.pool.set_cursor(i) {
            Ok(())
        } else {
            Err(IpamError::ReservedAddress {
                ip,
                cidr: self.cidr,
            })
        }
    }
}
