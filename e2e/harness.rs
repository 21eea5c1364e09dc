//! One `skiff up` per test, driven like a user would: the real binary with
//! its own namespaces, API server, agents and examples, stopped with SIGINT
//! (Ctrl-C) at the end, after which nothing of it may be left.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::runtime::Runtime;

/// The binary under test.
pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// How long `skiff up` may take to report a ready cluster.
const UP_TIMEOUT: Duration = Duration::from_secs(240);
/// How long `skiff up` may take to tear down after SIGINT.
const DOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the agent pins eBPF objects, one dir per node.
const PIN_ROOT: &str = "/sys/fs/bpf/skiff";

/// The service proxy every agent of a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    Ebpf,
    Iptables,
}

impl Dataplane {
    pub fn flag(self) -> &'static str {
        match self {
            Dataplane::Ebpf => "ebpf",
            Dataplane::Iptables => "iptables",
        }
    }
}

/// How to bring the cluster up.
#[derive(Debug, Clone)]
pub struct Options {
    pub dataplane: Dataplane,
    /// Node lifecycle tuned for a test: heartbeats every second, a node
    /// silent for 4 s is Unknown, its pods are evicted 2 s later.
    pub fast_node_loss: bool,
    /// `--dns-upstream` of `skiff up` (inside every node namespace).
    pub dns_upstream: Option<SocketAddr>,
}

impl Options {
    pub fn new(dataplane: Dataplane) -> Self {
        Options {
            dataplane,
            fast_node_loss: false,
            dns_upstream: None,
        }
    }
}

/// `up.json`, as `skiff up` writes it (the file format is part of what
/// `skiff down` relies on, so the test reads it like `skiff down` does).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub pid: u32,
    pub nodes: Vec<NodeRecord>,
    pub outside_netns: Option<String>,
    pub outside_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub agent_pid: Option<u32>,
}

