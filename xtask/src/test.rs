//! `cargo xtask test`: unit, kernel and end-to-end phases with a summary.
//!
//! Conventions (so a test's place is decided by how it is written, not by a
//! list kept here):
//! - unit: every test that is not `#[ignore]`d; runs unprivileged.
//! - kernel: `#[ignore = "needs root: ..."]` tests whose names do not start
//!   with `e2e_`; they share kernel state (netns names, bpffs, iptables), so
//!   they run one at a time.
//! - e2e: `#[ignore]`d tests named `e2e_*` (the multi-node suite in tests/).
//!
//! With bpf-linker installed every phase builds with `SKIFF_EBPF=require`
//! (one build for all phases); kernel and e2e phases refuse to run without
//! it rather than test a silently eBPF-less binary.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use crate::cmd;

#[derive(Args)]
pub struct TestArgs {
    /// Only the unprivileged unit and integration tests.
    #[arg(long)]
    unit: bool,
    /// Only the kernel tests (root).
    #[arg(long)]
    kernel: bool,
    /// Only the end-to-end suite (root).
    #[arg(long)]
    e2e: bool,
    /// Extra filter passed to the test binaries (substring of test names).
    filter: Option<String>,
}

struct Phase {
    name: &'static str,
    result: Result<()>,
    took: Duration,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let all = !(args.unit || args.kernel || args.e2e);
    if (all || args.kernel || args.e2e) && cmd::is_root() {
        sweep_leftovers();
    }
    let filter = args.filter.as_deref();
    let mut phases = Vec::new();
    if all || args.unit {
        phases.push(phase("unit", || unit(filter)));
    }
    if all || args.kernel {
        phases.push(phase("kernel", || privileged(filter, Privileged::Kernel)));
    }
    if all || args.e2e {
        phases.push(phase("e2e", || privileged(filter, Privileged::E2e)));
    }

    if (all || args.kernel || args.e2e) && cmd::is_root() {
        sweep_leftovers();
    }
    eprintln!("\n==> summary");
    let mut failed = 0;
    for p in &phases {
        match &p.result {
            Ok(()) => eprintln!("    {:<7} ok      {:>6.1} s", p.name, p.took.as_secs_f64()),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "    {:<7} FAILED  {:>6.1} s  {e:#}",
                    p.name,
                    p.took.as_secs_f64()
                );
            }
        }
    }
    println!("phases: {} passed, {failed} failed", phases.len() - failed);
    if failed > 0 {
        bail!("{failed} test phase(s) failed");
    }
    Ok(())
}

/// Removes network namespaces left by test processes that were killed
/// before their guards could drop (their creator PID is gone).
fn sweep_leftovers() {
    match skiff_tests::leftovers::sweep() {
        Ok(s) if !s.removed.is_empty() => {
            eprintln!(
                "==> removed leftover namespaces of dead test runs: {:?}",
                s.removed
            )
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: sweeping leftover namespaces: {e}"),
    }
}

fn phase(name: &'static str, f: impl FnOnce() -> Result<()>) -> Phase {
    eprintln!("\n==> {name} tests");
    let start = Instant::now();
    let result = f();
    Phase {
        name,
        result,
        took: start.elapsed(),
    }
}

fn cargo_test() -> Command {
    let mut c = Command::new(env!("CARGO"));
    // --no-fail-fast: one failing test binary must not hide the others.
    c.current_dir(cmd::workspace_root()).args([
        "test",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--no-fail-fast",
    ]);
    // Every phase builds with the same SKIFF_EBPF so cargo does not rebuild
    // the proxy (and all that depends on it) between phases.
    if cmd::on_path("bpf-linker") {
        c.env("SKIFF_EBPF", "require");
    }
    c
}

fn unit(filter: Option<&str>) -> Result<()> {
    let mut c = cargo_test();
    c.arg("--");
    c.args(filter);
    cmd::run(&mut c)
}

#[derive(Clone, Copy, PartialEq)]
enum Privileged {
    Kernel,
    E2e,
}

fn privileged(filter: Option<&str>, which: Privileged) -> Result<()> {
    if !cmd::is_root() {
        bail!("kernel and e2e tests need root (netns, eBPF, iptables); run as root");
    }
    if !cmd::on_path("bpf-linker") {
        bail!("bpf-linker is not installed: run `cargo xtask setup` first");
    }
    let mut c = cargo_test();
    c.args(["--", "--ignored", "--test-threads=1"]);
    match which {
        Privileged::Kernel => {
            c.args(["--skip", "e2e_"]);
            c.args(filter);
        }
        Privileged::E2e => {
            c.arg(filter.unwrap_or("e2e_"));
        }
    }
    cmd::run(&mut c)
}
