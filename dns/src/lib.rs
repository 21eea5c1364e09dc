//! Skiff cluster DNS: the cluster domain (`cluster.local`) answered from
//! the API's Services and EndpointSlices, everything else forwarded to the
//! node's resolvers. Built on hickory-server in its three layers:
//!
//! - [`view`]: the data. [`ClusterView`] is an immutable snapshot built
//!   purely from Kubernetes objects; [`ViewHandle`] swaps snapshots
//!   atomically so readers never wait. [`feeder`] keeps it current from
//!   kube-runtime watches.
//! - [`records`]: what a name holds (A/AAAA, SRV with glue, PTR, CNAME,
//!   NXDOMAIN vs NODATA, SOA) — pure functions over a view.
//! - [`zone`]: a hickory `ZoneHandler` over the live view.
//! - [`server`]: routing (hickory `Catalog`: our zones authoritative,
//!   the rest to a caching forwarder) and transport (UDP + TCP), with
//!   [`metrics`] counting queries and response codes.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use skiff_dns::{DnsConfig, ViewHandle, run_feeder};
//! use tokio_util::sync::CancellationToken;
//!
//! let view = ViewHandle::new();
//! let shutdown = CancellationToken::new();
//! tokio::spawn(run_feeder(client, view.clone(), shutdown.clone()));
//! let config = DnsConfig {
//!     upstreams: skiff_dns::system_upstreams(None)?,
//!     ..DnsConfig::default()
//! };
//! config.build(view).await?.serve(shutdown).await?;
//! # Ok(()) }
//! ```

pub mod feeder;
pub mod metrics;
pub mod records;
pub mod server;
pub mod view;
pub mod zone;

pub use feeder::{FeedError, run_feeder};
pub use metrics::{Metrics, MetricsSnapshot};
pub use records::{Lookup, RecordSettings};
pub use server::{DnsConfig, DnsError, DnsServer, system_upstreams, upstreams_from_resolv_conf};
pub use view::{ClusterView, ViewHandle};
pub use zone::ClusterZone;
