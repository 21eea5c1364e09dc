//! DNS benchmark: queries per second at ≤ 0.1 % loss, Skiff's cluster DNS
//! ÷ Knot DNS serving the same records from a zone file, measured side by
//! side in one run on this machine; printed as a table and written as JSON
//! (`target/bench/dns.json` by default). Never a timed assertion.
//!
//! Run it with `cargo xtask bench dns [--quick]` (needs `dnsperf` and
//! `knotd`, which `cargo xtask setup` installs; no root, loopback only).
//!
//! The workload is N ClusterIP Services (10,000; `--quick`: 1,000) and a
//! query mix of 90 % existing names and 10 % NXDOMAIN. Skiff serves a
//! [`skiff_dns::ClusterView`] built from the Services directly (no API
//! server) on a current-thread tokio runtime; Knot serves the equivalent
//! zone file with one UDP, one TCP and one background worker. With two or
//! more CPUs, both servers are pinned to the last CPU and dnsperf to the
//! others, so each server has one core and the generator never competes
//! with it.
//!
//! Per server: an unlimited dnsperf run gives the saturation rate, then a
//! bisection over dnsperf's `-Q` finds the highest offered rate answered
//! at ≥ 97 % with ≤ 0.1 % loss (a rate fails only if a second attempt at
//! it fails too, so one loss burst does not steer the search down). The
//! probes of the two servers alternate, so load from elsewhere on the
//! machine weighs on both alike. Each probe also records the server's CPU time and how long it waited for a
//! CPU (schedstat): a server well below its full core at its best rate was
//! held back by dnsperf (one core) or by other processes, which the table
//! says, and then the `qps_per_core` case (answered q/s ÷ share of a core
//! used, flat out) is the fairer comparison of capacity.
//!
//! Layout: `workload` (services, view, zone file, query file), `servers`
//! (Skiff and Knot guards, pinning, query checks), `dnsperf` (running
//! and parsing dnsperf, the rate search), `report` (table and JSON).

#[path = "bench_dns/dnsperf.rs"]
mod dnsperf;
#[path = "bench_dns/report.rs"]
mod report;
#[path = "bench_dns/servers.rs"]
mod servers;
#[path = "bench_dns/workload.rs"]
mod workload;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use dnsperf::{Probe, Search};
use report::{Record, Report};
use servers::{Knot, Server, Skiff};

/// Skiff DNS benchmark. Prefer `cargo xtask bench dns`.
#[derive(Parser, Debug)]
struct Args {
    /// Scaled down: 1,000 services, fewer and shorter probes.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench/dns.json"))]
    json: PathBuf,
    /// Services to serve (default 10,000; 1,000 with --quick).
    #[arg(long)]
    services: Option<usize>,
    /// Seconds per dnsperf probe (default 4; 2 with --quick).
    #[arg(long)]
    probe_secs: Option<u64>,
    /// Bisection steps per server (default 7; 4 with --quick).
    #[arg(long)]
    steps: Option<usize>,
    /// Extra attempts at a rate that was not sustained before it counts
    /// as failed.
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// dnsperf clients (-c): source ports the queries come from.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// dnsperf's limit on queries in flight (-q): large, so that an
    /// overloaded server shows as loss rather than a throttled sender.
    #[arg(long, default_value_t = 1_000)]
    outstanding: usize,
    /// dnsperf's socket buffer size (-b) in KiB.
    #[arg(long, default_value_t = 4_096)]
    dnsperf_buffer_kib: usize,
    /// Do not pin the servers and dnsperf to separate CPUs.
    #[arg(long)]
    no_pin: bool,
}

/// The run's parameters, after defaults.
#[derive(Debug, Clone)]
struct Config {
    services: usize,
    query_lines: usize,
    probe_secs: u64,
    steps: usize,
    retries: usize,
    clients: usize,
    outstanding: usize,
}

