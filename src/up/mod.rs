//! The parts of `skiff up` / `skiff down` that are not orchestration:
//!
//! - [`plan`]: pure decisions (command lines, manifest rewriting,
//!   readiness summaries, the "what to try" text);
//! - [`forward`]: the TCP relay from the underlay namespace to the API
//!   server on loopback;
//! - [`record`]: the `up.json` record of what a `skiff up` started.

pub mod forward;
pub mod plan;
pub mod record;

/// The example manifests, embedded so `skiff up` works from an installed
/// binary too; a checkout's `examples/` dir is preferred when present.
pub const EXAMPLE_WEB: &str = include_str!("../../examples/web.yaml");
