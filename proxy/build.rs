//! Builds Skiff's kernel programs (crate `skiff-ebpf`) with the nightly
//! toolchain for `bpfel-unknown-none` and leaves the object in `OUT_DIR`,
//! where `src/ebpf/object.rs` embeds it.
//!
//! `SKIFF_EBPF` chooses what happens:
//! - `auto` (default): build when `bpf-linker` is on PATH, otherwise warn and
//!   build the proxy without kernel programs (the eBPF dataplane then reports
//!   that it is unavailable and `--dataplane auto` falls back to iptables).
//!   This keeps plain `cargo check/clippy/test` working without bpf-linker.
//! - `require`: build or fail (used by `cargo xtask test --kernel|--e2e`).
//! - `skip`: never build.
//!
//! Why not aya-build: it fixes the rustflags it passes, and our round-robin
//! needs `-C target-cpu=v3` (fetch-and-add, BPF_ATOMIC|BPF_FETCH); with the
//! default `generic` CPU LLVM rejects the use of XADD's return value.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const PACKAGE: &str = "skiff-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> Result<()> {
    println!("cargo::rustc-check-cfg=cfg(skiff_ebpf)");
    println!("cargo::rerun-if-env-changed=SKIFF_EBPF");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("proxy/ has no parent directory")?;
    for p in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/build.rs",
        "ebpf/common/src",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }

    let mode = env::var("SKIFF_EBPF").unwrap_or_else(|_| "auto".into());
    match mode.as_str() {
        "skip" => {
            println!("cargo::warning=SKIFF_EBPF=skip: building without eBPF programs");
            return Ok(());
        }
        "auto" if !on_path("bpf-linker") => {
            println!(
                "cargo::warning=bpf-linker not found: building without eBPF programs \
                 (run `cargo xtask setup`, or set SKIFF_EBPF=skip to silence this)"
            );
            return Ok(());
        }
        "auto" | "require" => {}
        other => bail!("SKIFF_EBPF={other}: expected auto, require or skip"),
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = build(root, &out_dir)?;
    let dest = out_dir.join("skiff-ebpf.o");
    std::fs::copy(&object, &dest)
        .with_context(|| format!("copying {} to {}", object.display(), dest.display()))?;
    println!("cargo::rustc-cfg=skiff_ebpf");
    Ok(())
}

fn build(root: &Path, out_dir: &Path) -> Result<PathBuf> {
    let target_dir = out_dir.join("ebpf-target");
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
    ]
    .join("\x1f");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--target", TARGET])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer (stable) build's settings must not leak into the nested one.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(key);
    }
    let output = cmd
        .output()
        .context("could not run `rustup run nightly cargo`: is rustup installed?")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo::warning={line}");
        }
        bail!(
            "building the eBPF programs failed ({}); see the warnings above. \
             `cargo xtask setup` installs the nightly rust-src and bpf-linker they need",
            output.status
        );
    }
    let object = target_dir.join(TARGET).join("release").join(PACKAGE);
    if !object.is_file() {
        bail!("nested cargo succeeded but {} is missing", object.display());
    }
    Ok(object)
}

fn on_path(name: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}