fn config(args: &Args) -> Config {
    let quick = args.quick;
    Config {
        services: args.services.unwrap_or(if quick { 1_000 } else { 10_000 }),
        // dnsperf loops over the file; 100k lines keep repeats far apart.
        query_lines: 100_000,
        probe_secs: args.probe_secs.unwrap_or(if quick { 2 } else { 4 }),
        steps: args.steps.unwrap_or(if quick { 4 } else { 7 }),
        retries: args.retries,
        clients: args.clients.max(1),
        outstanding: args.outstanding.max(1),
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Prints a progress line with the time since the start.
fn progress(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {msg}");
}

/// Which CPUs the servers and dnsperf get.
#[derive(Debug, Clone)]
struct Placement {
    /// CPUs the bench could use, before pinning.
    allowed: Vec<usize>,
    server: Option<usize>,
    generator: Vec<usize>,
}

fn placement(no_pin: bool) -> Placement {
    let cpus = servers::allowed_cpus();
    match cpus.split_last() {
        Some((last, rest)) if !no_pin && !rest.is_empty() => Placement {
            server: Some(*last),
            generator: rest.to_vec(),
            allowed: cpus.clone(),
        },
        _ => Placement {
            server: None,
            generator: cpus.clone(),
            allowed: cpus,
        },
    }
}

/// Runs one probe: dnsperf at `rate` against `server`, with the server's
/// CPU time around it; rejects answers that do not fit the workload.
fn probe(server: &dyn Server, rate: Option<f64>, opts: &dnsperf::Options) -> Result<Probe> {
    let before = server.sched();
    let stats = dnsperf::run(server.addr(), rate, opts)?;
    let used = match (before, server.sched()) {
        (Some(a), Some(b)) => Some(b.since(a)),
        _ => None,
    };
    let unexpected: Vec<&String> = stats
        .rcodes
        .keys()
        .filter(|c| *c != "NOERROR" && *c != "NXDOMAIN")
        .collect();
    if !unexpected.is_empty() {
        bail!(
            "{} answered with {unexpected:?} (codes {:?}): not the workload's answers",
            server.name(),
            stats.rcodes
        );
    }
    let nx = stats.nxdomain_share();
    if stats.completed >= 1_000 && !(0.07..=0.13).contains(&nx) {
        bail!(
            "{}: {:.1} % NXDOMAIN, the query mix has 10 %",
            server.name(),
            nx * 100.0
        );
    }
    let p = Probe {
        rate,
        stats,
        server_cpu_s: used.map(|u| u.on_cpu.as_secs_f64()),
        server_wait_s: used.map(|u| u.waiting.as_secs_f64()),
    };
    progress(&format!(
        "{:<5} offered {:>9} -> {:>8.0} q/s, loss {:.3} %, server {:>5} of a core, waited {:>6} for it, {}",
        server.name(),
        rate.map_or_else(|| "unlimited".to_owned(), |r| format!("{r:.0}")),
        p.stats.qps,
        p.stats.loss() * 100.0,
        p.server_utilisation()
            .map_or_else(|| "?".to_owned(), |u| format!("{:.0} %", u * 100.0)),
        p.server_wait_s
            .map_or_else(|| "?".to_owned(), |w| format!("{:.0} ms", w * 1e3)),
        if rate.is_none() {
            "saturation"
        } else if p.sustained() {
            "sustained"
        } else {
            "not sustained"
        },
    ));
    Ok(p)
}

/// What one server's search found.
struct Outcome {
    saturation: Probe,
    search: Search,
}

impl Outcome {
    fn best_qps(&self) -> f64 {
        self.search.best().map_or(0.0, |p| p.stats.qps)
    }

    fn json(&self) -> Value {
        json!({
            "qps_at_max_loss": self.best_qps(),
            "best": self.search.best().map(Probe::json),
            "first_rate_not_sustained": self.search.failed_at(),
            "saturation": self.saturation.json(),
            "probes": self.search.probes.iter().map(Probe::json).collect::<Vec<_>>(),
        })
    }
}

fn measure(servers: &[&dyn Server], cfg: &Config, opts: &dnsperf::Options) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for server in servers {
        let saturation = probe(*server, None, opts)?;
        // A sustained rate cannot exceed what the server answered flat
        // out by much; 1.25× leaves room for a noisy saturation run.
        let hi = (saturation.stats.qps * 1.25).max(1_000.0);
        outcomes.push(Outcome {
            saturation,
            search: Search::new(hi, cfg.steps),
        });
    }
    // Alternate: step k of every server before step k+1 of any.
    for _ in 0..cfg.steps {
        for (server, outcome) in servers.iter().zip(outcomes.iter_mut()) {
            if let Some(rate) = outcome.search.next_rate() {
                let mut p = probe(*server, Some(rate), opts)?;
                // A loss burst from a scheduling hiccup would otherwise
                // steer the bisection down for good: a rate fails only
                // when every attempt at it fails. Both servers alike.
                for _ in 0..cfg.retries {
                    if p.sustained() {
                        break;
                    }
                    outcome.search.probes.push(p);
                    p = probe(*server, Some(rate), opts)?;
                }
                outcome.search.record(p);
            }
        }
    }
    Ok(outcomes)
}

/// A server below this share of its core at its best rate was held back
/// by the generator or by other processes, not by itself.
const CPU_BOUND: f64 = 0.9;
/// A server that waited this share of a run for a CPU was competing with
/// other processes on its core.
const BUSY: f64 = 0.05;

/// Why a server below [`CPU_BOUND`] of its core in `probe` was held back,
/// or `None` when it was CPU bound (or CPU time is not measurable).
fn limit_note(name: &str, probe: &Probe, context: &str) -> Option<String> {
    let u = probe.server_utilisation()?;
    if u >= CPU_BOUND {
        return None;
    }
    let cause = match probe.wait_share() {
        Some(w) if w >= BUSY => format!(
            "the machine was busy: it waited {:.0} % of the run for a CPU other processes held",
            w * 100.0
        ),
        _ => "dnsperf, on one core, could not load it more".to_owned(),
    };
    Some(format!(
        "{name} used {:.0} % of its core {context}; {cause}. Not its own limit: a lower bound \
         of its capacity",
        u * 100.0
    ))
}

fn records(cfg: &Config, skiff: &Outcome, knot: &Outcome) -> Vec<Record> {
    let mut notes = Vec::new();
    for (name, o) in [("skiff", skiff), ("knot", knot)] {
        match o.search.best() {
            None => notes.push(format!("{name} sustained no offered rate")),
            Some(best) => match best.server_utilisation() {
                None => notes.push(format!("{name}: CPU time not measurable here")),
                Some(_) => notes.extend(limit_note(name, best, "at its best rate")),
            },
        }
    }
    let raw = json!({ "skiff": skiff.json(), "knot": knot.json() });
    let what = format!(
        "q/s at ≤0.1% loss, {}k svc, 10% NXDOMAIN",
        cfg.services / 1_000
    );
    let mut out = vec![Record {
        case: "qps",
        what,
        skiff: skiff.best_qps(),
        knot: knot.best_qps(),
        unit: "q/s",
        target: Some(0.5),
        notes,
        raw: raw.clone(),
    }];
    if let (Some(s), Some(k)) = (per_core(&skiff.saturation), per_core(&knot.saturation)) {
        let mut notes = vec![format!(
            "CPU per answered query flat out: skiff {:.1} µs, knot {:.1} µs",
            1e6 / s,
            1e6 / k
        )];
        let held_back: Vec<String> = [("skiff", skiff), ("knot", knot)]
            .into_iter()
            .filter_map(|(name, o)| limit_note(name, &o.saturation, "flat out"))
            .collect();
        if !held_back.is_empty() {
            notes.extend(held_back);
            notes.push(
                "per-core figures of a server below its full core assume its CPU per query \
                 stays as measured"
                    .to_owned(),
            );
        }
        out.push(Record {
            case: "qps_per_core",
            what: "flat out: answered q/s ÷ share of a core used".to_owned(),
            skiff: s,
            knot: k,
            unit: "q/s",
            target: None,
            notes,
            raw,
        });
    }
    out
}

/// Queries answered per second of server CPU in `probe`.
fn per_core(probe: &Probe) -> Option<f64> {
    let u = probe.server_utilisation()?;
    (u > 0.0).then(|| probe.stats.qps / u)
}

fn tool_version(cmd: &str, arg: &str) -> Option<String> {
    let out = std::process::Command::new(cmd).arg(arg).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("ersion"))
        .map(|l| l.trim().to_owned())
}

