//! Skiff IPAM: pure allocators (no IO) for ClusterIPs, NodePorts, per-node
//! pod CIDRs and pod IPs. Callers persist snapshots through the store.
