//! `cargo xtask bench <name>`: benchmarks that print ratios measured side
//! by side in one run and write them as JSON under `target/bench/`, so
//! runs can be compared over time. Speed claims come only from these;
//! tests never assert timings.
//!
//! Each benchmark is one entry of [`BENCHES`] and one function (or, for
//! an unprivileged example, one [`example`] call).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

use crate::cmd;

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark: see the list in `cargo xtask bench --help`.
    #[arg(help = known_help())]
    name: String,
    /// Scaled-down smoke run (under a minute once built).
    #[arg(long)]
    quick: bool,
    /// scheduler: pods to place in the full-size case (default 10000).
    #[arg(long)]
    pods: Option<usize>,
    /// scheduler: nodes in the full-size case (default 1000).
    #[arg(long)]
    nodes: Option<usize>,
    /// Extra arguments for the benchmark binary (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Known benchmarks: name and what it measures.
const BENCHES: &[(&str, &str)] = &[
    (
        "dataplane",
        "service proxy: connection rate and latency via ClusterIP vs direct, latency at scale, \
         programming time; eBPF and iptables (root)",
    ),
    (
        "dns",
        "cluster DNS: queries/s at <= 0.1% loss for 10k services (10% NXDOMAIN), Skiff vs \
         Knot DNS on one worker each, with dnsperf (loopback, no root)",
    ),
    (
        "api",
        "API server: create throughput and watch delivery over HTTP vs straight into the store",
    ),
    (
        "scheduler",
        "scheduler: pods/s placing --pods (10000) onto --nodes (1000) with the scheduler's cache \
         vs a plain loop over the same filter and score functions; placements must agree",
    ),
];

fn known_help() -> String {
    let mut s = String::from("Benchmark to run. Known:");
    for (name, what) in BENCHES {
        s.push_str(&format!("\n  {name}: {what}"));
    }
    s
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.name != "scheduler" && (args.pods.is_some() || args.nodes.is_some()) {
        bail!("--pods and --nodes are options of the scheduler bench only");
    }
    match args.name.as_str() {
        "dataplane" => dataplane(args),
        "api" => example(args, "api", "skiff-control", "bench_api"),
        "dns" => dns(args),
        "scheduler" => example(args, "scheduler", "skiff-control", "bench_scheduler"),
        other => {
            let names: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
            bail!("unknown benchmark {other:?}; known: {}", names.join(", "))
        }
    }
}

/// Where benchmark results go: `<target dir>/bench/<name>.json`.
fn results_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        cmd::workspace_root().join(target)
    };
    target.join("bench").join(format!("{name}.json"))
}

fn dataplane(args: &BenchArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!("the dataplane bench needs root (network namespaces, eBPF, iptables); run as root");
    }
    if !cmd::on_path("bpf-linker") {
        bail!("bpf-linker is not installed: run `cargo xtask setup` first");
    }
    // Namespaces of test or bench processes that were killed before their
    // guards dropped; the bench sweeps its own pins and cgroups itself.
    match skiff_tests::leftovers::sweep() {
        Ok(s) if !s.removed.is_empty() => {
            eprintln!(
                "==> removed leftover namespaces of dead runs: {:?}",
                s.removed
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: sweeping leftover namespaces: {e}"),
    }
    let json = results_path("dataplane");
    let before = modified(&json);
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(cmd::workspace_root())
        // Embed the kernel programs or fail: an eBPF-less binary would
        // measure nothing.
        .env("SKIFF_EBPF", "require")
        .args(["run", "--release", "-p", "skiff-proxy", "--example"])
        .args(["bench_dataplane", "--", "--json"])
        .arg(&json);
    if args.quick {
        c.arg("--quick");
    }
    c.args(&args.extra);
    let result = cmd::run(&mut c);
    // The bench writes what it measured even when a case fails; a file
    // left by an earlier run is not this run's result.
    let after = modified(&json);
    if after.is_some() && after != before {
        println!("results: {}", json.display());
    }
    result
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn dns(args: &BenchArgs) -> Result<()> {
    // knotd lives in /usr/sbin, which non-root PATHs often lack; the bench
    // looks there itself.
    let knotd = cmd::on_path("knotd") || std::path::Path::new("/usr/sbin/knotd").is_file();
    let missing: Vec<&str> = [("dnsperf", cmd::on_path("dnsperf")), ("knot", knotd)]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(pkg, _)| pkg)
        .collect();
    if !missing.is_empty() {
        bail!("the dns bench needs Debian packages {missing:?}: run `cargo xtask setup` first");
    }
    let json = results_path("dns");
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(cmd::workspace_root())
        .args(["run", "--release", "-p", "skiff-dns", "--example"])
        .args(["bench_dns", "--", "--json"])
        .arg(&json);
    if args.quick {
        c.arg("--quick");
    }
    c.args(&args.extra);
    let result = cmd::run(&mut c);
    // The bench writes what it measured even when a case fails.
    if json.is_file() {
        println!("results: {}", json.display());
    }
    result
}

/// Runs an unprivileged benchmark example in release mode with `--json`.
fn example(args: &BenchArgs, name: &str, package: &str, example: &str) -> Result<()> {
    let json = results_path(name);
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(cmd::workspace_root())
        .args([
            "run",
            "--release",
            "-p",
            package,
            "--example",
            example,
            "--",
            "--json",
        ])
        .arg(&json);
    if args.quick {
        c.arg("--quick");
    }
    if let Some(pods) = args.pods {
        c.arg(format!("--pods={pods}"));
    }
    if let Some(nodes) = args.nodes {
        c.arg(format!("--nodes={nodes}"));
    }
    c.args(&args.extra);
    let before = modified(&json);
    let result = cmd::run(&mut c);
    // A file left by an earlier run is not this run's result.
    let after = modified(&json);
    if after.is_some() && after != before {
        println!("results: {}", json.display());
    }
    result
}
