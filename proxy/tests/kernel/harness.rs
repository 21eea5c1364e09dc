//! Kernel-test harness: a throwaway network namespace and bpffs pin
//! directory per test, the embedded programs loaded with their maps pinned
//! there, and `BPF_PROG_TEST_RUN` on crafted packets.
//!
//! Everything is torn down on drop, also when the test panics: the netns
//! guard (skiff-tests) deletes the namespace; the pin directory is removed
//! here, which unpins the maps so the kernel frees them.

use std::path::{Path, PathBuf};

use aya::programs::{TestRun, TestRunOptions};
use skiff_proxy::ebpf::{Loaded, ServiceMaps};
use skiff_tests::netns::Netns;

/// Result of running a program once.
pub struct Run {
    /// The program's return value (a `TC_ACT_*` verdict for tc programs).
    pub verdict: i32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

pub struct KernelEnv {
    // Field order is drop order: maps and programs before the pins and netns.
    pub maps: ServiceMaps,
    pub loaded: Loaded,
    pin_dir: PinDir,
    pub netns: Netns,
}

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: removing pin dir {}: {e}", self.0.display());
        }
    }
}

impl KernelEnv {
    /// Creates the namespace and pin dir and loads the programs. `name` keeps
    /// concurrent or leftover directories apart.
    pub fn new(name: &str) -> Self {
        let netns = Netns::new("kt").expect("creating test network namespace");
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/skiff-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let pin_dir = PinDir(dir.clone());
        let mut loaded = Loaded::load(&dir).expect("loading the eBPF object (is bpffs mounted?)");
        loaded
            .tc_program()
            .expect("loading skiff_tc into the kernel");
        let maps = ServiceMaps::take(&mut loaded.ebpf).expect("taking the dataplane maps");
        Self {
            maps,
            loaded,
            pin_dir,
            netns,
        }
    }

    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir.0
    }

    /// Runs the tc program on `packet` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN` and returns its verdict and output packet.
    pub fn run_tc(&mut self, packet: &[u8]) -> Run {
        let prog = self.loaded.tc_program().expect("tc program");
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let result = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        Run {
            verdict: result.return_value as i32,
            packet: out,
        }
    }
}

/// A cgroup v2 directory this test process sits in while it lives; on drop
/// the process moves back to where it was and the directory is removed.
pub struct CgroupGuard {
    path: PathBuf,
    original: PathBuf,
}

fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup2 mount: run `cargo xtask setup`")
}

impl CgroupGuard {
    pub fn enter(name: &str) -> Self {
        let root = cgroup2_root();
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("process has no cgroup v2 membership")
            .trim_start_matches('/');
        let original = root.join(rel);
        let path = root.join(format!("skiff-kt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("creating test cgroup");
        let guard = Self { path, original };
        std::fs::write(
            guard.path.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .expect("joining test cgroup");
        guard
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let pid = std::process::id().to_string();
        if let Err(e) = std::fs::write(self.original.join("cgroup.procs"), &pid) {
            eprintln!("warning: leaving test cgroup: {e}");
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}
