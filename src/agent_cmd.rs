//! `skiff agent`: the node agent with the service proxy and the node-local
//! DNS server it hosts (one process per node, like kubelet + kube-proxy +
//! node-local DNS); `skiff agent cleanup`; `skiff logs`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ipnetwork::Ipv4Network;
use skiff_agent::{Agent, AgentConfig};
use skiff_dns::{DnsConfig, ViewHandle, run_feeder, system_upstreams};
use skiff_proxy::ebpf::{DEFAULT_PIN_ROOT, EbpfConfig};
use skiff_proxy::select::{self, DataplaneKind};
use skiff_proxy::sync::{self, ProxyConfig};
use tokio_util::sync::CancellationToken;

use crate::client::kube_client;

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// API server URL.
    #[arg(long, env = "SKIFF_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// This node's name.
    #[arg(long, env = "SKIFF_NODE_NAME")]
    node_name: String,
    /// This node's InternalIP. Needed by the embedded proxy (NodePorts) and
    /// DNS (pods' nameserver); the agent alone can detect it.
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// Extra Node labels, `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Agent state, pod logs and volumes (default /var/lib/skiff/agent/<node>).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Supernet of all pod CIDRs.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Network,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Service proxy dataplane; `none` runs no proxy on this node.
    #[arg(long, value_enum, default_value_t = ProxyKind::Auto)]
    dataplane: ProxyKind,
    /// Node interfaces that get the tc program (default: the one holding
    /// --node-ip).
    #[arg(long = "interface", value_delimiter = ',')]
    interfaces: Vec<String>,
    /// Do not serve node-local DNS.
    #[arg(long)]
    no_dns: bool,
    /// Upstream resolvers for names outside the cluster (repeatable);
    /// default: /etc/resolv.conf's nameservers.
    #[arg(long = "upstream", value_delimiter = ',')]
    upstreams: Vec<SocketAddr>,
    /// Do not forward names outside the cluster domain.
    #[arg(long, conflicts_with = "upstreams")]
    no_forward: bool,
    /// Reverse zones answered by DNS: service and pod CIDRs.
    #[arg(long = "reverse-cidr", value_delimiter = ',', default_values = ["10.96.0.0/12", "10.244.0.0/16"])]
    reverse_cidrs: Vec<ipnetwork::IpNetwork>,
    /// First crash-loop back-off delay in seconds (kubelet: 10).
    #[arg(long, default_value_t = 10)]
    backoff_seconds: u64,
    /// Seconds between node heartbeats (Lease renewal and status); keep it
    /// well below the server's `--node-monitor-grace-seconds` (kubelet: 10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_seconds: u64,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Stop every pod this node's agent started and remove what it made
    /// (namespaces, veths, bridge, routes, cgroups, iptables chains, eBPF
    /// pins, state). Run with the agent stopped.
    Cleanup,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProxyKind {
    Auto,
    Ebpf,
    Iptables,
    None,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected key=value"))
}

/// The interface holding `ip`, from `ip -o -4 addr show` output (pure).
pub fn interface_of(ip_o_addr: &str, ip: Ipv4Addr) -> Option<String> {
    ip_o_addr.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let addr = f.get(3)?.split('/').next()?;
        (addr == ip.to_string()).then(|| f.get(1).map(|s| s.trim_end_matches(':').to_owned()))?
    })
}

fn agent_config(args: &AgentArgs) -> Result<AgentConfig> {
    let url: url::Url = args
        .server
        .parse()
        .with_context(|| format!("--server {:?} is not a URL", args.server))?;
    let mut cfg = AgentConfig::new(url, &args.node_name);
    cfg.node_ip = args.node_ip;
    cfg.labels = args.labels.iter().cloned().collect::<BTreeMap<_, _>>();
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.cluster_cidr = args.cluster_cidr;
    cfg.cluster_domain = args.cluster_domain.clone();
    cfg.backoff_base = Duration::from_secs(args.backoff_seconds);
    cfg.heartbeat_interval = Duration::from_secs(args.heartbeat_seconds);
    Ok(cfg)
}

