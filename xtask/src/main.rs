//! `cargo xtask`: every install and test step of Skiff lives here, so a fresh
//! machine needs only the two commands in README.md.
//!
//! Layout: `setup` (toolchain, bpf-linker, Debian packages, bpffs/cgroup2
//! mounts), `test` (unit, kernel and end-to-end phases with a summary),
//! `cmd` (running external commands with echo and good errors).

mod bench;
mod cmd;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Skiff developer tasks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare this machine: nightly rust-src, bpf-linker linked against the
    /// nightly's LLVM, Debian packages the tests use, bpffs and cgroup2
    /// mounts. Idempotent; takes seconds when everything is in place.
    Setup(setup::SetupArgs),
    /// Run the test suites and print a summary. With no flag: unit, then
    /// kernel, then end-to-end. Kernel and e2e phases need root.
    Test(test::TestArgs),
    /// Run a benchmark (`cargo xtask bench dataplane|dns|api|scheduler [--quick]`): ratios
    /// measured side by side, printed and written to target/bench/<name>.json.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
