//! Shared helpers of the agent's root tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod cluster;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use skiff_agent::sandbox::names;
use skiff_tests::Netns;

/// The test pod binary (a tiny HTTP server/client).
pub const TESTPOD: &str = env!("CARGO_BIN_EXE_skiff-agent-testpod");

/// Logs to the test output (RUST_LOG to tune).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "skiff_agent=debug,info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Builds a tokio runtime on a thread that has entered `netns` (its
/// worker threads inherit the namespace) and runs `f` to completion there.
pub fn block_on_in<F, Fut, T>(netns: &Path, f: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let file = std::fs::File::open(netns).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Spawns a thread in `netns` running a runtime until `f` completes;
/// returns its join handle.
pub fn spawn_in<F, Fut, T>(netns: &Path, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let file = std::fs::File::open(netns).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

/// Polls `f` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async twin of [`wait_for`].
pub async fn wait_for_async<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cgroup v2 root of this machine.
pub fn cgroup_root() -> PathBuf {
    skiff_agent::config::detect_cgroup2_root().expect("cgroup v2 mounted")
}

/// True if a process with `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    skiff_agent::sandbox::procfs::start_ticks(pid).is_some()
}

/// Network namespace names on the machine.
pub fn netns_names() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts nothing of pod `uid` is left: netns, ns files, pod dir.
pub fn assert_pod_gone(data_dir: &Path, uid: &str) {
    let netns = names::netns_name(uid);
    assert!(!netns_names().contains(&netns), "netns {netns} left behind");
    assert!(
        !data_dir.join("pods").join(uid).exists(),
        "pod dir left behind"
    );
    assert!(
        !data_dir.join("ns").join(names::pod_id(uid)).exists(),
        "namespace files left behind"
    );
}

/// Asserts `/proc/self/mountinfo` has nothing under `dir`.
pub fn assert_no_mounts_under(dir: &Path) {
    let mounts = skiff_agent::sandbox::mounts::mounts_under(dir).expect("mountinfo");
    assert!(
        mounts.is_empty(),
        "mounts left under {}: {mounts:?}",
        dir.display()
    );
}

/// Interface names in the current thread's namespace that start with `prefix`.
pub fn links_in(netns: &Netns, prefix: &str) -> Vec<String> {
    netns
        .link_names()
        .expect("links")
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// A fresh empty directory for mount targets (image-less containers need
/// existing mount points on the node).
pub fn mount_point(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::create_dir_all(&p).expect("mount point");
    p
}

/// 10.244.x.y.
pub fn ip(x: u8, y: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, x, y)
}