fn meta(
    args: &Args,
    cfg: &Config,
    place: &Placement,
    opts: &dnsperf::Options,
    knotd: &str,
) -> Value {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).ok();
    json!({
        "quick": args.quick,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": place.allowed,
        "loadavg_at_start": read("/proc/loadavg"),
        "server_cpu": place.server,
        "generator_cpus": place.generator,
        "services": cfg.services,
        "query_lines": cfg.query_lines,
        "nxdomain_share": 1.0 / workload::NXDOMAIN_ONE_IN as f64,
        "probe_secs": cfg.probe_secs,
        "steps": cfg.steps,
        "retries": cfg.retries,
        "max_loss": dnsperf::MAX_LOSS,
        "min_achieved_share": dnsperf::MIN_ACHIEVED,
        "dnsperf": opts.json(),
        "dnsperf_version": tool_version("dnsperf", "-h"),
        "knotd": knotd,
        "knotd_version": tool_version(knotd, "--version"),
        "skiff_runtime": "tokio current_thread, one thread",
        "knot_workers": { "udp": 1, "tcp": 1, "background": 1 },
    })
}

fn run(
    cfg: &Config,
    place: &Placement,
    knotd: &std::path::Path,
    opts: &dnsperf::Options,
    report: &mut Report,
) -> Result<()> {
    progress(&format!("building {} services", cfg.services));
    let view = workload::cluster_view(cfg.services);
    let zone = workload::zone_file(&view, IpAddr::V4(Ipv4Addr::LOCALHOST));

    let skiff = Skiff::start(view, place.server).context("starting Skiff's DNS server")?;
    progress(&format!("skiff serving on {}", skiff.addr()));
    let knot = Knot::start(knotd, &zone, place.server).context("starting knotd")?;
    progress(&format!("knot serving on {}", knot.addr()));
    servers::check_answers(&skiff, cfg.services)?;
    servers::check_answers(&knot, cfg.services)?;
    progress("both answer the workload's names correctly");

    let outcomes = measure(&[&skiff, &knot], cfg, opts)?;
    let [skiff_o, knot_o] = outcomes.as_slice() else {
        bail!("expected two outcomes");
    };
    report.records = records(cfg, skiff_o, knot_o);
    Ok(())
}

