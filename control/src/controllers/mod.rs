//! Workload controllers: level-triggered reconcilers over watch-fed caches
//! (kube-runtime: watcher → reflector cache → queue that never runs one key
//! twice at once → `reconcile(obj, ctx) -> Result<Action>`), one per file,
//! each an ordinary API client. [`run_all`] starts them all, and the
//! scheduler, as tokio tasks with their own tracing spans.
//!
//! - [`replicaset`]: keep `replicas` pods, adopt/release, status;
//! - [`deployment`]: ReplicaSet per template, rolling update / recreate,
//!   revisions, rollback, history, status;
//! - [`nodelifecycle`]: heartbeat timeout → Unknown → taints → eviction;
//! - [`gc`]: delete objects whose owners are gone;
//! - [`daemonset`]: one pod per eligible node, rolling updates;
//! - [`job`]: run pods to completion with parallelism and back-off.
//!
//! [`runtime`] holds what every controller's `run` shares around
//! kube-runtime (caches, owner mapping, the driven reconcile stream).
//! Shared, pure helpers: [`podstate`] (active/ready/available, deletion
//! order), [`owner`] (ownerReferences), [`template`] (pods from a
//! template), [`expectations`] (don't act on a cache that lags our own
//! writes).

pub mod daemonset;
pub mod deployment;
pub mod expectations;
pub mod gc;
pub mod job;
pub mod nodelifecycle;
pub mod owner;
pub mod podstate;
pub mod replicaset;
pub mod runtime;
pub mod template;
#[cfg(test)]
mod testkit;

use std::future::Future;

use futures::FutureExt;
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span};

pub use gc::GcConfig;
pub use nodelifecycle::NodeLifecycleConfig;

use crate::scheduler::SchedulerConfig;

/// How soon a reconcile that found a cache still filling runs again.
pub const SYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a reflector store has finished its first list. Reconciles check
/// this and requeue instead of waiting: the stores are fed by streams
/// that their own controller polls and stops polling at shutdown, so a
/// reconcile blocked on one would hold up a graceful shutdown.
pub fn cache_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

/// Which controllers to run, and their settings. Plain data.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// Run the scheduler with these settings (`None`: another scheduler
    /// places pods).
    pub scheduler: Option<SchedulerConfig>,
    /// Run the ReplicaSet controller.
    pub replica_sets: bool,
    /// Run the Deployment controller.
    pub deployments: bool,
    /// Run the DaemonSet controller.
    pub daemon_sets: bool,
    /// Run the Job controller.
    pub jobs: bool,
    /// Run the node lifecycle controller with these timings.
    pub node_lifecycle: Option<NodeLifecycleConfig>,
    /// Run the garbage collector with these settings.
    pub gc: Option<GcConfig>,
    /// Run the EndpointSlice controller ([`crate::endpointslice`]).
    pub endpoint_slices: bool,
}

impl Default for ControllersConfig {
    /// Everything on, Kubernetes' default timings.
    fn default() -> Self {
        ControllersConfig {
            scheduler: Some(SchedulerConfig::default()),
            replica_sets: true,
            deployments: true,
            daemon_sets: true,
            jobs: true,
            node_lifecycle: Some(NodeLifecycleConfig::default()),
            gc: Some(GcConfig::default()),
            endpoint_slices: true,
        }
    }
}

/// A controller that stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scheduler failed to start.
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::runner::Error),
    /// The ReplicaSet controller failed to start.
    #[error(transparent)]
    ReplicaSet(#[from] replicaset::Error),
    /// The Deployment controller failed to start.
    #[error(transparent)]
    Deployment(#[from] deployment::Error),
    /// The DaemonSet controller failed to start.
    #[error(transparent)]
    DaemonSet(#[from] daemonset::Error),
    /// The Job controller failed to start.
    #[error(transparent)]
    Job(#[from] job::Error),
    /// The node lifecycle controller failed to start.
    #[error(transparent)]
    NodeLifecycle(#[from] nodelifecycle::Error),
    /// The garbage collector failed to start.
    #[error(transparent)]
    Gc(#[from] gc::Error),
    /// The EndpointSlice controller failed to start.
    #[error(transparent)]
    EndpointSlice(#[from] crate::endpointslice::Error),
    /// A controller task panicked.
    #[error("controller task {name} panicked")]
    Panicked {
        /// Which controller.
        name: &'static str,
    },
}

/// Starts every configured controller (and the scheduler) and runs them
/// until `shutdown` resolves; then each finishes its in-flight reconciles.
///
/// # Errors
/// The first controller that stops with an error (typically a preflight
/// failure: the API server does not serve a resource it needs); the others
/// are then shut down too.
pub async fn run_all(
    client: Client,
    cfg: ControllersConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            // An error means the sender is gone: stop as well.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let mut tasks: JoinSet<(&'static str, Result<(), Error>)> = JoinSet::new();
    let mut names = std::collections::HashMap::new();
    macro_rules! start {
        ($name:literal, $fut:expr) => {{
            let fut = $fut;
            let handle = tasks.spawn(
                async move { ($name, fut.await.map_err(Error::from)) }
                    .instrument(info_span!("controller", name = $name)),
            );
            names.insert(handle.id(), $name);
        }};
    }
    if let Some(sc) = cfg.scheduler {
        start!(
            "scheduler",
            crate::scheduler::run_with(client.clone(), sc, stop())
        );
    }
    if cfg.replica_sets {
        start!("replicaset", replicaset::run(client.clone(), stop()));
    }
    if cfg.deployments {
        start!("deployment", deployment::run(client.clone(), stop()));
    }
    if cfg.daemon_sets {
        start!("daemonset", daemonset::run(client.clone(), stop()));
    }
    if cfg.jobs {
        start!("job", job::run(client.clone(), stop()));
    }
    if let Some(nl) = cfg.node_lifecycle {
        start!(
            "nodelifecycle",
            nodelifecycle::run(client.clone(), nl, stop())
        );
    }
    if let Some(gc) = cfg.gc {
        start!("gc", gc::run(client.clone(), gc, stop()));
    }
    if cfg.endpoint_slices {
        start!(
            "endpointslice",
            crate::endpointslice::run(client.clone(), stop())
        );
    }
    info!(controllers = ?names.values().collect::<Vec<_>>(), "controllers started");

    let mut shutdown = std::pin::pin!(shutdown);
    let mut first_error: Option<Error> = None;
    loop {
        tokio::select! {
            () = &mut shutdown, if !*stop_tx.borrow() => {
                info!("stopping controllers");
                let _ = stop_tx.send(true);
            }
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let result = match joined {
                    Ok((name, Ok(()))) => {
                        info!(controller = name, "controller stopped");
                        continue;
                    }
                    Ok((name, Err(e))) => {
                        error!(controller = name, error = %e, "controller failed");
                        e
                    }
                    Err(join) => {
                        let name = names.get(&join.id()).copied().unwrap_or("unknown");
                        error!(controller = name, error = %join, "controller task panicked");
                        Error::Panicked { name }
                    }
                };
                first_error.get_or_insert(result);
                let _ = stop_tx.send(true);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
