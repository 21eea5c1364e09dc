//! The EndpointSlice controller: keeps `discovery.k8s.io/v1` EndpointSlices
//! in step with the Pods each Service's selector picks.
//!
//! Layout, kube-runtime style:
//! - [`desired`]: pure — Service + Pods + Nodes (+ the slices that exist,
//!   as a placement hint) → the slices that should exist;
//! - [`diff`]: pure — existing vs desired → the minimal creates, updates
//!   and deletes;
//! - [`controller`]: the runner — watchers and reflector caches for
//!   Services, Pods, Nodes and EndpointSlices, a kube-runtime `Controller`
//!   keyed by Service, and a reconcile that applies the diff through the API.

pub mod controller;
pub mod desired;
pub mod diff;

pub use controller::{Context, Error, reconcile, run};
pub use desired::{DesiredError, desired_slices, service_selector};
pub use diff::{SliceChanges, diff};

/// Label naming the Service a slice belongs to (Kubernetes' well-known key).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`]; slices with another value are left alone.
pub const MANAGED_BY: &str = "endpointslice-controller.skiff.io";
/// Label (empty value) set on the slices of headless Services, as Kubernetes does.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Node label whose value becomes an endpoint's `zone`.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Most endpoints one slice holds (Kubernetes' default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address type this controller produces.
pub const ADDRESS_TYPE_IPV4: &str = "IPv4";
