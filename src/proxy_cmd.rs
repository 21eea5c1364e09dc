//! `skiff proxy`: the service proxy on its own (the agent embeds the same).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use skiff_proxy::dataplane::Dataplane;
use skiff_proxy::ebpf::{DEFAULT_PIN_ROOT, EbpfConfig, EbpfDataplane};
use skiff_proxy::iptables::IptablesDataplane;
use skiff_proxy::select::{self, DataplaneKind};
use skiff_proxy::sync::{self, ProxyConfig};

use crate::client::kube_client;

#[derive(Args)]
pub struct ProxyArgs {
    #[command(subcommand)]
    action: Option<ProxyAction>,
    /// API server URL.
    #[arg(long, env = "SKIFF_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    #[command(flatten)]
    node: NodeArgs,
    /// Which dataplane: `auto` tries eBPF and falls back to iptables with a
    /// warning saying why.
    #[arg(long, value_enum, default_value_t = KindArg::Auto)]
    dataplane: KindArg,
    /// Interfaces that get the tc program (NodePort, untranslated ClusterIP
    /// traffic). Repeat or comma-separate.
    #[arg(long = "interface", value_delimiter = ',')]
    interfaces: Vec<String>,
    /// cgroup v2 directory whose processes get socket-level load balancing.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Cluster pod CIDR (masquerade decisions, Local-policy short-cut).
    #[arg(long)]
    cluster_cidr: Option<ipnetwork::Ipv4Network>,
    /// How often the dataplane is re-synced even without changes.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    resync: Duration,
}

#[derive(Args)]
struct NodeArgs {
    /// This node's name (decides which endpoints are local; names the pin dir).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    node_name: String,
    /// This node's IPv4 addresses (NodePorts listen on them). Repeatable.
    #[arg(long = "node-ip", value_delimiter = ',')]
    node_ips: Vec<Ipv4Addr>,
    /// bpffs directory under which pinned state lives.
    #[arg(long, default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
}

#[derive(Subcommand)]
enum ProxyAction {
    /// Remove everything the proxy installed on this node: eBPF pins (maps
    /// and links) and every SKIFF- iptables chain and jump rule.
    Cleanup,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Auto,
    Ebpf,
    Iptables,
}

impl From<KindArg> for DataplaneKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Auto => DataplaneKind::Auto,
            KindArg::Ebpf => DataplaneKind::Ebpf,
            KindArg::Iptables => DataplaneKind::Iptables,
        }
    }
}

/// `30s`, `500ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with unit ms, s or m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

pub fn run(args: ProxyArgs) -> Result<()> {
    if let Some(ProxyAction::Cleanup) = args.action {
        return cleanup(&args);
    }
    let ebpf = EbpfConfig {
        node_name: args.node.node_name.clone(),
        pin_root: args.node.pin_root.clone(),
        cgroup: args.cgroup.clone(),
        interfaces: args.interfaces.clone(),
        node_addr: args.node.node_ips.first().copied(),
    };
    let chosen = select::choose(args.dataplane.into(), &ebpf).context("starting the dataplane")?;
    tracing::info!(dataplane = %chosen.description, node = %args.node.node_name, "proxy starting");
    let config = ProxyConfig {
        node_name: args.node.node_name.clone(),
        node_ips: args.node.node_ips.clone(),
        cluster_cidr: args.cluster_cidr,
        resync_period: args.resync,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = kube_client(&args.server)?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupted; stopping (pinned eBPF state stays for the next start)");
        };
        sync::run(client, chosen.dataplane, config, shutdown)
            .await
            .context("proxy loop")
    })
}

fn cleanup(args: &ProxyArgs) -> Result<()> {
    let pin_dir = args.node.pin_root.join(&args.node.node_name);
    if pin_dir.exists() {
        let ebpf = EbpfConfig {
            node_name: args.node.node_name.clone(),
            pin_root: args.node.pin_root.clone(),
            cgroup: None,
            interfaces: Vec::new(),
            node_addr: None,
        };
        let mut dp = EbpfDataplane::start(&ebpf).context("opening pinned eBPF state")?;
        dp.cleanup().context("removing eBPF pins")?;
        eprintln!("removed eBPF state under {}", pin_dir.display());
    } else {
        eprintln!("no eBPF state under {}", pin_dir.display());
    }
    let mut ipt = IptablesDataplane::new();
    ipt.cleanup().context("removing SKIFF- iptables rules")?;
    eprintln!("removed SKIFF- iptables chains and jump rules");
    Ok(())
}
