//! The eBPF dataplane's userspace side (aya): the embedded kernel object,
//! loading with pinned maps, and typed map access that never exposes a
//! dangling id to the datapath.
//!
//! - `object`: the kernel object built by `build.rs` (may be absent).
//! - `loader`: loads programs with maps pinned under a per-node directory.
//! - `maps`: typed handles and the ordered write protocol.
//! - `plan`: pure planning of map operations from the desired state.
//! - `dataplane`: [`EbpfDataplane`], the `Dataplane` implementation.
//! - `error`: [`EbpfError`].

pub mod dataplane;
pub mod error;
pub mod loader;
pub mod maps;
pub mod object;
pub mod plan;

pub use dataplane::{DEFAULT_PIN_ROOT, EbpfConfig, EbpfDataplane, remove_pins};
pub use error::EbpfError;
pub use loader::{Loaded, PROG_TC};
pub use maps::{BackendSpec, ServiceMaps, ServiceSpec};
