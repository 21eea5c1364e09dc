//! `skiff up`: a whole cluster on this machine, in network namespaces —
//! the API server on loopback in the root namespace, one agent (with its
//! proxy and node-local DNS) per node namespace on a private underlay, the
//! examples applied — torn down again on Ctrl-C. `skiff down`: the same
//! teardown after a `skiff up` that died.
//!
//! Network safety: nothing started here sends from the root namespace to a
//! non-loopback address. The agents reach the API server through a relay
//! (`up::forward`) listening inside the underlay namespace; every node
//! namespace has no route out (`skiff_tests::Cluster` checks that).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skiff_control::cli::apply::{self, ApplyOptions};
use skiff_control::cli::manifest::{self, Doc};
use skiff_tests::{Cluster, ClusterSpec};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::client::kube_client;
use crate::up::plan::{self, Hints};
use crate::up::record::{self, NodeRecord, UpRecord};
use crate::up::{EXAMPLE_WEB, forward};

/// Default data dir of `skiff up`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff/up";
/// Where the agent pins its eBPF objects (one dir per node name).
const PIN_ROOT: &str = skiff_proxy::ebpf::DEFAULT_PIN_ROOT;
/// Where `ip netns` keeps namespace files.
const NETNS_DIR: &str = "/var/run/netns";
/// How long a stopped process gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, ValueEnum)]
enum UpDataplane {
    Auto,
    Ebpf,
    Iptables,
}

impl UpDataplane {
    fn flag(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ebpf => "ebpf",
            Self::Iptables => "iptables",
        }
    }
}

#[derive(Args)]
#[command(
    long_about = "Brings up a cluster on this machine (root only): the API server on \
    loopback, N node namespaces on a private underlay with an agent each (service proxy and \
    node-local DNS included), and the examples. Ctrl-C tears everything down. Nothing is \
    reachable from or sent to the machine's real network.\n\n\
    The example Deployment runs `skiff echo-server`; the agent starts containers with a fixed \
    image-like PATH, so `skiff up` rewrites a container command of `skiff` to the absolute path \
    of this executable before applying."
)]
pub struct UpArgs {
    /// Number of node namespaces.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    nodes: u8,
    /// Service proxy dataplane of every agent.
    #[arg(long, value_enum, default_value_t = UpDataplane::Auto)]
    dataplane: UpDataplane,
    /// API server address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Server store, agent state, logs and the `up.json` record.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Do not apply the examples.
    #[arg(long)]
    no_examples: bool,
    /// Node names are `<prefix>0`, `<prefix>1`, ... Node cgroups and eBPF
    /// pins are named by node machine-wide, so two clusters on one machine
    /// need different prefixes.
    #[arg(long, default_value = "node")]
    node_prefix: String,
    /// How long to wait for the example pods, in seconds.
    #[arg(long, default_value_t = 120)]
    wait_seconds: u64,
    /// Upstream resolver for names outside the cluster domain, as seen from
    /// inside each node namespace (which has no route out, so in practice
    /// a loopback address you serve there yourself); repeatable. Default:
    /// node-local DNS answers only the cluster domain.
    #[arg(long = "dns-upstream", value_delimiter = ',')]
    dns_upstreams: Vec<SocketAddr>,
    /// Seconds between node heartbeats of the agents.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_seconds: u64,
    /// Seconds of silence after which the server marks a node Unknown.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    node_grace_seconds: u64,
    /// Seconds pods stay on a node that is not ready before they are
    /// evicted and recreated elsewhere.
    #[arg(long, default_value_t = 300)]
    eviction_seconds: u64,
}

#[derive(Args)]
pub struct DownArgs {
    /// The data dir the `skiff up` used.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root (it creates network namespaces, cgroups and eBPF programs); run it with sudo"
        );
    }
    Ok(())
}

/// Whether `pid` exists (EPERM still means it does).
fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Whether `pid` is alive and runs a `skiff` binary (so a recycled PID is
/// never mistaken for ours).
fn pid_is_skiff(pid: u32) -> bool {
    pid != 0
        && pid_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| plan::cmdline_is_skiff(&c))
}

