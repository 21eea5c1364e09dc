//! Driving dnsperf: one probe is one dnsperf run at a fixed offered rate
//! (or unlimited); its statistics are parsed from dnsperf's report
//! (pure, tested), and [`Search`] bisects the offered rate for the highest
//! one a server sustains within the loss bound.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Loss allowed at a sustained rate: 0.1 %.
pub const MAX_LOSS: f64 = 0.001;
/// A rate counts as sustained only if at least this share of it was
/// answered per second (dnsperf caps outstanding queries, so a slow server
/// can also show up as a lower achieved rate rather than as loss).
pub const MIN_ACHIEVED: f64 = 0.97;

/// dnsperf's summary of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// Response codes by name (`NOERROR`, `NXDOMAIN`, …).
    pub rcodes: BTreeMap<String, u64>,
    pub avg_request_bytes: f64,
    pub avg_response_bytes: f64,
    pub run_time_s: f64,
    /// Completed queries per second, as dnsperf reports it.
    pub qps: f64,
    pub avg_latency_s: f64,
    pub max_latency_s: f64,
}

impl Stats {
    /// Lost ÷ sent (0 when nothing was sent).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }

    /// Share of completed queries that came back NXDOMAIN.
    pub fn nxdomain_share(&self) -> f64 {
        let nx = self.rcodes.get("NXDOMAIN").copied().unwrap_or(0);
        if self.completed == 0 {
            0.0
        } else {
            nx as f64 / self.completed as f64
        }
    }
}

fn number_after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.trim()
        .strip_prefix(label)?
        .split_whitespace()
        .next()
        .map(|s| s.trim_end_matches(','))
}

fn parse_num<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T> {
    let s = s.with_context(|| format!("dnsperf output has no {what}"))?;
    s.parse()
        .map_err(|_| anyhow::anyhow!("dnsperf {what} {s:?} is not a number"))
}

/// Parses dnsperf's "Statistics" block.
pub fn parse(output: &str) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut seen = 0;
    for line in output.lines() {
        let t = line.trim();
        if t.starts_with("Queries sent:") {
            stats.sent = parse_num(number_after(t, "Queries sent:"), "queries sent")?;
            seen += 1;
        } else if t.starts_with("Queries completed:") {
            stats.completed =
                parse_num(number_after(t, "Queries completed:"), "queries completed")?;
            seen += 1;
        } else if t.starts_with("Queries lost:") {
            stats.lost = parse_num(number_after(t, "Queries lost:"), "queries lost")?;
            seen += 1;
        } else if let Some(rest) = t.strip_prefix("Response codes:") {
            // "NOERROR 20000 (50.00%), NXDOMAIN 19999 (50.00%)"
            for part in rest.split(',') {
                let mut f = part.split_whitespace();
                if let (Some(code), Some(count)) = (f.next(), f.next()) {
                    stats
                        .rcodes
                        .insert(code.to_owned(), parse_num(Some(count), "response count")?);
                }
            }
        } else if let Some(rest) = t.strip_prefix("Average packet size:") {
            // "request 49, response 83"
            let f: Vec<&str> = rest.split_whitespace().collect();
            if let [_, req, _, resp] = f.as_slice() {
                stats.avg_request_bytes =
                    parse_num(Some(req.trim_end_matches(',')), "request size")?;
                stats.avg_response_bytes = parse_num(Some(resp), "response size")?;
            }
        } else if t.starts_with("Run time (s):") {
            stats.run_time_s = parse_num(number_after(t, "Run time (s):"), "run time")?;
        } else if t.starts_with("Queries per second:") {
            stats.qps = parse_num(number_after(t, "Queries per second:"), "queries per second")?;
            seen += 1;
        } else if let Some(rest) = t.strip_prefix("Average Latency (s):") {
            // "0.000171 (min 0.000019, max 0.005202)"
            stats.avg_latency_s = parse_num(rest.split_whitespace().next(), "average latency")?;
            if let Some(max) = rest.split("max ").nth(1) {
                stats.max_latency_s =
                    parse_num(Some(max.trim_end_matches(')').trim()), "max latency")?;
            }
        }
    }
    if seen < 4 {
        bail!("dnsperf printed no complete statistics:\n{output}");
    }
    Ok(stats)
}

/// How dnsperf is run.
#[derive(Clone, Debug)]
pub struct Options {
    pub query_file: std::path::PathBuf,
    pub seconds: u64,
    /// `-c`: simulated clients (source ports).
    pub clients: usize,
    /// `-T`: sender threads.
    pub threads: usize,
    /// `-q`: queries in flight at most. Large, so that an overloaded
    /// server shows up as loss rather than throttling the sender.
    pub outstanding: usize,
    /// `-t`: a query unanswered for this long is lost.
    pub timeout_s: u64,
    /// `-b`: dnsperf's socket buffers in KiB (the kernel caps them at
    /// `net.core.rmem_max`/`wmem_max`). Large, so that a scheduling hiccup
    /// of the generator is not counted as the server's loss.
    pub buffer_kib: usize,
}

