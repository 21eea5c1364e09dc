//! The scheduler: places unbound Pods onto Nodes.
//!
//! Layout:
//! - [`resources`]: quantity parsing and a pod's effective requests;
//! - [`info`]: what the scheduler knows about a node and a pending pod;
//! - [`filter`]: can the pod run on the node (readiness, cordon, taints,
//!   node selector/affinity, resources);
//! - [`score`]: least-allocated + owner spreading;
//! - [`algorithm`]: one decision, or the kube-style "0/3 nodes are
//!   available: ..." explanation;
//! - [`cache`]: node totals kept current so a decision is O(nodes).
//!
//! All of the above is pure. [`runner`] is the API client that watches
//! Pods and Nodes and binds; [`run`] starts it.

pub mod algorithm;
pub mod bench;
pub mod cache;
pub mod filter;
pub mod info;
pub mod resources;
pub mod runner;
pub mod score;
#[cfg(test)]
mod testkit;

pub use algorithm::{Unschedulable, schedule};
pub use bench::{BenchResult, bench_schedule};
pub use cache::SchedulerCache;
pub use runner::{SchedulerConfig, run, run_with};
