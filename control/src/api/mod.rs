//! The API server: the Kubernetes REST API over the store, on axum.
//!
//! Plain-data [`ServerConfig`] → [`ServerConfig::build`] (opens the store,
//! bootstraps, binds the listener) → [`Server::serve`] until a shutdown
//! future resolves, or [`Server::spawn`] for a background task (tests:
//! listen on `127.0.0.1:0`, then read [`RunningServer::addr`]).
//!
//! Layout:
//! - `routes`: paths and methods → the object layer; discovery endpoints;
//! - `resources`: get/list/create/update/patch/delete, subresources and the
//!   namespace cascade, generic over the kinds registry;
//! - `watch`: watch streams; `query`: query parameters and field selectors;
//! - `meta`: server-owned metadata, spec/status separation (pure);
//! - `patch`: merge, JSON and strategic merge patches (pure);
//! - `allocation`: ClusterIPs, NodePorts and node pod CIDRs;
//! - `deletion`: graceful deletion, finalizers, propagation (pure);
//! - `apiserver_service`: the `kubernetes` Service kept at startup;
//! - `defaults`: per-kind defaulting; `discovery`: discovery documents;
//! - `table`: `as=Table` output for kubectl's columns;
//! - `pagination`: `limit`/`continue` list pages (pure);
//! - `error`: `ApiError` → Kubernetes `Status`.
//!
//! Not served: `/openapi/v2` and `/openapi/v3` (404; kubectl then needs
//! `--validate=false`), server-side apply, `dryRun` (400), protobuf,
//! authentication.

pub mod allocation;
pub mod apiserver_service;
pub mod defaults;
pub mod deletion;
pub mod discovery;
pub mod error;
pub mod meta;
pub mod pagination;
pub mod patch;
pub mod query;
pub mod resources;
pub mod routes;
pub mod table;
pub mod watch;

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use skiff_ipam::PortRange;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use allocation::AllocationConfig;
pub use error::ApiError;
pub use resources::Resources;

use crate::kinds::Kinds;
use crate::store::{CompactionPolicy, RedbStore, Store, StoreError, spawn_compactor};

/// Everything needed to start an API server. Plain data.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Directory of the durable store (used by [`ServerConfig::build`]).
    pub data_dir: PathBuf,
    /// ClusterIP range.
    pub service_cidr: IpNetwork,
    /// Pod network, split into per-node pod CIDRs.
    pub cluster_cidr: IpNetwork,
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_prefix: u8,
    /// NodePort range.
    pub node_port_range: PortRange,
    /// Store history retention (bounds how old a watch can resume).
    pub compaction: CompactionPolicy,
    /// Watch duration when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// BOOKMARK interval for watches that allow bookmarks.
    pub bookmark_interval: Duration,
    /// Address pods reach this server at, for the `kubernetes` Service's
    /// EndpointSlice (`None`: the listen address, unless it is loopback or
    /// unspecified, in which case there is no slice).
    pub advertise_address: Option<IpAddr>,
}

