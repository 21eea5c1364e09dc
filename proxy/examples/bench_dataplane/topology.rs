//! What the bench builds in the kernel, each behind a guard that tears it
//! down on drop (also on error or panic): the three namespaces with the
//! backends, the cgroup the process joins for socket-LB, and the bpffs pin
//! directory.
//!
//! ```text
//!  client ns (pod)            node ns (dataplane)                 pods ns
//!  eth0 10.244.0.2 ─veth─ c0 10.244.0.1   p0 10.244.1.1 ─veth─ eth0 10.244.1.2..
//!  default via .0.1           ip_forward=1                        default via .1.1
//! ```
//!
//! Client-to-ClusterIP traffic is pod-to-service traffic: the eBPF
//! dataplane rewrites it at connect() (socket-LB), the iptables one DNATs it
//! in the node's PREROUTING; direct traffic is plain pod-to-pod routing
//! through the node. No namespace has a route anywhere else.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use nix::sys::socket::{Shutdown, shutdown};
use skiff_tests::{Netns, link_veth};

use crate::states::BACKEND_PORT;
use crate::workload::IO_TIMEOUT;

/// Name prefix of the pin directory and cgroup (`skiff-bench-<pid>`).
const PREFIX: &str = "skiff-bench-";

/// The three namespaces and the backend addresses.
pub struct Topology {
    pub client: Netns,
    pub node: Netns,
    pub pods: Netns,
    pub backends: Vec<Ipv4Addr>,
}

impl Topology {
    /// Builds the namespaces with `backends` pod addresses (at most 200).
    pub fn build(tag: &str, backends: usize) -> Result<Topology> {
        let client = Netns::new(&format!("{tag}c")).context("client namespace")?;
        let node = Netns::new(&format!("{tag}n")).context("node namespace")?;
        let pods = Netns::new(&format!("{tag}p")).context("pods namespace")?;
        link_veth(&node, "c0", &client, "eth0").context("client veth")?;
        link_veth(&node, "p0", &pods, "eth0").context("pods veth")?;
        node.add_addr("c0", "10.244.0.1/24".parse()?)?;
        node.add_addr("p0", "10.244.1.1/24".parse()?)?;
        node.set_sysctl("net.ipv4.ip_forward", "1")?;
        client.add_addr("eth0", "10.244.0.2/24".parse()?)?;
        client.ip(["route", "add", "default", "via", "10.244.0.1"])?;
        let backends: Vec<Ipv4Addr> = (0..backends.clamp(1, 200))
            .map(|i| Ipv4Addr::new(10, 244, 1, 2 + i as u8))
            .collect();
        for ip in &backends {
            pods.add_addr("eth0", format!("{ip}/24").parse()?)?;
        }
        pods.ip(["route", "add", "default", "via", "10.244.1.1"])?;
        Ok(Topology {
            client,
            node,
            pods,
            backends,
        })
    }
}

/// One backend thread per address in the pods namespace. Each connection:
/// read one byte, write it back, close. Dropping stops and joins them.
pub struct Backends {
    stop: Arc<AtomicBool>,
    listeners: Vec<Arc<TcpListener>>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    pub fn start(pods: &Netns, addrs: &[Ipv4Addr]) -> Result<Backends> {
        let mut backends = Backends {
            stop: Arc::new(AtomicBool::new(false)),
            listeners: Vec::new(),
            threads: Vec::new(),
        };
        for ip in addrs {
            let addr = SocketAddr::from((*ip, BACKEND_PORT));
            let listener = Arc::new(
                pods.run_in(|| TcpListener::bind(addr))?
                    .with_context(|| format!("binding backend {addr}"))?,
            );
            backends.listeners.push(Arc::clone(&listener));
            let stop = Arc::clone(&backends.stop);
            backends
                .threads
                .push(std::thread::spawn(move || serve(&listener, &stop)));
        }
        Ok(backends)
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut byte = [0u8; 1];
    loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                // A client that never sends must not hold the backend.
                let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                if conn.read_exact(&mut byte).is_ok() {
                    let _ = conn.write_all(&byte);
                }
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            // Aborted handshakes and the like: keep serving.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes its blocked accept().
        for l in &self.listeners {
            let _ = shutdown(l.as_raw_fd(), Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup2 mount: run `cargo xtask setup`")
}

/// A cgroup v2 directory this process sits in while the guard lives (the
/// socket-LB programs are attached to it); on drop the process moves back
/// and the directory is removed.
pub struct CgroupGuard {
    path: PathBuf,
    original: PathBuf,
}

impl CgroupGuard {
    pub fn enter(name: &str) -> Result<CgroupGuard> {
        let root = cgroup2_root()?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("process has no cgroup v2 membership")?
            .trim_start_matches('/');
        let original = root.join(rel);
        let path = root.join(format!("{PREFIX}{}-{name}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let guard = CgroupGuard { path, original };
        std::fs::write(
            guard.path.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .context("joining the bench cgroup")?;
        Ok(guard)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let pid = std::process::id().to_string();
        if let Err(e) = std::fs::write(self.original.join("cgroup.procs"), &pid) {
            eprintln!("warning: leaving {}: {e}", self.path.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}

/// `/sys/fs/bpf/skiff-bench-<pid>`: the pin root of every eBPF dataplane
/// the bench starts. Dropping removes it (unpinning maps and links).
pub struct PinRoot(PathBuf);

impl PinRoot {
    pub fn create() -> Result<PinRoot> {
        let path = PathBuf::from(format!("/sys/fs/bpf/{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating {} (is bpffs mounted?)", path.display()))?;
        Ok(PinRoot(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: removing {}: {e}", self.0.display()),
        }
    }
}

/// The PID in a `skiff-bench-<pid>[-...]` name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.split('-').next()?.parse().ok().filter(|p| *p > 0)
}

/// Removes pin directories and cgroups of earlier bench runs whose process
/// is gone (killed before its guards dropped). Returns what it removed.
pub fn sweep_leftovers() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut dirs = vec![PathBuf::from("/sys/fs/bpf")];
    dirs.extend(cgroup2_root().ok());
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = entry.path();
            // A cgroup directory is removed with rmdir even though it
            // lists files; a pin directory needs the recursive removal.
            let result = std::fs::remove_dir(&path).or_else(|_| std::fs::remove_dir_all(&path));
            match result {
                Ok(()) => removed.push(path),
                Err(e) => eprintln!("warning: removing leftover {}: {e}", path.display()),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("skiff-bench-4242"), Some(4242));
        assert_eq!(owner_pid("skiff-bench-4242-traffic"), Some(4242));
        assert_eq!(owner_pid("skiff-bench-0"), None);
        assert_eq!(owner_pid("skiff-bench-x"), None);
        assert_eq!(owner_pid("skiff-kt-4242-a"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