pub fn run(args: AgentArgs) -> Result<()> {
    let cfg = agent_config(&args)?;
    if let Some(AgentAction::Cleanup) = args.action {
        let report = skiff_agent::cleanup(&cfg).context("agent cleanup")?;
        eprintln!("agent cleanup: {report:?}");
        let pin_dir = PathBuf::from(DEFAULT_PIN_ROOT).join(&args.node_name);
        if skiff_proxy::ebpf::remove_pins(&pin_dir)
            .with_context(|| format!("removing eBPF pins {}", pin_dir.display()))?
        {
            eprintln!("removed eBPF pins {}", pin_dir.display());
        }
        let mut ipt = skiff_proxy::iptables::IptablesDataplane::new();
        skiff_proxy::dataplane::Dataplane::cleanup(&mut ipt)
            .context("removing SKIFF- iptables rules")?;
        return Ok(());
    }
    let needs_ip = args.dataplane != ProxyKind::None || !args.no_dns;
    let node_ip = match (args.node_ip, needs_ip) {
        (Some(ip), _) => Some(ip),
        (None, false) => None,
        (None, true) => bail!(
            "--node-ip is required for the embedded proxy and DNS (or pass --dataplane none --no-dns)"
        ),
    };

    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let stop = CancellationToken::new();
        let client = kube_client(&args.server)?;
        let mut tasks: Vec<(&str, tokio::task::JoinHandle<Result<()>>)> = Vec::new();

        if let (Some(ip), true) = (node_ip, args.dataplane != ProxyKind::None) {
            let interfaces = if args.interfaces.is_empty() {
                let out = std::process::Command::new("ip")
                    .args(["-o", "-4", "addr", "show"])
                    .output()
                    .context("running `ip -o -4 addr show`")?;
                let text = String::from_utf8_lossy(&out.stdout);
                vec![interface_of(&text, ip).with_context(|| format!("no interface holds --node-ip {ip}"))?]
            } else {
                args.interfaces.clone()
            };
            // Socket-LB covers every pod: they all live below the node cgroup.
            let node_cgroup = cfg.node_cgroup();
            std::fs::create_dir_all(&node_cgroup)
                .with_context(|| format!("creating {}", node_cgroup.display()))?;
            let ebpf = EbpfConfig {
                node_name: args.node_name.clone(),
                pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
                cgroup: Some(node_cgroup),
                interfaces,
                node_addr: Some(ip),
            };
            let kind = match args.dataplane {
                ProxyKind::Ebpf => DataplaneKind::Ebpf,
                ProxyKind::Iptables => DataplaneKind::Iptables,
                _ => DataplaneKind::Auto,
            };
            let chosen = select::choose(kind, &ebpf).context("starting the proxy dataplane")?;
            tracing::info!(dataplane = %chosen.description, "proxy starting");
            let config = ProxyConfig {
                node_name: args.node_name.clone(),
                node_ips: vec![ip],
                cluster_cidr: Some(args.cluster_cidr),
                resync_period: Duration::from_secs(30),
            };
            let s = stop.clone();
            let c = client.clone();
            tasks.push((
                "proxy",
                tokio::spawn(async move {
                    sync::run(c, chosen.dataplane, config, async move { s.cancelled().await })
                        .await
                        .context("proxy")
                }),
            ));
        }

        if let (Some(ip), false) = (node_ip, args.no_dns) {
            let upstreams = if args.no_forward {
                Vec::new()
            } else if args.upstreams.is_empty() {
                system_upstreams(None).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "no upstream resolvers; names outside the cluster will be refused");
                    Vec::new()
                })
            } else {
                args.upstreams.clone()
            };
            let dns = DnsConfig {
                listen: SocketAddr::from((ip, 53)),
                domain: args.cluster_domain.clone(),
                upstreams,
                reverse_cidrs: args.reverse_cidrs.clone(),
                ..DnsConfig::default()
            };
            let view = ViewHandle::new();
            let server = dns.build(view.clone()).await.context("starting node-local DNS")?;
            let s = stop.clone();
            let c = client.clone();
            tasks.push((
                "dns",
                tokio::spawn(async move {
                    let feeder = tokio::spawn(run_feeder(c, view, s.clone()));
                    server.serve(s.clone()).await.context("serving DNS")?;
                    feeder.await.context("DNS feeder")?.context("DNS feeder")?;
                    Ok(())
                }),
            ));
        }

        let s = stop.clone();
        tasks.push((
            "agent",
            tokio::spawn(async move {
                Agent::new(cfg)
                    .run(async move { s.cancelled().await })
                    .await
                    .context("agent")
            }),
        ));

        let ctrl_c = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupted; stopping (pods keep running and are adopted on restart)");
            ctrl_c.cancel();
        });
        let mut failed = None;
        for (name, t) in tasks {
            let r = t.await.with_context(|| format!("{name} task panicked"))?;
            if let Err(e) = r {
                tracing::error!(task = name, error = %format!("{e:#}"), "stopped with an error");
                stop.cancel();
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    })
}

#[derive(Args)]
pub struct LogsArgs {
    /// API server URL (to find the pod's node).
    #[arg(long, env = "SKIFF_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// Pod name.
    pod: String,
    /// Container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// The agents' data root (each node's data is `<root>/<node>`).
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    agent_data_root: PathBuf,
}

/// `skiff logs`: reads the container log from the data directory of the
/// node running the pod (on this machine).
pub fn logs(args: LogsArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = kube_client(&args.server)?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, &args.namespace);
        let pod = pods
            .get(&args.pod)
            .await
            .with_context(|| format!("pod {}/{}", args.namespace, args.pod))?;
        let node = pod
            .spec
            .and_then(|s| s.node_name)
            .with_context(|| format!("pod {} is not scheduled to a node yet", args.pod))?;
        let dir = args.agent_data_root.join(&node);
        let text = skiff_agent::logs(
            &dir,
            &args.namespace,
            &args.pod,
            args.container.as_deref(),
            args.tail,
        )
        .await
        .with_context(|| format!("reading logs on node {node} ({})", dir.display()))?;
        print!("{text}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_interface_holding_an_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\n3: skiff-ul    inet 192.168.250.1/24 brd 192.168.250.255 scope global skiff-ul\n";
        assert_eq!(
            interface_of(out, Ipv4Addr::new(192, 168, 250, 1)).as_deref(),
            Some("skiff-ul")
        );
        assert_eq!(interface_of(out, Ipv4Addr::new(10, 0, 0, 1)), None);
    }
}
