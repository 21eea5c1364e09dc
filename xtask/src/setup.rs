//! `cargo xtask setup`: make this machine able to build and test Skiff.
//!
//! Every step first checks whether it is already done, so a re-run on a
//! prepared machine takes seconds. Steps that need root say so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd;

/// bpf-linker's major.minor that links LLVM 22 (the nightly's LLVM).
const BPF_LINKER_VERSION: &str = "0.13";
/// The LLVM major the nightly toolchain ships and bpf-linker must link.
const LLVM_MAJOR: &str = "22";

/// Debian packages and the command each provides (the command is the probe).
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iptables", "iptables"),
    ("iptables", "iptables-legacy"),
    ("bpftool", "bpftool"),
    ("dnsutils", "dig"),
    ("conntrack", "conntrack"),
    ("knot", "knotd"),
    ("dnsperf", "dnsperf"),
    ("procps", "ps"),
];

#[derive(Args)]
pub struct SetupArgs {
    /// Skip installing Debian packages (for machines managed otherwise).
    #[arg(long)]
    no_packages: bool,
    /// Rebuild bpf-linker even if a working one is installed.
    #[arg(long)]
    force_bpf_linker: bool,
}

pub fn run(args: &SetupArgs) -> Result<()> {
    step("nightly toolchain with rust-src", nightly_rust_src)?;
    step("bpf-linker linked against the nightly's LLVM", || {
        bpf_linker(args.force_bpf_linker)
    })?;
    if args.no_packages {
        eprintln!("==> Debian packages: skipped (--no-packages)");
    } else {
        step("Debian packages used by the tests", debian_packages)?;
    }
    step("bpffs mounted at /sys/fs/bpf", bpffs)?;
    step("a cgroup v2 hierarchy", cgroup2)?;
    eprintln!("setup complete");
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    eprintln!("==> {what}");
    let done = f().with_context(|| format!("setup step failed: {what}"))?;
    eprintln!("    {done}");
    Ok(())
}

fn nightly_rust_src() -> Result<String> {
    let Some(version) = cmd::probe(Command::new("rustc").args(["+nightly", "--version"])) else {
        bail!(
            "no nightly toolchain: eBPF programs need one. Install it with \
             `rustup toolchain install nightly --profile minimal --component rust-src`"
        );
    };
    let installed =
        cmd::probe(Command::new("rustup").args(["+nightly", "component", "list", "--installed"]))
            .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(format!("{version}: rust-src already installed"));
    }
    cmd::run(Command::new("rustup").args(["+nightly", "component", "add", "rust-src"])).context(
        "could not add rust-src to the nightly toolchain (needed for -Z build-std=core)",
    )?;
    Ok(format!("{version}: rust-src added"))
}

/// The nightly sysroot's LLVM shared library, e.g.
/// `lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = cmd::probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed")?;
    let lib = Path::new(&sysroot).join("lib");
    let prefix = format!("libLLVM.so.{LLVM_MAJOR}.");
    let found = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        });
    found.with_context(|| {
        format!(
            "no {prefix}* in {}: the nightly must ship LLVM {LLVM_MAJOR} for bpf-linker {BPF_LINKER_VERSION}",
            lib.display()
        )
    })
}

/// A folder shaped like an LLVM install (`lib/libLLVM.so`) pointing at the
/// nightly's own LLVM, so bpf-linker links exactly the LLVM rustc emits for.
/// It lives outside target/ so `cargo clean` cannot break the linker.
fn llvm_prefix_dir() -> Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(home.join(format!("skiff-llvm-{LLVM_MAJOR}")))
}

fn bpf_linker_works() -> Option<String> {
    let v = cmd::probe(Command::new("bpf-linker").arg("--version"))?;
    v.split_whitespace()
        .nth(1)
        .is_some_and(|ver| ver.starts_with(&format!("{BPF_LINKER_VERSION}.")))
        .then_some(v)
}

fn bpf_linker(force: bool) -> Result<String> {
    if !force && let Some(v) = bpf_linker_works() {
        return Ok(format!("{v} already installed"));
    }
    let libllvm = nightly_libllvm()?;
    let prefix = llvm_prefix_dir()?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = libllvm
        .file_name()
        .context("LLVM library path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "    building bpf-linker {BPF_LINKER_VERSION} against {} (about 90 s)",
        libllvm.display()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                &format!("~{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
                "--force",
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed; is crates.io reachable and gcc installed?")?;
    bpf_linker_works()
        .map(|v| format!("{v} installed"))
        .context("bpf-linker was installed but `bpf-linker --version` does not work; is ~/.cargo/bin on PATH?")
}

fn debian_packages() -> Result<String> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !cmd::on_path(probe))
        .map(|(pkg, _)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok("all present".into());
    }
    if !cmd::is_root() {
        bail!(
            "missing packages {missing:?}; run as root or install them: apt-get install {}",
            missing.join(" ")
        );
    }
    if !cmd::on_path("apt-get") {
        bail!(
            "missing packages {missing:?} and no apt-get here; install them with your package manager"
        );
    }
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(format!("installed {}", missing.join(" ")))
}

/// (mount point, fs type) pairs from /proc/mounts.
fn mounts() -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next()?;
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect())
}

fn bpffs() -> Result<String> {
    if mounts()?
        .iter()
        .any(|(m, t)| m == "/sys/fs/bpf" && t == "bpf")
    {
        return Ok("already mounted".into());
    }
    if !cmd::is_root() {
        bail!("bpffs is not mounted; as root: mount -t bpf bpf /sys/fs/bpf");
    }
    fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok("mounted".into())
}

fn cgroup2() -> Result<String> {
    if let Some((m, _)) = mounts()?.into_iter().find(|(_, t)| t == "cgroup2") {
        return Ok(format!("found at {m}"));
    }
    if !cmd::is_root() {
        bail!("no cgroup2 hierarchy; as root: mount -t cgroup2 none /sys/fs/cgroup/unified");
    }
    // On hybrid hosts /sys/fs/cgroup is a tmpfs of v1 hierarchies; systemd's
    // convention puts v2 at unified/. Elsewhere mount our own.
    let target = if Path::new("/sys/fs/cgroup/cpu").exists() {
        "/sys/fs/cgroup/unified"
    } else if fs::read_dir("/sys/fs/cgroup")
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
    {
        "/sys/fs/cgroup"
    } else {
        "/run/skiff/cgroup2"
    };
    fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    cmd::run(Command::new("mount").args(["-t", "cgroup2", "none", target]))?;
    Ok(format!("mounted at {target}"))
}