impl Options {
    pub fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "clients": self.clients,
            "threads": self.threads,
            "outstanding": self.outstanding,
            "timeout_s": self.timeout_s,
            "buffer_kib": self.buffer_kib,
        })
    }
}

/// A dnsperf process, killed (by its PID, through the handle) if dropped
/// while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs dnsperf once against `server` at `rate` queries/s (`None`:
/// as fast as it can). The caller's thread affinity is inherited by
/// dnsperf.
pub fn run(server: SocketAddr, rate: Option<f64>, opts: &Options) -> Result<Stats> {
    let mut cmd = Command::new("dnsperf");
    cmd.arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(&opts.query_file)
        .arg("-l")
        .arg(opts.seconds.to_string())
        .arg("-c")
        .arg(opts.clients.to_string())
        .arg("-T")
        .arg(opts.threads.to_string())
        .arg("-q")
        .arg(opts.outstanding.to_string())
        .arg("-t")
        .arg(opts.timeout_s.to_string())
        .arg("-b")
        .arg(opts.buffer_kib.to_string());
    if let Some(rate) = rate {
        cmd.arg("-Q").arg(format!("{}", rate.round().max(1.0)));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting dnsperf (Debian package dnsperf; `cargo xtask setup` installs it)")?;
    // Drained while it runs: dnsperf prints a line per timed-out query, and
    // a full pipe would stop it.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let mut running = Running(child);
    // dnsperf stops after -l seconds and waits up to -t for stragglers.
    let deadline = Instant::now() + Duration::from_secs(opts.seconds + opts.timeout_s + 15);
    let status = loop {
        if let Some(status) = running.0.try_wait().context("waiting for dnsperf")? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("dnsperf did not finish in time; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect =
        |reader: Option<std::thread::JoinHandle<std::io::Result<String>>>| -> Result<String> {
            match reader {
                Some(r) => r
                    .join()
                    .map_err(|_| anyhow::anyhow!("dnsperf output reader panicked"))?
                    .context("reading dnsperf output"),
                None => Ok(String::new()),
            }
        };
    let out = collect(stdout)?;
    let err = collect(stderr)?;
    if !status.success() {
        bail!("dnsperf failed with {status}: {err}{out}");
    }
    parse(&out).with_context(|| format!("dnsperf stderr: {err}"))
}

/// Reads `pipe` to the end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<std::io::Result<String>> {
    std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).map(|_| text)
    })
}

/// One measured probe: the offered rate, dnsperf's figures and the
/// server's CPU time over the run.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Offered rate (`None`: unlimited).
    pub rate: Option<f64>,
    pub stats: Stats,
    /// Server CPU seconds consumed during the run, when measurable.
    pub server_cpu_s: Option<f64>,
    /// Seconds the server's threads were runnable but waited for a CPU
    /// (other processes on its core), when measurable.
    pub server_wait_s: Option<f64>,
}

impl Probe {
    /// Whether the server sustained the offered rate within the loss bound.
    pub fn sustained(&self) -> bool {
        let Some(rate) = self.rate else {
            return false;
        };
        self.stats.loss() <= MAX_LOSS && self.stats.qps >= MIN_ACHIEVED * rate
    }

    /// Share of one core the server used (CPU seconds ÷ wall seconds).
    pub fn server_utilisation(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.stats.run_time_s > 0.0).then(|| cpu / self.stats.run_time_s)
    }

    /// Share of the run the server's threads waited for a CPU.
    pub fn wait_share(&self) -> Option<f64> {
        let wait = self.server_wait_s?;
        (self.stats.run_time_s > 0.0).then(|| wait / self.stats.run_time_s)
    }

    pub fn json(&self) -> Value {
        let s = &self.stats;
        json!({
            "offered_qps": self.rate,
            "sustained": self.sustained(),
            "sent": s.sent,
            "completed": s.completed,
            "lost": s.lost,
            "loss": s.loss(),
            "qps": s.qps,
            "run_time_s": s.run_time_s,
            "rcodes": s.rcodes,
            "avg_request_bytes": s.avg_request_bytes,
            "avg_response_bytes": s.avg_response_bytes,
            "avg_latency_s": s.avg_latency_s,
            "max_latency_s": s.max_latency_s,
            "server_cpu_s": self.server_cpu_s,
            "server_runqueue_wait_s": self.server_wait_s,
            "server_utilisation": self.server_utilisation(),
        })
    }
}

/// Bisection over the offered rate: `lo` is the highest rate sustained so
/// far (0 before any), `hi` the lowest that was not.
#[derive(Clone, Debug)]
pub struct Search {
    lo: f64,
    hi: f64,
    steps_left: usize,
    best: Option<Probe>,
    pub probes: Vec<Probe>,
}

impl Search {
    /// Searches `(0, hi)` in `steps` probes.
    pub fn new(hi: f64, steps: usize) -> Self {
        Self {
            lo: 0.0,
            hi,
            steps_left: steps,
            best: None,
            probes: Vec::new(),
        }
    }

