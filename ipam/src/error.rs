//! The one error type every allocator returns.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::port::PortRange;

/// Why an allocation, release, construction or restore failed.
///
/// Variants carry the values involved so callers can report them (for
/// example as a Kubernetes `Status` message) and match on the variant rather
/// than on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The address is not inside the allocator's CIDR (or is of the other
    /// address family).
    #[error("IP {ip} is not in range {cidr}")]
    OutOfRange {
        /// The requested address.
        ip: IpAddr,
        /// The allocator's CIDR.
        cidr: IpNetwork,
    },
    /// The address is inside the CIDR but never allocatable: the network
    /// address, the IPv4 broadcast address, or a node's gateway address.
    #[error("IP {ip} is reserved in {cidr} (network, broadcast or gateway address)")]
    ReservedAddress {
        /// The requested address.
        ip: IpAddr,
        /// The allocator's CIDR.
        cidr: IpNetwork,
    },
    /// The address is already held.
    #[error("IP {ip} is already allocated")]
    AlreadyAllocated {
        /// The requested address.
        ip: IpAddr,
    },
    /// No free address is left for dynamic allocation.
    #[error("no free IP left in {cidr}")]
    Exhausted {
        /// The allocator's CIDR.
        cidr: IpNetwork,
    },
    /// The port is not inside the allocator's range.
    #[error("port {port} is not in range {range}")]
    PortOutOfRange {
        /// The requested port.
        port: u16,
        /// The allocator's range.
        range: PortRange,
    },
    /// The port is already held.
    #[error("port {port} is already allocated")]
    PortAlreadyAllocated {
        /// The requested port.
        port: u16,
    },
    /// No free port is left in the range.
    #[error("no free port left in range {range}")]
    PortsExhausted {
        /// The allocator's range.
        range: PortRange,
    },
    /// A port range string or bounds could not be accepted.
    #[error("invalid port range {input:?}: {reason}")]
    InvalidPortRange {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CIDR is too large to track with a bitmap (or, for service CIDRs,
    /// larger than Kubernetes allows).
    #[error("range {cidr} is too large: {bits} bits to allocate, at most {max_bits} allowed")]
    RangeTooLarge {
        /// The offending CIDR.
        cidr: IpNetwork,
        /// How many bits of address (or subnet index) it spans.
        bits: u8,
        /// The limit.
        max_bits: u8,
    },
    /// The CIDR leaves no allocatable address once reserved ones are removed.
    #[error("range {cidr} is too small: no allocatable address left after reserved ones")]
    RangeTooSmall {
        /// The offending CIDR.
        cidr: IpNetwork,
    },
    /// The per-node prefix length cannot split the cluster CIDR into usable
    /// node CIDRs.
    #[error("node prefix /{node_prefix} is invalid for cluster CIDR {cluster}: {reason}")]
    InvalidNodePrefix {
        /// The cluster CIDR.
        cluster: IpNetwork,
        /// The requested per-node prefix length.
        node_prefix: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CIDR is not one of the node-sized, aligned subnets of the cluster
    /// CIDR.
    #[error("CIDR {cidr} is not a /{node_prefix} subnet of cluster CIDR {cluster}")]
    NotANodeCidr {
        /// The requested CIDR.
        cidr: IpNetwork,
        /// The cluster CIDR.
        cluster: IpNetwork,
        /// The per-node prefix length.
        node_prefix: u8,
    },
    /// The node CIDR is already held by another node.
    #[error("CIDR {cidr} is already allocated to node {node:?}")]
    CidrAlreadyAllocated {
        /// The requested CIDR.
        cidr: IpNetwork,
        /// The node holding it.
        node: String,
    },
    /// The node already holds a different CIDR.
    #[error("node {node:?} already holds CIDR {cidr}")]
    NodeHasOtherCidr {
        /// The node.
        node: String,
        /// The CIDR it holds.
        cidr: IpNetwork,
    },
    /// The owner (pod uid) already holds a different IP.
    #[error("owner {owner:?} already holds IP {ip}")]
    OwnerHasOtherIp {
        /// The owner.
        owner: String,
        /// The IP it holds.
        ip: IpAddr,
    },
    /// A snapshot was taken for a different range than the allocator's.
    #[error("snapshot is for range {found}, allocator is for {expected}")]
    SnapshotRangeMismatch {
        /// The allocator's range, displayed.
        expected: String,
        /// The snapshot's range, displayed.
        found: String,
    },
    /// A snapshot has a format version this code does not understand.
    #[error("unsupported snapshot version {found} (supported: {supported})")]
    UnsupportedSnapshotVersion {
        /// The snapshot's version.
        found: u32,
        /// The version this code writes and reads.
        supported: u32,
    },
}