/// The last `n` lines of a log file, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Sends `signal` to our child, waits up to `grace`, then kills it.
fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> Result<ExitStatus> {
    if child.try_wait()?.is_none() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }
    Ok(child.wait()?)
}

/// Waits for our child with a timeout; kills it when the time is up.
fn wait_child(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

/// Opens `path` for appending (a log shared by a node's agent and its cleanup).
fn log_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

fn stdio_to(log: &File) -> Result<(Stdio, Stdio)> {
    Ok((
        Stdio::from(log.try_clone().context("duplicating a log fd")?),
        Stdio::from(log.try_clone().context("duplicating a log fd")?),
    ))
}

/// `GET /readyz` over plain HTTP on loopback.
fn readyz(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: skiff\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Everything one `skiff up` started, torn down by [`Session::teardown`]
/// in reverse order whatever happened before.
struct Session {
    data_dir: PathBuf,
    exe: PathBuf,
    rt: Runtime,
    record: UpRecord,
    cluster: Option<Arc<Cluster>>,
    server: Option<Child>,
    forwarder: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    agents: Vec<(String, PathBuf, Child)>,
    interrupted: CancellationToken,
}

/// `skiff up`.
pub fn up(args: UpArgs) -> Result<()> {
    require_root("skiff up")?;
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {} is not a loopback address: skiff up keeps the API server on loopback so the root namespace never talks to a real network",
            args.listen
        );
    }
    if args.node_prefix.is_empty()
        || !args
            .node_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--node-prefix must be lowercase letters, digits and '-'");
    }
    if args.heartbeat_seconds >= args.node_grace_seconds {
        bail!(
            "--heartbeat-seconds {} must be below --node-grace-seconds {}, or healthy nodes would be marked Unknown",
            args.heartbeat_seconds,
            args.node_grace_seconds
        );
    }
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    std::fs::create_dir_all(data_dir.join("logs"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let exe = std::env::current_exe().context("finding the skiff executable")?;

    if let Some(prev) = record::read(&data_dir)?
        && prev.pid != std::process::id()
        && pid_is_skiff(prev.pid)
    {
        bail!(
            "a skiff up (pid {}) is still running with --data-dir {}; stop it with Ctrl-C (or `kill -INT {}`) first",
            prev.pid,
            data_dir.display(),
            prev.pid
        );
    }
    if record::path(&data_dir).exists()
        || data_dir.join("agents").exists()
        || data_dir.join("server").exists()
    {
        println!(
            "cleaning up after a previous skiff up in {}...",
            data_dir.display()
        );
        let report = sweep(&data_dir, &exe)?;
        report.print();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let interrupted = CancellationToken::new();
    {
        let t = interrupted.clone();
        let _guard = rt.enter();
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the SIGINT handler")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        rt.spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            t.cancel();
            // Keep catching them so a second Ctrl-C cannot cut teardown short.
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("(tearing down; please wait)");
            }
        });
    }

    let mut session = Session {
        record: UpRecord {
            pid: std::process::id(),
            ..UpRecord::default()
        },
        data_dir,
        exe,
        rt,
        cluster: None,
        server: None,
        forwarder: None,
        agents: Vec::new(),
        interrupted,
    };
    let result = session.start(&args);
    match &result {
        Ok(()) => session.wait_for_interrupt(),
        Err(e) if session.interrupted.is_cancelled() => {
            println!("interrupted while starting ({e:#})");
        }
        Err(e) => println!("skiff up failed: {e:#}"),
    }
    session.teardown();
    result
}

impl Session {
    fn check_interrupt(&self) -> Result<()> {
        if self.interrupted.is_cancelled() {
            bail!("interrupted");
        }
        Ok(())
    }

    fn save_record(&self) -> Result<()> {
        record::write(&self.data_dir, &self.record)
    }

    fn start(&mut self, args: &UpArgs) -> Result<()> {
        let nodes = usize::from(args.nodes);
        let started = Instant::now();
        self.save_record()?;

        println!("building {nodes} node namespaces on a private underlay...");
        let cluster = Cluster::build(ClusterSpec {
            nodes,
            ..Default::default()
        })
        .context("building the node namespaces")?;
        self.record.nodes = cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| NodeRecord {
                name: format!("{}{i}", args.node_prefix),
                netns: n.netns().name().to_owned(),
                agent_pid: None,
            })
            .collect();
        self.record.outside_netns = Some(cluster.outside().netns().name().to_owned());
        self.record.outside_ip = Some(cluster.outside().addr());
        self.save_record()?;
        let underlay = cluster.underlay_cidr();
        let cluster = Arc::new(cluster);
        self.cluster = Some(Arc::clone(&cluster));
        self.check_interrupt()?;

