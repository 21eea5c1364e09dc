//! The two servers under test, each on one worker and on loopback, each
//! stopped by its guard (also on failure): Skiff's [`DnsServer`] on a
//! current-thread tokio runtime in its own thread, and `knotd` with one
//! UDP, one TCP and one background worker, ended by its PID. Plus the CPU
//! pinning both share and a plain UDP query for readiness and answer
//! checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skiff_dns::{ClusterView, DnsConfig, ViewHandle};
use tokio_util::sync::CancellationToken;

/// How long a server may take to start answering.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A server under test.
pub trait Server {
    fn name(&self) -> &'static str;
    fn addr(&self) -> SocketAddr;
    /// Scheduler counters of the server's threads so far.
    fn sched(&self) -> Option<Sched>;
}

/// What the scheduler says about a set of threads (from `schedstat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    /// Time spent on a CPU.
    pub on_cpu: Duration,
    /// Time spent runnable but waiting for a CPU: high when other
    /// processes compete for the server's core.
    pub waiting: Duration,
}

impl Sched {
    fn add(self, other: Sched) -> Sched {
        Sched {
            on_cpu: self.on_cpu + other.on_cpu,
            waiting: self.waiting + other.waiting,
        }
    }

    /// `self - earlier`, saturating.
    pub fn since(self, earlier: Sched) -> Sched {
        Sched {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }
}

/// Parses a `schedstat` line: nanoseconds on CPU, nanoseconds waiting on
/// a run queue, time slices.
pub fn parse_schedstat(text: &str) -> Option<Sched> {
    let mut f = text.split_whitespace();
    let on_cpu = f.next()?.parse().ok()?;
    let waiting = f.next()?.parse().ok()?;
    Some(Sched {
        on_cpu: Duration::from_nanos(on_cpu),
        waiting: Duration::from_nanos(waiting),
    })
}

/// One thread's counters: `/proc/<pid>/task/<tid>/schedstat`.
pub fn thread_sched(pid: &str, tid: i32) -> Option<Sched> {
    parse_schedstat(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?)
}

/// All live threads of process `pid`, summed (an exited thread leaves the
/// sum, so use it on processes whose threads live as long as they do).
pub fn process_sched(pid: &str) -> Option<Sched> {
    let mut total = Sched::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        total = total.add(parse_schedstat(&text)?);
    }
    Some(total)
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|c| set.is_set(*c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Restricts the calling thread (and what it spawns from now on: threads
/// and child processes inherit the mask) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<()> {
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu).with_context(|| format!("CPU {cpu}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPUs {cpus:?}"))
}

/// Skiff's DNS server on a current-thread runtime in a thread of its own
/// (one worker, as Knot gets one UDP worker). Stopped and joined on drop.
pub struct Skiff {
    addr: SocketAddr,
    /// The server thread (the runtime's only worker).
    tid: i32,
    stop: CancellationToken,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Skiff {
    /// Serves `view` on 127.0.0.1 (ephemeral port), the thread pinned to
    /// `cpu` if given.
    pub fn start(view: ClusterView, cpu: Option<usize>) -> Result<Self> {
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel::<Result<(SocketAddr, i32)>>();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("skiff-dns".into())
            .spawn(move || -> Result<()> {
                let serve = || -> Result<()> {
                    if let Some(cpu) = cpu {
                        pin_current_thread(&[cpu])?;
                    }
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building the runtime")?;
                    runtime.block_on(async {
                        let config = DnsConfig {
                            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                            ..DnsConfig::default()
                        };
                        let server = config
                            .build(ViewHandle::with_view(view))
                            .await
                            .context("building the Skiff DNS server")?;
                        let tid = nix::unistd::gettid().as_raw();
                        let _ = tx.send(Ok((server.local_addr(), tid)));
                        server.serve(token).await.context("serving")
                    })
                };
                let result = serve();
                if let Err(e) = &result {
                    // The receiver may be gone already; then the join reports it.
                    let _ = tx.send(Err(anyhow!("{e:#}")));
                }
                result
            })
            .context("spawning the server thread")?;
        let mut skiff = Skiff {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            tid: 0,
            stop,
            thread: Some(thread),
        };
        (skiff.addr, skiff.tid) = rx
            .recv_timeout(READY_WITHIN)
            .context("the Skiff server did not start")??;
        wait_ready(skiff.addr, || Ok(()))?;
        Ok(skiff)
    }
}

impl Server for Skiff {
    fn name(&self) -> &'static str {
        "skiff"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server thread: a current-thread runtime does all its work there.
    fn sched(&self) -> Option<Sched> {
        thread_sched("self", self.tid)
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: the Skiff server stopped with: {e:#}"),
                Err(_) => eprintln!("warning: the Skiff server thread panicked"),
            }
        }
    }
}

/// `knotd` serving the zone file from a temp dir; ended by PID on drop
/// (SIGTERM, then SIGKILL if it lingers) before the dir is removed.
pub struct Knot {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

/// knotd: on PATH, else where Debian puts it (root's PATH has /usr/sbin,
/// other users' often not).
pub fn find_knotd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("knotd"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/knotd");
        p.is_file().then_some(p)
    })
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> Result<u16> {
    for _ in 0..16 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe socket")?;
        let port = udp.local_addr().context("probe socket address")?.port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no loopback port free for both UDP and TCP")
}

/// Knot's configuration: one worker of each kind, loopback only, nothing
/// written back to the zone file, no journal.
pub fn knot_config(dir: &Path, port: u16, zone_file: &Path) -> String {
    let d = dir.display();
    format!(
        "server:
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: {d}
database:
    storage: {d}
log:
  - target: stderr
    any: warning
zone:
  - domain: {domain}
    file: {zone}
    journal-content: none
    zonefile-sync: -1
",
        domain = crate::workload::DOMAIN,
        zone = zone_file.display(),
    )
}

impl Knot {
    /// Starts knotd on a free loopback port with `zone` as the cluster
    /// domain's zone file, its threads pinned to `cpu` if given.
    pub fn start(knotd: &Path, zone: &str, cpu: Option<usize>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-knot-")
            .tempdir()
            .context("creating Knot's temp dir")?;
        let zone_path = dir.path().join("cluster.local.zone");
        std::fs::write(&zone_path, zone).context("writing the zone file")?;
        let port = free_port()?;
        let conf = dir.path().join("knot.conf");
        std::fs::write(&conf, knot_config(dir.path(), port, &zone_path))
            .context("writing knot.conf")?;
        let log = std::fs::File::create(dir.path().join("knotd.log")).context("knotd log")?;

        // Spawned from a thread pinned to the server CPU, so that every
        // knotd thread starts with that mask.
        let spawn = || -> Result<Child> {
            if let Some(cpu) = cpu {
                pin_current_thread(&[cpu])?;
            }
            Command::new(knotd)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", knotd.display()))
        };
        let child = std::thread::scope(|s| s.spawn(spawn).join())
            .map_err(|_| anyhow!("the spawning thread panicked"))??;
        let mut knot = Knot {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            child,
            dir,
        };
        let log_path = knot.dir.path().join("knotd.log");
        let child = &mut knot.child;
        wait_ready(knot.addr, || match child.try_wait() {
            Ok(Some(status)) => Err(anyhow!(
                "knotd exited with {status}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
            _ => Ok(()),
        })?;
        Ok(knot)
    }
}

impl Server for Knot {
    fn name(&self) -> &'static str {
        "knot"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All of knotd's threads (the UDP worker does the answering).
    fn sched(&self) -> Option<Sched> {
        process_sched(&self.child.id().to_string())
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One UDP query; the response, or an error after `timeout`.
pub fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Message> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a client socket")?;
    socket
        .set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    let mut msg = Message::query();
    let id = msg.metadata.id;
    msg.add_query(Query::query(
        Name::from_str(name).with_context(|| format!("name {name}"))?,
        qtype,
    ));
    let bytes = msg.to_vec().context("encoding the query")?;
    socket
        .send_to(&bytes, server)
        .context("sending the query")?;
    let mut buf = [0_u8; 4096];
    loop {
        let (len, from) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {server} for {name}"))?;
        if from != server {
            continue;
        }
        let resp = Message::from_vec(&buf[..len]).context("decoding the answer")?;
        if resp.metadata.id == id {
            return Ok(resp);
        }
    }
}

/// Polls the zone's SOA until it is answered, checking `alive` between
/// tries (so a server that died says why instead of timing out).
fn wait_ready(addr: SocketAddr, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    let apex = format!("{}.", crate::workload::DOMAIN);
    loop {
        alive()?;
        if let Ok(resp) = query(addr, &apex, RecordType::SOA, Duration::from_millis(200))
            && resp.metadata.response_code == ResponseCode::NoError
            && !resp.answers.is_empty()
        {
            return Ok(());
        }
        if start.elapsed() > READY_WITHIN {
            bail!("the server on {addr} did not answer its SOA within {READY_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that `server` answers like the workload says: the first, middle
/// and last Service with its ClusterIP (authoritatively), a missing one
/// with NXDOMAIN. A benchmark of wrong answers would measure nothing.
pub fn check_answers(server: &dyn Server, services: usize) -> Result<()> {
    use crate::workload::{service_fqdn, service_ip};
    let timeout = Duration::from_secs(2);
    for i in [0, services / 2, services.saturating_sub(1)] {
        let name = service_fqdn(i);
        let resp = query(server.addr(), &name, RecordType::A, timeout)?;
        let got: Vec<String> = resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.to_string()),
                _ => None,
            })
            .collect();
        let want = service_ip(i).to_string();
        if resp.metadata.response_code != ResponseCode::NoError
            || got != [want.clone()]
            || !resp.metadata.authoritative
        {
            bail!(
                "{} answered {name} with {:?} {got:?} (aa={}), want NOERROR [{want}] aa=true",
                server.name(),
                resp.metadata.response_code,
                resp.metadata.authoritative
            );
        }
    }
    let missing = service_fqdn(services + 1);
    let resp = query(server.addr(), &missing, RecordType::A, timeout)?;
    if resp.metadata.response_code != ResponseCode::NXDomain {
        bail!(
            "{} answered {missing} with {:?}, want NXDOMAIN",
            server.name(),
            resp.metadata.response_code
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knot_config_pins_one_worker_each_on_loopback() {
        let c = knot_config(Path::new("/tmp/x"), 5353, Path::new("/tmp/x/z.zone"));
        assert!(c.contains("listen: 127.0.0.1@5353"));
        for w in ["udp-workers: 1", "tcp-workers: 1", "background-workers: 1"] {
            assert!(c.contains(w), "{w}");
        }
        assert!(c.contains("file: /tmp/x/z.zone"));
        assert!(c.contains("domain: cluster.local"));
    }

    #[test]
    fn schedstat_lines_parse() {
        assert_eq!(
            parse_schedstat("9496218 26243942 53\n"),
            Some(Sched {
                on_cpu: Duration::from_nanos(9_496_218),
                waiting: Duration::from_nanos(26_243_942),
            })
        );
        assert_eq!(parse_schedstat("12"), None);
        let a = Sched {
            on_cpu: Duration::from_secs(3),
            waiting: Duration::from_secs(1),
        };
        assert_eq!(a.since(a.add(a)), Sched::default(), "saturates");
        assert_eq!(a.add(a).since(a), a);
    }

    #[test]
    fn own_thread_and_process_cpu_time_grow_with_work() {
        let me = nix::unistd::gettid().as_raw();
        let Some(before) = thread_sched("self", me) else {
            eprintln!("SKIPPED: no /proc/self/task/*/schedstat on this kernel");
            return;
        };
        // Spin until this thread has had 10 ms of CPU (bounded: on a busy
        // machine wall time and CPU time differ).
        let start = Instant::now();
        let mut x = 0_u64;
        loop {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let now = thread_sched("self", me).expect("own thread");
            if now.since(before).on_cpu >= Duration::from_millis(10) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "CPU time never grew"
            );
        }
        std::hint::black_box(x);
        // The sum over the process's threads includes this one. (It is not
        // compared over time: other test threads come and go, and an
        // exited thread leaves the sum. knotd's threads are fixed.)
        let mine = thread_sched("self", me).expect("own thread");
        let process = process_sched("self").expect("process counters");
        assert!(process.on_cpu >= mine.on_cpu);
    }

    #[test]
    fn skiff_server_answers_the_workload_and_stops() {
        let n = 50;
        let skiff = Skiff::start(crate::workload::cluster_view(n), None).expect("starts");
        check_answers(&skiff, n).expect("answers like the workload");
        assert!(skiff.sched().expect("server thread counters").on_cpu > Duration::ZERO);
        drop(skiff);
    }
}
