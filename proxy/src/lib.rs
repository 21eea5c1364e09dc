//! Skiff service proxy.
pub mod dataplane;
pub mod ebpf;
pub mod iptables;
pub mod model;
pub mod select;
pub mod sync;