/// A running `skiff up`.
pub struct Up {
    pub server: String,
    pub record: Record,
    pub rt: Runtime,
    pub client: kube::Client,
    data_dir: tempfile::TempDir,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    /// Agents this test restarted itself (name, child).
    restarted: Vec<(String, Child)>,
    stopped: bool,
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Short distinct node-name prefixes within one test run: node names
/// reach cgroup paths and pin dirs machine-wide.
fn node_prefix(dataplane: Dataplane) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let letter = match dataplane {
        Dataplane::Ebpf => 'b',
        Dataplane::Iptables => 'i',
    };
    format!(
        "e2e{letter}{}-{}-",
        std::process::id() % 10_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Copies a child's pipe line by line into `sink`, echoing to stderr.
fn collect(pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("[skiff up] {line}");
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
}

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    kill(Pid::from_raw(raw), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

/// Waits up to `timeout` for our child; kills it when the time is up.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn signal_child(child: &Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

impl Up {
    /// Runs `skiff up` (3 nodes, the examples) and waits until it says the
    /// cluster is ready; panics with its output otherwise.
    pub fn start(opts: Options) -> Up {
        let data_dir = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .expect("temp data dir");
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut cmd = Command::new(SKIFF);
        cmd.args(["up", "--dataplane", opts.dataplane.flag()])
            .args(["--listen", &listen.to_string()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--node-prefix", &node_prefix(opts.dataplane)])
            .args(["--wait-seconds", "150"]);
        if opts.fast_node_loss {
            cmd.args(["--heartbeat-seconds", "1"])
                .args(["--node-grace-seconds", "4"])
                .args(["--eviction-seconds", "2"]);
        }
        if let Some(upstream) = opts.dns_upstream {
            cmd.args(["--dns-upstream", &upstream.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning skiff up");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), Arc::clone(&output));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&output));

        let deadline = Instant::now() + UP_TIMEOUT;
        let verdict = loop {
            let lines = output
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(l) = lines.iter().find(|l| l.starts_with("skiff up: ")) {
                break l.clone();
            }
            if let Ok(Some(status)) = child.try_wait() {
                break format!("skiff up exited early ({status})");
            }
            if Instant::now() > deadline {
                break format!("skiff up not ready after {} s", UP_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = format!("http://{listen}");
        let client = {
            let _guard = rt.enter();
            let config = kube::Config::new(server.parse().expect("server url"));
            kube::Client::try_from(config).expect("kube client")
        };
        let record_path = data_dir.path().join("up.json");
        let record: Option<Record> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let ready = verdict.starts_with("skiff up: cluster is ready");
        match record {
            Some(record) if ready => Up {
                server,
                record,
                rt,
                client,
                data_dir,
                child,
                output,
                restarted: Vec::new(),
                stopped: false,
            },
            _ => {
                signal_child(&child, Signal::SIGINT);
                wait_or_kill(&mut child, DOWN_TIMEOUT);
                panic!("{verdict}; see the [skiff up] lines above");
            }
        }
    }

    /// Everything `skiff up` printed so far (stdout and stderr).
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Node names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.record.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn node(&self, name: &str) -> &NodeRecord {
        self.record
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in {:?}", self.record.nodes))
    }

    pub fn outside_netns(&self) -> &str {
        self.record
            .outside_netns
            .as_deref()
            .expect("up.json names the outside namespace")
    }

    pub fn outside_ip(&self) -> Ipv4Addr {
        self.record.outside_ip.expect("up.json has the outside IP")
    }

    /// `skiff <args> --server <this cluster>`; the output whatever the
    /// status.
    pub fn skiff(&self, subcommand: &[&str], args: &[&str]) -> Output {
        Command::new(SKIFF)
            .args(subcommand)
            .args(["--server", &self.server])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running skiff")
    }

    /// `skiff exec POD -- bash -c SCRIPT`: stdout; panics with stderr when
    /// the script fails.
    pub fn bash_in(&self, pod: &str, script: &str) -> String {
        let out = self.skiff(&["exec"], &[pod, "--", "bash", "-c", script]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "skiff exec {pod} -- bash -c {script:?}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Spawns `skiff exec POD -- bash -c SCRIPT` with piped stdin/stdout,
    /// in its own process group so [`stop_group`] ends what it started.
    pub fn spawn_in(&self, pod: &str, script: &str) -> Child {
        use std::os::unix::process::CommandExt;
        Command::new(SKIFF)
            .args([
                "exec",
                "--server",
                &self.server,
                pod,
                "--",
                "bash",
                "-c",
                script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("spawning skiff exec")
    }

    /// `ip netns exec <outside> bash -c SCRIPT`: stdout; panics on failure.
    pub fn bash_outside(&self, script: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", self.outside_netns(), "bash", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "outside: bash -c {script:?}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// SIGKILLs the agent of `node` (the one `skiff up` started, or the
    /// one this test restarted) and waits until it is gone. Returns its
    /// command line and environment, to start it again.
    pub fn kill_agent(&mut self, node: &str) -> (Vec<String>, Vec<(String, String)>) {
        if let Some(i) = self.restarted.iter().position(|(n, _)| n == node) {
            let (_, mut child) = self.restarted.remove(i);
            let argv = read_nul_list(&format!("/proc/{}/cmdline", child.id()));
            let env = read_env(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return (argv, env);
        }
        let pid = self
            .node(node)
            .agent_pid
            .unwrap_or_else(|| panic!("no agent pid for {node}"));
        let argv = read_nul_list(&format!("/proc/{pid}/cmdline"));
        let env = read_env(pid);
        assert!(
            argv.iter().any(|a| a == "agent"),
            "pid {pid} is not an agent: {argv:?}"
        );
        let _ = kill(
            Pid::from_raw(i32::try_from(pid).expect("pid")),
            Signal::SIGKILL,
        );
        // `skiff up` reaps it (it polls its children).
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) {
            assert!(Instant::now() < deadline, "agent {pid} still alive");
            std::thread::sleep(Duration::from_millis(50));
        }
        (argv, env)
    }

    /// Starts an agent for `node` again, with the command line and
    /// environment of the one [`kill_agent`] ended, in the node's
    /// namespace, appending to its log.
    pub fn restart_agent(&mut self, node: &str, argv: &[String], env: &[(String, String)]) {
        let netns = self.node(node).netns.clone();
        let log = self.data_dir().join("logs").join(format!("{node}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        // setns(2) only, as `skiff up` starts agents: `ip netns exec` would
        // also give the agent a private mount namespace, hiding the pod
        // namespaces it mounts under /var/run/netns from everyone else.
        let (program, args) = argv.split_first().expect("agent argv");
        let mut cmd = Command::new(program);
        skiff_tests::enter_netns_on_spawn(&mut cmd, &Path::new("/var/run/netns").join(&netns))
            .expect("entering the node namespace");
        let child = cmd
            .args(args)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("restarting the agent");
        self.restarted.push((node.to_owned(), child));
    }

    /// The node's cgroup (every pod of the node lives below it).
    pub fn node_cgroup(&self, node: &str) -> PathBuf {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        skiff_agent::config::cgroup2_mount(&mounts)
            .expect("cgroup2 is mounted")
            .join("skiff")
            .join(node)
    }

    /// Ctrl-C: stops restarted agents, then `skiff up`, and returns what
    /// is left of the cluster on this machine (should be nothing).
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        for (_, child) in &mut self.restarted {
            signal_child(child, Signal::SIGINT);
            wait_or_kill(child, Duration::from_secs(20));
        }
        self.restarted.clear();
        signal_child(&self.child, Signal::SIGINT);
        let clean_exit = wait_or_kill(&mut self.child, DOWN_TIMEOUT);
        let mut left = Vec::new();
        if !clean_exit {
            left.push(format!(
                "skiff up did not stop within {} s of SIGINT",
                DOWN_TIMEOUT.as_secs()
            ));
            let _ = Command::new(SKIFF)
                .arg("down")
                .arg("--data-dir")
                .arg(self.data_dir.path())
                .status();
        }
        left.extend(self.leftovers());
        left
    }

    /// Namespaces, pins and cgroups of this cluster still present.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let tag = format!("-{}-", self.record.pid);
        if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("skiff-") && name.contains(&tag) {
                    found.push(format!("netns {name}"));
                }
            }
        }
        for n in &self.record.nodes {
            let pins = Path::new(PIN_ROOT).join(&n.name);
            if pins.exists() {
                found.push(format!("pins {}", pins.display()));
            }
            let cg = self.node_cgroup(&n.name);
            if cg.exists() {
                found.push(format!("cgroup {}", cg.display()));
            }
        }
        found
    }

    /// Prints the tail of every log (server, agents) for a failed test:
    /// the data dir is removed afterwards.
    fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("logs")) else {
            return;
        };
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("==== {} (last {} lines)", e.path().display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }

    /// Ctrl-C and assert that nothing is left behind.
    pub fn shutdown(mut self) {
        let left = self.stop();
        assert!(
            left.is_empty(),
            "left behind after Ctrl-C: {left:?}; output:\n{}",
            self.output().join("\n")
        );
        let out = self.output();
        assert!(
            out.iter().any(|l| l.starts_with("tearing down")),
            "skiff up did not report its teardown"
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let left = self.stop();
        if !left.is_empty() {
            eprintln!("e2e: left behind: {left:?}");
        }
    }
}

/// A `\0`-separated /proc file as strings.
fn read_nul_list(path: &str) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn read_env(pid: u32) -> Vec<(String, String)> {
    read_nul_list(&format!("/proc/{pid}/environ"))
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Ends a child started by [`Up::spawn_in`] and everything in its process
/// group (the `skiff exec`, its nsenter'd shell and that shell's children).
pub fn stop_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    let _ = child.wait();
}