    /// The next rate to offer, or `None` when the steps are used up.
    pub fn next_rate(&self) -> Option<f64> {
        (self.steps_left > 0).then(|| (self.lo + self.hi) / 2.0)
    }

    /// Takes a probe's verdict into account.
    pub fn record(&mut self, probe: Probe) {
        self.steps_left = self.steps_left.saturating_sub(1);
        if let Some(rate) = probe.rate {
            if probe.sustained() {
                self.lo = rate;
                self.best = Some(probe.clone());
            } else {
                self.hi = rate;
            }
        }
        self.probes.push(probe);
    }

    /// The probe at the highest sustained rate, if any was.
    pub fn best(&self) -> Option<&Probe> {
        self.best.as_ref()
    }

    /// The lowest offered rate that was not sustained (the search's upper
    /// bound when it ends).
    pub fn failed_at(&self) -> f64 {
        self.hi
    }
}

/// Writes the query file into `dir` and returns its path.
pub fn write_query_file(dir: &Path, text: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("queries.txt");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q -l 2 -c 1 -T 1 -t 1 -q 500 -Q 20000
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Sun Nov 22 04:13:30 2026
[Status] Stopping after 2.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         39999
  Queries completed:    39959 (99.90%)
  Queries lost:         40 (0.10%)

  Response codes:       NOERROR 35963 (90.00%), NXDOMAIN 3996 (10.00%)
  Average packet size:  request 49, response 83
  Run time (s):         2.000062
  Queries per second:   19978.880035

  Average Latency (s):  0.000171 (min 0.000019, max 0.005202)
  Latency StdDev (s):   0.000413

";

    #[test]
    fn parses_dnsperf_statistics() {
        let s = parse(SAMPLE).expect("parsed");
        assert_eq!(s.sent, 39_999);
        assert_eq!(s.completed, 39_959);
        assert_eq!(s.lost, 40);
        assert_eq!(s.rcodes["NOERROR"], 35_963);
        assert_eq!(s.rcodes["NXDOMAIN"], 3_996);
        assert_eq!(s.avg_request_bytes, 49.0);
        assert_eq!(s.avg_response_bytes, 83.0);
        assert!((s.run_time_s - 2.000062).abs() < 1e-9);
        assert!((s.qps - 19_978.880035).abs() < 1e-6);
        assert!((s.avg_latency_s - 0.000171).abs() < 1e-12);
        assert!((s.max_latency_s - 0.005202).abs() < 1e-12);
        assert!((s.loss() - 40.0 / 39_999.0).abs() < 1e-12);
        assert!((s.nxdomain_share() - 0.1).abs() < 0.001);
    }

    #[test]
    fn output_without_statistics_is_an_error() {
        assert!(parse("[Status] Command line: dnsperf\nError: could not open file\n").is_err());
        assert!(parse("  Queries sent:         x\n").is_err());
    }

    fn probe(rate: Option<f64>, qps: f64, lost: u64) -> Probe {
        Probe {
            rate,
            stats: Stats {
                sent: 100_000,
                completed: 100_000 - lost,
                lost,
                qps,
                run_time_s: 2.0,
                ..Stats::default()
            },
            server_cpu_s: Some(1.0),
            server_wait_s: Some(0.0),
        }
    }

    #[test]
    fn sustained_needs_low_loss_and_the_offered_rate() {
        assert!(
            probe(Some(1000.0), 999.0, 100).sustained(),
            "0.1 % is allowed"
        );
        assert!(!probe(Some(1000.0), 999.0, 101).sustained(), "over 0.1 %");
        assert!(!probe(Some(1000.0), 900.0, 0).sustained(), "throttled");
        assert!(
            !probe(None, 1e9, 0).sustained(),
            "unlimited runs measure no rate"
        );
        assert_eq!(probe(None, 1.0, 0).server_utilisation(), Some(0.5));
    }

    /// A model server: sustains any rate up to `capacity`.
    fn model(capacity: f64, rate: f64) -> Probe {
        if rate <= capacity {
            probe(Some(rate), rate, 0)
        } else {
            probe(Some(rate), capacity, 5_000)
        }
    }

    #[test]
    fn search_converges_on_the_capacity() {
        let mut search = Search::new(100_000.0, 10);
        while let Some(rate) = search.next_rate() {
            search.record(model(37_000.0, rate));
        }
        let best = search
            .best()
            .expect("something sustained")
            .rate
            .expect("rate");
        assert!(
            best <= 37_000.0 && best > 37_000.0 - 100_000.0 / 1024.0,
            "{best}"
        );
        assert!(search.failed_at() > 37_000.0);
        assert_eq!(search.probes.len(), 10);
    }

    #[test]
    fn search_with_nothing_sustained_has_no_best() {
        let mut search = Search::new(1_000.0, 4);
        while let Some(rate) = search.next_rate() {
            search.record(model(0.0, rate));
        }
        assert!(search.best().is_none());
        assert!(search.failed_at() < 100.0);
    }
}
