//! Address arithmetic on a CIDR: address ↔ offset from the network address,
//! for both families, in `u128` so one code path serves IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// `cidr` with its host bits cleared ("10.96.0.5/12" → "10.96.0.0/12"), as
/// Go's `net.ParseCIDR` does for kube-apiserver flags.
pub fn normalize(cidr: IpNetwork) -> IpNetwork {
    match cidr {
        IpNetwork::V4(n) => {
            Ipv4Network::new_checked(n.network(), n.prefix()).map_or(cidr, Into::into)
        }
        IpNetwork::V6(n) => {
            Ipv6Network::new_checked(n.network(), n.prefix()).map_or(cidr, Into::into)
        }
    }
}

/// Number of host bits in `cidr` (32 − prefix or 128 − prefix).
pub fn host_bits(cidr: IpNetwork) -> u8 {
    max_prefix(cidr).saturating_sub(cidr.prefix())
}

/// 32 for IPv4, 128 for IPv6.
pub fn max_prefix(cidr: IpNetwork) -> u8 {
    match cidr {
        IpNetwork::V4(_) => 32,
        IpNetwork::V6(_) => 128,
    }
}

/// Offset of `ip` from the network address of `cidr`; None when `ip` is of
/// the other family or outside the CIDR.
pub fn offset_of(cidr: IpNetwork, ip: IpAddr) -> Option<u128> {
    match (cidr, ip) {
        (IpNetwork::V4(n), IpAddr::V4(a)) if n.contains(a) => {
            Some(u128::from(u32::from(a) - u32::from(n.network())))
        }
        (IpNetwork::V6(n), IpAddr::V6(a)) if n.contains(a) => {
            Some(u128::from(a) - u128::from(n.network()))
        }
        _ => None,
    }
}

/// The address `offset` past the network address of `cidr`. Callers pass
/// offsets below the CIDR's size; larger ones wrap within the family.
pub fn addr_at(cidr: IpNetwork, offset: u128) -> IpAddr {
    match cidr {
        IpNetwork::V4(n) => {
            // Truncation is fine: IPv4 offsets are below 2^32 by construction.
            let offset = offset as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(offset)))
        }
        IpNetwork::V6(n) => {
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(offset)))
        }
    }
}

/// Number of addresses in `cidr`, saturating at `u128::MAX` for ::/0.
pub fn size(cidr: IpNetwork) -> u128 {
    1u128
        .checked_shl(u32::from(host_bits(cidr)))
        .unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn normalize_clears_host_bits() {
        assert_eq!(normalize(net("10.96.0.5/12")), net("10.96.0.0/12"));
        assert_eq!(
            normalize(net("10.96.0.5/12")).ip(),
            net("10.96.0.0/12").ip()
        );
        assert_eq!(normalize(net("fd00::1/64")).ip(), net("fd00::/64").ip());
    }

    #[test]
    fn offsets_round_trip_in_both_families() {
        let v4 = net("10.96.0.0/12");
        let ip: IpAddr = "10.100.1.2".parse().unwrap();
        let off = offset_of(v4, ip).unwrap();
        assert_eq!(off, (4 << 16) + 256 + 2);
        assert_eq!(addr_at(v4, off), ip);
        assert_eq!(offset_of(v4, "10.112.0.0".parse().unwrap()), None);
        assert_eq!(offset_of(v4, "fd00::1".parse().unwrap()), None);

        let v6 = net("fd00:10::/108");
        let ip6: IpAddr = "fd00:10::f:ffff".parse().unwrap();
        assert_eq!(offset_of(v6, ip6), Some((1 << 20) - 1));
        assert_eq!(addr_at(v6, (1 << 20) - 1), ip6);
        assert_eq!(offset_of(v6, "10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn sizes_and_host_bits() {
        assert_eq!(size(net("10.96.0.0/12")), 1 << 20);
        assert_eq!(host_bits(net("10.96.0.0/12")), 20);
        assert_eq!(size(net("fd00::/64")), 1 << 64);
        assert_eq!(size(net("::/0")), u128::MAX);
        assert_eq!(size(net("10.0.0.1/32")), 1);
    }
}
