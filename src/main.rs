//! `skiff`: one binary, one subcommand per role. Each subcommand's work lives
//! in its crate; this file only parses arguments and dispatches.

mod client;
mod logging;
mod proxy_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: container-cluster networking built around a service proxy",
    long_about = "Skiff runs a small Kubernetes-API-compatible cluster: an API server with an \
                  embedded store, node agents that run pods in network namespaces, an eBPF \
                  (or iptables) service proxy and a cluster DNS server."
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info,skiff_proxy=debug`.
    #[arg(long, global = true, env = "SKIFF_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service proxy standalone against an API server.
    Proxy(proxy_cmd::ProxyArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log)?;
    match cli.command {
        Command::Proxy(args) => proxy_cmd::run(args),
    }
}
