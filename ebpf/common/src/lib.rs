//! Map keys and values shared by Skiff's kernel programs (`skiff-ebpf`) and
//! the userspace loader (`skiff-proxy`).
//!
//! Every type is `#[repr(C)] + Copy`, has explicit `_pad` fields that its
//! constructor zeroes (the kernel hashes keys byte by byte, so stray padding
//! bytes would make equal keys differ), names its byte order in the field name
//! (`_be` = network order, everything else host order) and carries a
//! compile-time size assertion. Map names fit the kernel's 15-byte limit.
//!
//! Layout follows Cilium's load balancer (`bpf/lib/lb.h`): a flat service map
//! keyed by {vip, port, slot, proto}; slot 0 is the service entry (backend
//! count, reverse-NAT id, flags), slots 1..=count name backend ids; backends
//! are written once and shared by every service that uses them.
#![no_std]

pub mod maps;
pub mod reason;
pub mod types;

pub use maps::*;
pub use reason::*;
pub use types::*;