fn main() -> Result<()> {
    START.get_or_init(Instant::now);
    let args = Args::parse();
    let cfg = config(&args);
    let Some(knotd) = servers::find_knotd() else {
        bail!("knotd not found (Debian package knot): run `cargo xtask setup`");
    };
    let place = placement(args.no_pin);
    // dnsperf inherits the main thread's mask; the servers pin themselves.
    if place.server.is_some() {
        servers::pin_current_thread(&place.generator)?;
    } else {
        progress("one CPU (or --no-pin): servers and dnsperf share the CPUs");
    }
    let tmp = tempfile::Builder::new()
        .prefix("skiff-bench-dns-")
        .tempdir()
        .context("creating a temp dir")?;
    let query_file = dnsperf::write_query_file(
        tmp.path(),
        &workload::query_file(cfg.services, cfg.query_lines, 0x5eed),
    )?;
    let opts = dnsperf::Options {
        query_file,
        seconds: cfg.probe_secs,
        clients: cfg.clients.max(place.generator.len().max(1)),
        threads: place.generator.len().max(1),
        outstanding: cfg.outstanding,
        timeout_s: 1,
        buffer_kib: args.dnsperf_buffer_kib,
    };
    progress(&format!(
        "dns bench ({}), {} services, servers on CPU {:?}, dnsperf on {:?}, results to {}",
        if args.quick { "quick" } else { "full" },
        cfg.services,
        place.server,
        place.generator,
        args.json.display()
    ));
    let mut meta = meta(&args, &cfg, &place, &opts, &knotd.display().to_string());
    let mut report = Report::default();
    let result = run(&cfg, &place, &knotd, &opts, &mut report);
    meta["loadavg_at_end"] = json!(
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_owned())
            .ok()
    );
    report.print();
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    report.write_json(&args.json, meta, error)?;
    println!("results written to {}", args.json.display());
    // Removes the query file (the servers are gone already).
    drop(tmp);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_smaller_and_shorter() {
        let full = config(&Args::parse_from(["bench"]));
        let quick = config(&Args::parse_from(["bench", "--quick"]));
        assert_eq!(full.services, 10_000);
        assert_eq!(quick.services, 1_000);
        assert!(quick.probe_secs < full.probe_secs);
        assert!(quick.steps < full.steps);
        let custom = config(&Args::parse_from(["bench", "--quick", "--services", "5"]));
        assert_eq!(custom.services, 5);
    }

    #[test]
    fn placement_keeps_server_and_generator_apart() {
        let p = placement(false);
        if let Some(server) = p.server {
            assert!(!p.generator.contains(&server));
            assert!(!p.generator.is_empty());
        }
        assert_eq!(placement(true).server, None);
    }

    fn outcome(qps: f64, cpu_s: f64, wait_s: f64) -> Outcome {
        let stats = dnsperf::Stats {
            sent: 10_000,
            completed: 10_000,
            qps,
            run_time_s: 1.0,
            ..dnsperf::Stats::default()
        };
        let p = Probe {
            rate: Some(qps),
            stats,
            server_cpu_s: Some(cpu_s),
            server_wait_s: Some(wait_s),
        };
        let mut search = Search::new(qps * 2.0, 1);
        search.record(p.clone());
        Outcome {
            saturation: p,
            search,
        }
    }

    #[test]
    fn records_flag_a_generator_bound_server() {
        let cfg = config(&Args::parse_from(["bench"]));
        let recs = records(
            &cfg,
            &outcome(30_000.0, 1.0, 0.0),
            &outcome(60_000.0, 0.3, 0.0),
        );
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ratio(), Some(0.5));
        assert!(
            recs[0]
                .notes
                .iter()
                .any(|n| n.starts_with("knot used 30 % of its core at its best rate; dnsperf"))
        );
        assert!(!recs[0].notes.iter().any(|n| n.starts_with("skiff")));
        // Per core, flat out: 30k/1.0 vs 60k/0.3 = 200k.
        let per_core = recs[1].ratio().expect("ratio");
        assert!((per_core - 0.15).abs() < 1e-9, "{per_core}");
        assert!(
            recs[1]
                .notes
                .iter()
                .any(|n| n.starts_with("knot used 30 % of its core flat out"))
        );
    }

    #[test]
    fn records_blame_a_busy_machine_when_the_server_waited_for_a_cpu() {
        let cfg = config(&Args::parse_from(["bench"]));
        let recs = records(
            &cfg,
            &outcome(10_000.0, 0.3, 0.4),
            &outcome(12_000.0, 0.95, 0.0),
        );
        assert!(
            recs[0]
                .notes
                .iter()
                .any(|n| n.starts_with("skiff used 30 %") && n.contains("waited 40 %")),
            "{:?}",
            recs[0].notes
        );
        assert!(
            !recs[0].notes.iter().any(|n| n.starts_with("knot")),
            "knot was CPU bound"
        );
    }
}