        // Pods and agents reach the API server (on loopback here) through
        // a relay on this underlay address.
        let fwd_ip = underlay
            .nth(u32::from(plan::FORWARDER_HOST))
            .context("the underlay has no room for the forwarder address")?;
        println!("starting API server on {}...", args.listen);
        let server_dir = self.data_dir.join("server");
        // A fresh store: Nodes and Pods of an earlier run would point at
        // namespaces that no longer exist.
        if server_dir.exists() {
            std::fs::remove_dir_all(&server_dir)
                .with_context(|| format!("removing {}", server_dir.display()))?;
        }
        let server_log = self.data_dir.join("logs").join("server.log");
        let (out, err) = stdio_to(
            &File::create(&server_log)
                .with_context(|| format!("creating {}", server_log.display()))?,
        )?;
        let mut server = Command::new(&self.exe);
        server
            .args(plan::server_args(
                args.listen,
                &server_dir,
                fwd_ip,
                args.node_grace_seconds,
                args.eviction_seconds,
            ))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a terminal Ctrl-C reaches only us, and
            // we stop the server after the agents.
            .process_group(0);
        let child = server.spawn().context("starting skiff server")?;
        self.record.server_pid = Some(child.id());
        self.server = Some(child);
        self.save_record()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if readyz(args.listen) {
                break;
            }
            if let Some(server) = &mut self.server
                && let Some(status) = server.try_wait()?
            {
                bail!(
                    "the API server exited ({status}); last lines of {}:\n{}",
                    server_log.display(),
                    log_tail(&server_log, 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the API server did not become ready in 30 s; see {}",
                    server_log.display()
                );
            }
            self.check_interrupt()?;
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("API server ready (log: {})", server_log.display());

        cluster
            .underlay()
            .add_addr(
                Cluster::BRIDGE_IF,
                IpNetwork::V4(Ipv4Network::new(fwd_ip, underlay.prefix())?),
            )
            .context("adding the forwarder address to the underlay bridge")?;
        let fwd_addr = SocketAddr::from((fwd_ip, args.listen.port()));
        let listener = cluster
            .underlay()
            .run_in(move || std::net::TcpListener::bind(fwd_addr))
            .context("entering the underlay namespace")?
            .with_context(|| format!("binding the forwarder on {fwd_addr}"))?;
        let stop = CancellationToken::new();
        let task = {
            let _guard = self.rt.enter();
            forward::spawn(listener, args.listen, stop.clone())?
        };
        self.forwarder = Some((stop, task));
        let agent_server = format!("http://{fwd_addr}");
        println!(
            "API forwarder: {fwd_addr} (underlay) -> {} (loopback)",
            args.listen
        );

        let exe_dir = self.exe.parent().unwrap_or(Path::new("/"));
        let path = plan::path_with(exe_dir, std::env::var("PATH").ok().as_deref());
        let nodes_info: Vec<(String, Ipv4Addr, usize)> = self
            .record
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), cluster.nodes()[i].addr(), i))
            .collect();
        for (name, ip, i) in &nodes_info {
            let agent_dir = self.data_dir.join("agents").join(name);
            let log_path = self.data_dir.join("logs").join(format!("{name}.log"));
            let (out, err) = stdio_to(
                &File::create(&log_path)
                    .with_context(|| format!("creating {}", log_path.display()))?,
            )?;
            let mut cmd = Command::new(&self.exe);
            cmd.args(plan::agent_args(&plan::AgentSpec {
                server_url: &agent_server,
                node_name: name,
                node_ip: *ip,
                data_dir: &agent_dir,
                dataplane: args.dataplane.flag(),
                dns_upstreams: &args.dns_upstreams,
                heartbeat_seconds: args.heartbeat_seconds,
            }))
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
            let node = &cluster.nodes()[*i];
            let child = node
                .netns()
                .spawn(&mut cmd)
                .with_context(|| format!("starting the agent of {name}"))?;
            println!(
                "starting agent {name} ({ip}, netns {}, log {})",
                node.netns().name(),
                log_path.display()
            );
            self.record.nodes[*i].agent_pid = Some(child.id());
            self.agents.push((name.clone(), log_path, child));
        }
        self.save_record()?;

        let client = {
            let _guard = self.rt.enter();
            kube_client(&format!("http://{}", args.listen))?
        };
        self.wait_nodes(&client, Duration::from_secs(90))?;

        let mut first_pod = None;
        let mut not_ready = Vec::new();
        if !args.no_examples {
            let deployments = self.apply_examples(&client)?;
            for (ns, name, selector, replicas) in deployments {
                let pod = self.wait_pods(
                    &client,
                    &ns,
                    &name,
                    &selector,
                    replicas,
                    Duration::from_secs(args.wait_seconds),
                )?;
                if pod.is_none() {
                    not_ready.push(name.clone());
                }
                first_pod = first_pod.or(pod);
            }
        }

        let server_url = format!("http://{}", args.listen);
        let exe = self.exe.display().to_string();
        let agent_root = self.data_dir.join("agents");
        let node0 = &cluster.nodes()[0];
        let text = plan::hints(&Hints {
            skiff: &exe,
            server_url: &server_url,
            default_server: server_url == "http://127.0.0.1:6443",
            agent_data_root: &agent_root,
            outside_netns: cluster.outside().netns().name(),
            node_netns: node0.netns().name(),
            node_ip: node0.addr(),
            pod: first_pod.as_deref(),
            have_curl: on_path("curl"),
            have_dig: on_path("dig"),
        });
        let state = if not_ready.is_empty() {
            "cluster is ready".to_owned()
        } else {
            format!("cluster is up, but not ready: {}", not_ready.join(", "))
        };
        println!(
            "skiff up: {state} ({} nodes, {:.0} s); logs in {}",
            nodes,
            started.elapsed().as_secs_f64(),
            self.data_dir.join("logs").display()
        );
        print!("{text}");
        std::io::stdout().flush().ok();
        Ok(())
    }

    /// Fails with the agent's log tail if an agent has exited.
    fn check_agents(&mut self) -> Result<()> {
        for (name, log, child) in &mut self.agents {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the agent of {name} exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    log_tail(log, 15)
                );
            }
        }
        Ok(())
    }

    fn wait_nodes(&mut self, client: &kube::Client, timeout: Duration) -> Result<()> {
        let want: Vec<String> = self.record.nodes.iter().map(|n| n.name.clone()).collect();
        let mut registered = BTreeSet::new();
        let mut ready = BTreeSet::new();
        let api: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + timeout;
        while ready.len() < want.len() {
            self.check_interrupt()?;
            self.check_agents()?;
            if Instant::now() > deadline {
                let missing: Vec<&String> = want.iter().filter(|n| !ready.contains(*n)).collect();
                bail!(
                    "nodes not ready after {} s: {missing:?}; see {}",
                    timeout.as_secs(),
                    self.data_dir.join("logs").display()
                );
            }
            match self.rt.block_on(api.list(&ListParams::default())) {
                Ok(list) => {
                    for n in &list.items {
                        let Some(name) = n.metadata.name.clone() else {
                            continue;
                        };
                        if !want.contains(&name) {
                            continue;
                        }
                        if registered.insert(name.clone()) {
                            println!("node {name} registered");
                        }
                        if plan::node_ready(n) && ready.insert(name.clone()) {
                            println!("node {name} ready ({}/{})", ready.len(), want.len());
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "listing nodes"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Applies the examples (command `skiff` rewritten to this executable)
    /// and returns the Deployments to wait for: namespace, name, label
    /// selector, replicas.
    fn apply_examples(
        &mut self,
        client: &kube::Client,
    ) -> Result<Vec<(String, String, String, usize)>> {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let (from, docs) = if checkout.is_dir() {
            let dir = checkout.display().to_string();
            let docs = manifest::load(&dir).with_context(|| format!("reading {dir}"))?;
            (dir, docs)
        } else {
            let docs = manifest::parse("examples/web.yaml (built in)", EXAMPLE_WEB)
                .context("parsing the built-in examples")?;
            ("the built-in examples/web.yaml".to_owned(), docs)
        };
        let exe = self.exe.display().to_string();
        let out_dir = self.data_dir.join("examples");
        if out_dir.exists() {
            std::fs::remove_dir_all(&out_dir)
                .with_context(|| format!("removing {}", out_dir.display()))?;
        }
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let mut rewritten = 0;
        let mut deployments = Vec::new();
        for (i, Doc { mut object, .. }) in docs.into_iter().enumerate() {
            rewritten += plan::rewrite_skiff_commands(&mut object, &exe);
            if object["kind"] == "Deployment" {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let labels = object
                    .pointer("/spec/selector/matchLabels")
                    .and_then(|v| v.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
                deployments.push((ns, name, labels, usize::try_from(replicas)?));
            }
            let file = out_dir.join(format!("{i:02}.json"));
            std::fs::write(&file, serde_json::to_vec_pretty(&object)?)
                .with_context(|| format!("writing {}", file.display()))?;
        }
        println!(
            "applying examples from {from} ({rewritten} container command(s) `skiff` -> {exe}; rewritten copies in {})",
            out_dir.display()
        );
        let opts = ApplyOptions {
            files: vec![out_dir.display().to_string()],
            namespace: None,
        };
        let mut out = Vec::new();
        self.rt
            .block_on(apply::apply(client.clone(), &opts, &mut out))
            .context("applying the examples")?;
        for line in String::from_utf8_lossy(&out).lines() {
            println!("  {line}");
        }
        Ok(deployments)
    }

    /// Waits until `replicas` pods matching `selector` are Running and
    /// Ready; returns one of their names. On timeout it warns and returns
    /// `None`: the cluster stays up for a look.
    fn wait_pods(
        &mut self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        selector: &str,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Option<String>> {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().labels(selector);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.check_interrupt()?;
            self.check_agents()?;
            if let Ok(list) = self.rt.block_on(api.list(&lp)) {
                let summary = plan::summarise_pods(&list.items);
                if summary.ready >= replicas {
                    println!("{}/{replicas} {name} pods ready", summary.ready);
                    let pod = list
                        .items
                        .iter()
                        .filter(|p| plan::pod_ready(p))
                        .find_map(|p| p.metadata.name.clone());
                    return Ok(pod);
                }
                if last.as_ref() != Some(&summary) {
                    let waiting = if summary.waiting.is_empty() {
                        String::new()
                    } else {
                        format!(" (waiting: {})", summary.waiting.join(", "))
                    };
                    println!("{}/{replicas} {name} pods ready{waiting}", summary.ready);
                    last = Some(summary);
                }
            }
            if Instant::now() > deadline {
                println!(
                    "warning: {name} is not ready after {} s; the cluster stays up so you can look (logs in {})",
                    timeout.as_secs(),
                    self.data_dir.join("logs").display()
                );
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn wait_for_interrupt(&mut self) {
        let mut reported = BTreeSet::new();
        while !self.interrupted.is_cancelled() {
            for (name, log, child) in &mut self.agents {
                if let Ok(Some(status)) = child.try_wait()
                    && reported.insert(name.clone())
                {
                    println!(
                        "warning: the agent of {name} exited ({status}); see {}",
                        log.display()
                    );
                }
            }
            if let Some(server) = &mut self.server
                && let Ok(Some(status)) = server.try_wait()
                && reported.insert("server".to_owned())
            {
                println!("warning: the API server exited ({status})");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops and removes everything, in order: agents, their pods and node
    /// state (cleanup inside each node namespace), the server, the
    /// forwarder, the namespaces. Carries on past failures, reporting them.
    fn teardown(&mut self) {
        println!("tearing down...");
        // The agent stops cleanly on SIGINT (pods keep running for
        // adoption; the cleanup below removes them).
        for (name, _, child) in &mut self.agents {
            match stop_child(child, Signal::SIGINT, STOP_GRACE) {
                Ok(status) => println!("agent {name} stopped ({status})"),
                Err(e) => println!("agent {name}: {e:#}"),
            }
        }
        self.agents.clear();
        if let Some(cluster) = self.cluster.clone() {
            for (i, node) in self.record.nodes.iter().enumerate() {
                let Some(ns) = cluster.nodes().get(i) else {
                    continue;
                };
                let agent_dir = self.data_dir.join("agents").join(&node.name);
                let log_path = self
                    .data_dir
                    .join("logs")
                    .join(format!("{}.log", node.name));
                let result = (|| -> Result<Option<ExitStatus>> {
                    let (out, err) = stdio_to(&log_file(&log_path)?)?;
                    let mut cmd = Command::new(&self.exe);
                    cmd.args(plan::cleanup_args(&node.name, &agent_dir))
                        .stdin(Stdio::null())
                        .stdout(out)
                        .stderr(err);
                    let mut child = ns.netns().spawn(&mut cmd)?;
                    wait_child(&mut child, Duration::from_secs(60))
                })();
                match result {
                    Ok(Some(s)) if s.success() => println!("node {} cleaned up", node.name),
                    Ok(Some(s)) => println!(
                        "node {}: cleanup exited with {s}; see {}",
                        node.name,
                        log_path.display()
                    ),
                    Ok(None) => println!("node {}: cleanup timed out", node.name),
                    Err(e) => println!("node {}: cleanup failed: {e:#}", node.name),
                }
            }
        }
        if let Some(mut server) = self.server.take() {
            match stop_child(&mut server, Signal::SIGINT, STOP_GRACE) {
                Ok(status) => println!("API server stopped ({status})"),
                Err(e) => println!("API server: {e:#}"),
            }
        }
        if let Some((stop, task)) = self.forwarder.take() {
            stop.cancel();
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
            println!("forwarder stopped");
        }
        if let Some(cluster) = self.cluster.take() {
            let names: Vec<String> = cluster.namespaces().map(|n| n.name().to_owned()).collect();
            drop(cluster);
            println!("removed namespaces {}", names.join(" "));
        }
        for sub in ["server", "examples"] {
            let dir = self.data_dir.join(sub);
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                println!("could not remove {}: {e}", dir.display());
            }
        }
        // Empty once every node's cleanup removed its dir.
        let _ = std::fs::remove_dir(self.data_dir.join("agents"));
        let leftovers = leftovers_of(std::process::id(), &self.record);
        if leftovers.is_empty() {
            if let Err(e) = record::remove(&self.data_dir) {
                println!("{e:#}");
            }
            println!(
                "skiff up: everything removed (logs kept in {})",
                self.data_dir.join("logs").display()
            );
        } else {
            println!(
                "skiff up: left over: {}; run `skiff down --data-dir {}`",
                leftovers.join(", "),
                self.data_dir.display()
            );
        }
    }
}

/// Namespaces named for `pid` and eBPF pin dirs of the record's nodes that
/// still exist.
fn leftovers_of(pid: u32, rec: &UpRecord) -> Vec<String> {
    let mut found = Vec::new();
    let tag = format!("-{pid}-");
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("skiff-") && name.contains(&tag) {
                found.push(format!("netns {name}"));
            }
        }
    }
    for n in &rec.nodes {
        let pins = Path::new(PIN_ROOT).join(&n.name);
        if pins.exists() {
            found.push(format!("pins {}", pins.display()));
        }
    }
    found
}

/// What [`sweep`] removed.
#[derive(Debug, Default)]
struct DownReport {
    killed: Vec<String>,
    cleaned: Vec<String>,
    pins: Vec<String>,
    namespaces: Vec<String>,
    dirs: Vec<String>,
    errors: Vec<String>,
}

impl DownReport {
    fn print(&self) {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        println!("  processes killed:      {}", list(&self.killed));
        println!("  nodes cleaned up:      {}", list(&self.cleaned));
        println!("  eBPF pins removed:     {}", list(&self.pins));
        println!("  namespaces removed:    {}", list(&self.namespaces));
        println!("  directories removed:   {}", list(&self.dirs));
        for e in &self.errors {
            println!("  problem: {e}");
        }
    }
}

/// Runs `skiff agent cleanup` for one node: inside its namespace if that
/// still exists, otherwise inside a fresh empty network namespace, so the
/// cleanup's network steps (bridge, routes, iptables) can never touch the
/// root namespace; its process, cgroup, mount and file steps work anywhere.
fn cleanup_node(exe: &Path, node: &str, agent_dir: &Path, netns: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(exe);
    cmd.args(plan::cleanup_args(node, agent_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ns_file = match netns.map(|n| Path::new(NETNS_DIR).join(n)) {
        Some(p) if p.exists() => {
            Some(File::open(&p).with_context(|| format!("opening {}", p.display()))?)
        }
        _ => None,
    };
    // SAFETY: the closures only call setns(2) or unshare(2), which are
    // async-signal-safe, on an fd opened before the fork.
    unsafe {
        match ns_file {
            Some(f) => cmd.pre_exec(move || {
                nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            }),
            None => cmd.pre_exec(|| {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            }),
        };
    }
    let out = cmd
        .output()
        .with_context(|| format!("running the cleanup of {node}"))?;
    if !out.status.success() {
        bail!(
            "cleanup of {node} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes what a dead `skiff up` left in `data_dir` (idempotent).
fn sweep(data_dir: &Path, exe: &Path) -> Result<DownReport> {
    let mut report = DownReport::default();
    let rec = match record::read(data_dir) {
        Ok(r) => r,
        Err(e) => {
            report.errors.push(format!("{e:#}"));
            None
        }
    };
    let rec = rec.unwrap_or_default();

    // Agents first (they would recreate what cleanup removes), then the
    // server; only processes that are still `skiff`.
    let pids = rec
        .nodes
        .iter()
        .filter_map(|n| n.agent_pid.map(|p| (format!("agent {}", n.name), p)))
        .chain(rec.server_pid.map(|p| ("server".to_owned(), p)));
    for (what, pid) in pids {
        if !pid_is_skiff(pid) {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        report.killed.push(format!("{what} (pid {pid})"));
    }

    let mut nodes: BTreeMap<String, Option<String>> = rec
        .nodes
        .iter()
        .map(|n| (n.name.clone(), Some(n.netns.clone())))
        .collect();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("agents")) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir())
                && let Ok(name) = e.file_name().into_string()
            {
                nodes.entry(name).or_insert(None);
            }
        }
    }
    for (node, netns) in &nodes {
        let agent_dir = data_dir.join("agents").join(node);
        match cleanup_node(exe, node, &agent_dir, netns.as_deref()) {
            Ok(()) => report.cleaned.push(node.clone()),
            Err(e) => report.errors.push(format!("{e:#}")),
        }
        let pins = Path::new(PIN_ROOT).join(node);
        match skiff_proxy::ebpf::remove_pins(&pins) {
            Ok(true) => report.pins.push(pins.display().to_string()),
            Ok(false) => {}
            Err(e) => report
                .errors
                .push(format!("removing {}: {e}", pins.display())),
        }
    }

    match skiff_tests::leftovers::sweep() {
        Ok(s) => report.namespaces = s.removed,
        Err(e) => report.errors.push(format!("sweeping namespaces: {e}")),
    }
    for sub in ["server", "examples", "agents"] {
        let dir = data_dir.join(sub);
        if dir.exists() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.dirs.push(dir.display().to_string()),
                Err(e) => report
                    .errors
                    .push(format!("removing {}: {e}", dir.display())),
            }
        }
    }
    if let Err(e) = record::remove(data_dir) {
        report.errors.push(format!("{e:#}"));
    }
    Ok(report)
}

/// `skiff down`.
pub fn down(args: DownArgs) -> Result<()> {
    require_root("skiff down")?;
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    if let Some(rec) = record::read(&data_dir)?
        && rec.pid != std::process::id()
        && pid_is_skiff(rec.pid)
    {
        bail!(
            "skiff up (pid {}) is still running with --data-dir {}; stop it with Ctrl-C (or `kill -INT {}`): it tears down itself",
            rec.pid,
            data_dir.display(),
            rec.pid
        );
    }
    let exe = std::env::current_exe().context("finding the skiff executable")?;
    println!("skiff down: cleaning up {}", data_dir.display());
    let report = sweep(&data_dir, &exe)?;
    report.print();
    if report.errors.is_empty() {
        Ok(())
    } else {
        bail!("{} cleanup step(s) failed (see above)", report.errors.len())
    }
}
