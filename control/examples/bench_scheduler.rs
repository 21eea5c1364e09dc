//! `cargo xtask bench scheduler`: scheduling throughput of the scheduler's
//! cache (`SchedulerCache`: node totals kept current, a decision is
//! O(nodes)) against the plain loop that rebuilds every node's totals from
//! the bound pods for each decision — both over the same filter and score
//! functions and the same pods and nodes, measured side by side in one run
//! by `skiff_control::scheduler::bench_schedule`. The two must place every
//! pod on the same node; a disagreement fails the run (after the results
//! are written).
//!
//! Cases: a tenth of the requested size, then the requested size
//! (`--pods`, `--nodes`; default 10,000 pods on 1,000 nodes), so the JSON
//! shows how the ratio grows; `--quick` runs only the tenth. Results are
//! printed and written as JSON (one object per case with raw figures and
//! the ratio).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::json;
use skiff_control::scheduler::{BenchResult, bench_schedule};

#[derive(Parser)]
struct Args {
    /// Where to write the JSON results.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only the tenth-size case, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Pods to schedule in the full-size case.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Nodes in the full-size case.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
}

/// How often to say that a long case is still running.
const TICK: Duration = Duration::from_secs(15);

/// Runs one case, printing a line every [`TICK`] while it runs (the plain
/// loop takes minutes at full size).
fn measure(index: usize, total: usize, pods: usize, nodes: usize) -> BenchResult {
    eprintln!("case {index}/{total}: {pods} pods onto {nodes} nodes (cache, then plain loop) ...");
    let start = Instant::now();
    let (done, ticks) = mpsc::channel::<()>();
    let ticker = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(TICK) {
            eprintln!(
                "  ... still measuring ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
        }
    });
    let result = bench_schedule(pods, nodes);
    // The ticker ends when the sender goes away or sends.
    let _ = done.send(());
    let _ = ticker.join();
    eprintln!(
        "  cache {:.0} pods/s ({:.3} s) | plain loop {:.0} pods/s ({:.3} s) | ratio {:.1} | \
         placements {} | {} unschedulable",
        result.cached_pods_per_sec,
        result.cached_elapsed.as_secs_f64(),
        result.plain_pods_per_sec,
        result.plain_elapsed.as_secs_f64(),
        result.speedup,
        if result.placements_agree {
            "identical"
        } else {
            "DIFFER"
        },
        result.unschedulable,
    );
    result
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.pods == 0 || args.nodes == 0 {
        bail!("--pods and --nodes must be at least 1");
    }
    let tenth = ((args.pods / 10).max(1), (args.nodes / 10).max(1));
    let cases: Vec<(usize, usize)> = if args.quick {
        vec![tenth]
    } else {
        vec![tenth, (args.pods, args.nodes)]
    };
    eprintln!(
        "bench scheduler: {} case(s): {}",
        cases.len(),
        cases
            .iter()
            .map(|(p, n)| format!("{p} pods/{n} nodes"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let results: Vec<BenchResult> = cases
        .iter()
        .enumerate()
        .map(|(i, (pods, nodes))| measure(i + 1, cases.len(), *pods, *nodes))
        .collect();

    println!(
        "{:<24} {:>14} {:>14} {:>9} {:>11} {:>14}",
        "case", "cache", "plain loop", "ratio", "placements", "unschedulable"
    );
    let mut json_cases = Vec::new();
    for r in &results {
        let case = format!("{}_pods_{}_nodes", r.pods, r.nodes);
        println!(
            "{:<24} {:>10.0} p/s {:>10.0} p/s {:>9.1} {:>11} {:>14}",
            case,
            r.cached_pods_per_sec,
            r.plain_pods_per_sec,
            r.speedup,
            if r.placements_agree {
                "identical"
            } else {
                "DIFFER"
            },
            r.unschedulable
        );
        json_cases.push(json!({
            "case": case,
            "unit": "pods/s",
            "pods": r.pods,
            "nodes": r.nodes,
            "cache_seconds": r.cached_elapsed.as_secs_f64(),
            "plain_seconds": r.plain_elapsed.as_secs_f64(),
            "cache_pods_per_sec": r.cached_pods_per_sec,
            "plain_pods_per_sec": r.plain_pods_per_sec,
            "ratio": r.speedup,
            "placements_agree": r.placements_agree,
            "unschedulable": r.unschedulable,
        }));
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"bench": "scheduler", "cases": json_cases}))?,
        )?;
        eprintln!("wrote {}", path.display());
    }
    let differ: Vec<String> = results
        .iter()
        .filter(|r| !r.placements_agree)
        .map(|r| format!("{} pods/{} nodes", r.pods, r.nodes))
        .collect();
    if !differ.is_empty() {
        bail!(
            "the cache and the plain loop placed pods differently in: {}",
            differ.join(", ")
        );
    }
    Ok(())
}
