//! The eBPF dataplane's userspace side (aya): the embedded kernel object,
//! loading with pinned maps, and typed map access that never exposes a
//! dangling id to the datapath.
//!
//! - `object`: the kernel object built by `build.rs` (may be absent).
//! - `loader`: loads programs with maps pinned under a per-node directory.
//! - `maps`: typed handles and the ordered write protocol.
//! - `error`: [`EbpfError`].

pub mod error;
pub mod loader;
pub mod maps;
pub mod object;

pub use error::EbpfError;
pub use loader::{Loaded, PROG_TC};
pub use maps::{BackendSpec, ServiceMaps, ServiceSpec};