impl ServerConfig {
    /// Kubernetes defaults: service CIDR 10.96.0.0/12, cluster CIDR
    /// 10.244.0.0/16 in /24s, NodePorts 30000–32767.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen,
            data_dir: data_dir.into(),
            service_cidr: skiff_ipam::DEFAULT_SERVICE_CIDR,
            cluster_cidr: skiff_ipam::DEFAULT_CLUSTER_CIDR,
            node_cidr_prefix: skiff_ipam::DEFAULT_NODE_PREFIX,
            node_port_range: skiff_ipam::DEFAULT_NODE_PORT_RANGE,
            compaction: CompactionPolicy::default(),
            default_watch_timeout: Duration::from_secs(30 * 60),
            bookmark_interval: Duration::from_secs(60),
            advertise_address: None,
        }
    }

    fn allocation_config(&self) -> AllocationConfig {
        AllocationConfig {
            service_cidr: self.service_cidr,
            node_port_range: self.node_port_range,
            cluster_cidr: self.cluster_cidr,
            node_cidr_prefix: self.node_cidr_prefix,
        }
    }

    /// Opens the durable store in `data_dir` and builds the server.
    ///
    /// # Errors
    /// See [`ServerError`].
    pub async fn build(self) -> Result<Server, ServerError> {
        let dir = self.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir))
            .await
            .map_err(|e| ServerError::Startup(format!("store opener panicked: {e}")))??;
        self.build_with_store(Arc::new(store)).await
    }

    /// Builds the server over an already open store (e.g. `MemStore`):
    /// bootstraps it (default namespaces, allocator state), starts the
    /// compactor and binds the listener.
    ///
    /// # Errors
    /// See [`ServerError`].
    pub async fn build_with_store(self, store: Arc<dyn Store>) -> Result<Server, ServerError> {
        let allocations = allocation::Allocations::new(store.clone(), self.allocation_config())
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let resources = Arc::new(Resources::new(store.clone(), Kinds::builtin(), allocations));
        // Bound before bootstrapping: the `kubernetes` Service needs the port.
        let listener =
            TcpListener::bind(self.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: self.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: self.listen,
            source,
        })?;
        resources
            .bootstrap()
            .await
            .map_err(ServerError::Bootstrap)?;
        resources
            .ensure_kubernetes_service(
                local_addr.port(),
                apiserver_service::endpoint_address(local_addr.ip(), self.advertise_address),
            )
            .await
            .map_err(ServerError::Bootstrap)?;
        let compactor = spawn_compactor(&store, self.compaction.clone());
        let namespace_finisher = tokio::spawn(resources.clone().run_namespace_finisher());
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = routes::AppState {
            resources: resources.clone(),
            server_address: local_addr.to_string(),
            default_watch_timeout: self.default_watch_timeout,
            bookmark_interval: self.bookmark_interval,
            shutdown: shutdown_rx,
        };
        tracing::info!(%local_addr, "API server ready");
        Ok(Server {
            listener,
            local_addr,
            router: routes::router(state),
            resources,
            compactor,
            namespace_finisher,
            shutdown_tx,
        })
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// A configured range is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Bootstrapping (default namespaces, allocator state) failed.
    #[error("bootstrap failed: {0}")]
    Bootstrap(#[source] ApiError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
    /// Startup machinery failed.
    #[error("startup failed: {0}")]
    Startup(String),
}

/// A built, bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    resources: Arc<Resources>,
    compactor: tokio::task::JoinHandle<()>,
    namespace_finisher: tokio::task::JoinHandle<()>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The object layer, for in-process callers (controllers in the same
    /// binary may also simply use the HTTP API).
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// Serves until `shutdown` resolves, then ends open watches, waits for
    /// in-flight requests and stops the compactor.
    ///
    /// # Errors
    /// [`ServerError::Serve`] if the listener fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            local_addr,
            router,
            resources,
            compactor,
            namespace_finisher,
            shutdown_tx,
        } = self;
        let span = tracing::info_span!("api_server", %local_addr);
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("API server shutting down");
                // Watches are endless responses: end them so the graceful
                // shutdown does not wait for their timeouts.
                let _no_watchers = shutdown_tx.send(true);
            })
            .into_future()
            .instrument(span)
            .await
            .map_err(ServerError::Serve);
        // Background tasks hold the store: wait until they are gone so a
        // durable store can be reopened as soon as this returns.
        for task in [compactor, namespace_finisher] {
            task.abort();
            let _cancelled = task.await;
        }
        drop(resources);
        result
    }

    /// Serves on a background task; stop it with [`RunningServer::shutdown`].
    pub fn spawn(self) -> RunningServer {
        let addr = self.local_addr;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        RunningServer {
            addr,
            shutdown: Some(tx),
            task,
        }
    }
}

/// A server serving on a background task.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the server (and its store handle) is
    /// gone.
    ///
    /// # Errors
    /// What serving failed with.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Startup(format!("server task failed: {e}"))),
        }
    }
}
