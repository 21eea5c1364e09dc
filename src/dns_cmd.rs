//! `skiff dns`: the cluster DNS server on its own (the agent embeds the
//! same on each node).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ipnetwork::IpNetwork;
use skiff_dns::{DnsConfig, ViewHandle, run_feeder, system_upstreams};
use tokio_util::sync::CancellationToken;

use crate::client::kube_client;

#[derive(Args)]
pub struct DnsArgs {
    /// API server URL.
    #[arg(long, env = "SKIFF_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// Address to serve on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
    /// TTL of cluster records, seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Upstream resolvers for names outside the cluster domain (repeatable).
    /// Default: the nameservers of --resolv-conf.
    #[arg(long = "upstream", value_delimiter = ',')]
    upstreams: Vec<SocketAddr>,
    /// Where default upstreams are read from.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Do not forward at all (outside names get REFUSED).
    #[arg(long, conflicts_with = "upstreams")]
    no_forward: bool,
    /// CIDRs whose reverse (PTR) zones are answered here: the service and
    /// pod CIDRs. Repeatable.
    #[arg(long = "reverse-cidr", value_delimiter = ',', default_values = ["10.96.0.0/12", "10.244.0.0/16"])]
    reverse_cidrs: Vec<IpNetwork>,
}

pub fn run(args: DnsArgs) -> Result<()> {
    let upstreams = if args.no_forward {
        Vec::new()
    } else if args.upstreams.is_empty() {
        system_upstreams(Some(&args.resolv_conf)).with_context(|| {
            format!(
                "reading upstream resolvers from {}; pass --upstream or --no-forward",
                args.resolv_conf.display()
            )
        })?
    } else {
        args.upstreams.clone()
    };
    let config = DnsConfig {
        listen: args.listen,
        domain: args.domain.clone(),
        ttl: args.ttl,
        upstreams,
        reverse_cidrs: args.reverse_cidrs.clone(),
        ..DnsConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = kube_client(&args.server)?;
        let view = ViewHandle::new();
        let shutdown = CancellationToken::new();
        let server = config
            .build(view.clone())
            .await
            .with_context(|| format!("binding DNS on {}", args.listen))?;
        tracing::info!(listen = %server.local_addr(), domain = %args.domain, "cluster DNS serving");
        let feeder = tokio::spawn(run_feeder(client, view, shutdown.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        server
            .serve(shutdown.clone())
            .await
            .context("serving DNS")?;
        shutdown.cancel();
        feeder
            .await
            .context("DNS feeder task")?
            .context("watching services")?;
        Ok(())
    })
}
