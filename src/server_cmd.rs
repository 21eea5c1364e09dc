//! `skiff server`: the API server with its embedded durable store, plus the
//! control-plane controllers running as clients of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ipnetwork::IpNetwork;
use skiff_control::api::ServerConfig;
use skiff_ipam::PortRange;
use tokio_util::sync::CancellationToken;

use crate::client::kube_client;

#[derive(Args)]
pub struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory of the durable store (created if missing).
    #[arg(long, default_value = "/var/lib/skiff/server")]
    data_dir: PathBuf,
    /// ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: IpNetwork,
    /// Pod network, split into one pod CIDR per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: IpNetwork,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_prefix: u8,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: PortRange,
    /// Serve the API only; do not run the scheduler and controllers.
    #[arg(long)]
    no_controllers: bool,
    /// Seconds a node may stay silent (no Lease renewal or status update)
    /// before its Ready condition becomes Unknown (Kubernetes'
    /// `--node-monitor-grace-period`).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    node_monitor_grace_seconds: u64,
    /// Seconds pods stay on a not-ready or unreachable node before they are
    /// evicted, unless they tolerate the taint for another time (Kubernetes'
    /// default `tolerationSeconds`).
    #[arg(long, default_value_t = 300)]
    pod_eviction_seconds: u64,
    /// Address pods reach the API server at: the endpoint of the
    /// `kubernetes` Service in `default` (port: the listen port). Default:
    /// the listen address, unless it is loopback or unspecified, in which
    /// case the Service gets no endpoint.
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
}

/// Every controller, with the node lifecycle timings from the flags.
fn controllers_config(
    grace_seconds: u64,
    eviction_seconds: u64,
) -> skiff_control::controllers::ControllersConfig {
    skiff_control::controllers::ControllersConfig {
        node_lifecycle: Some(skiff_control::controllers::NodeLifecycleConfig {
            grace: Duration::from_secs(grace_seconds),
            eviction_timeout: Duration::from_secs(eviction_seconds),
        }),
        ..Default::default()
    }
}

pub fn run(args: ServerArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let mut config = ServerConfig::new(args.listen, &args.data_dir);
    config.service_cidr = args.service_cidr;
    config.cluster_cidr = args.cluster_cidr;
    config.node_cidr_prefix = args.node_cidr_prefix;
    config.node_port_range = args.node_port_range;
    config.advertise_address = args.advertise_address;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let server = config.build().await.context("starting the API server")?;
        let url = format!("http://{}", server.local_addr());
        tracing::info!(%url, data_dir = %args.data_dir.display(), "API server listening");
        let running = server.spawn();
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if !args.no_controllers {
            let client = kube_client(&url)?;
            let s = stop.clone();
            tasks.push(tokio::spawn(async move {
                skiff_control::controllers::run_all(
                    client,
                    controllers_config(args.node_monitor_grace_seconds, args.pod_eviction_seconds),
                    async move { s.cancelled().await },
                )
                .await
                .context("controllers")
            }));
        }
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        tracing::info!("interrupted; shutting down");
        stop.cancel();
        for t in tasks {
            match t.await {
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "controller failed"),
                Err(e) => tracing::error!(error = %e, "controller task panicked"),
                Ok(Ok(())) => {}
            }
        }
        running.shutdown().await.context("stopping the API server")
    })
}
