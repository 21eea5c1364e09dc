//! cgroup v2 groups for pods: `<cgroup_root>/skiff/<node>/pod-<uid>/<container>`.
//!
//! Controllers are used only where the kernel offers them: on a hybrid
//! systemd machine the v2 hierarchy (`/sys/fs/cgroup/unified`) often has no
//! `cpu` or `memory` controller because v1 holds them. The agent still puts
//! every container in its own group (process tracking, `cgroup.kill`), and
//! says once, at start, which limits it cannot enforce.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{AgentError, Result};
use crate::sandbox::names;

/// Controllers the agent wants for limits.
pub const WANTED: [&str; 2] = ["cpu", "memory"];
/// cpu.max period in microseconds (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Limits for one container, from `resources.limits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

/// The names in a `cgroup.controllers` or `cgroup.subtree_control` file.
pub fn parse_controllers(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// `cpu.max` content for a limit of `millis` millicores: quota and period
/// in microseconds; at least 1 ms of quota, as the kernel requires.
pub fn cpu_max(millis: u64) -> String {
    let quota = (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
    format!("{quota} {CPU_PERIOD_US}")
}

/// The node's cgroup subtree and which limit controllers reach it.
#[derive(Debug, Clone)]
pub struct Cgroups {
    node_dir: PathBuf,
    enabled: BTreeSet<String>,
}

impl Cgroups {
    /// Makes `node_dir` (under `root`, a cgroup v2 directory) and enables as
    /// many of [`WANTED`] as possible on the way down. Fails if `root` is
    /// not cgroup v2 or the directory cannot be made.
    pub fn prepare(root: &Path, node_dir: &Path) -> Result<Self> {
        let controllers_file = root.join("cgroup.controllers");
        let available = std::fs::read_to_string(&controllers_file).map_err(|e| {
            AgentError::io(
                format!(
                    "{} is not a cgroup v2 directory (no cgroup.controllers)",
                    root.display()
                ),
                e,
            )
        })?;
        let available = parse_controllers(&available);
        std::fs::create_dir_all(node_dir)
            .map_err(|e| AgentError::io(format!("create cgroup {}", node_dir.display()), e))?;
        let mut enabled: BTreeSet<String> = WANTED
            .iter()
            .filter(|c| available.contains(**c))
            .map(|c| (*c).to_owned())
            .collect();
        // Enable on every level from root down to the node dir, so pod dirs
        // can enable them for their containers.
        let mut dir = root.to_path_buf();
        let rel = node_dir.strip_prefix(root).map_err(|_| {
            AgentError::Config(format!(
                "{} is not under {}",
                node_dir.display(),
                root.display()
            ))
        })?;
        let mut levels = vec![dir.clone()];
        for part in rel.components() {
            dir.push(part);
            levels.push(dir.clone());
        }
        for level in &levels {
            enabled = enable(level, &enabled);
        }
        let skipped: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|c| !enabled.contains(*c))
            .collect();
        if skipped.is_empty() {
            tracing::info!(cgroup = %node_dir.display(), "cgroup v2 cpu and memory controllers enabled; limits are enforced");
        } else {
            tracing::warn!(
                cgroup = %node_dir.display(),
                unavailable = ?skipped,
                available = ?available,
                "cgroup v2 controllers unavailable: these container limits will NOT be enforced"
            );
        }
        Ok(Self {
            node_dir: node_dir.to_path_buf(),
            enabled,
        })
    }

    /// Controllers enabled for pods (subset of [`WANTED`]).
    pub fn enabled(&self) -> &BTreeSet<String> {
        &self.enabled
    }

    /// The node's directory.
    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }

    /// `<node>/pod-<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.node_dir.join(names::pod_cgroup_name(uid))
    }

    /// `<node>/pod-<uid>/<container>`.
    pub fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join(names::sanitize(container))
    }

    /// Makes the pod's group and enables the controllers for its containers.
    pub fn create_pod(&self, uid: &str) -> Result<PathBuf> {
        let dir = self.pod_dir(uid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io(format!("create cgroup {}", dir.display()), e))?;
        enable(&dir, &self.enabled);
        Ok(dir)
    }

    /// Makes the container's group (reused across restarts) and writes its
    /// limits where the controller is available; returns the group.
    pub fn create_container(&self, uid: &str, container: &str, limits: Limits) -> Result<PathBuf> {
        let dir = self.container_dir(uid, container);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io(format!("create cgroup {}", dir.display()), e))?;
        let writes = [
            ("cpu", "cpu.max", limits.cpu_millis.map(cpu_max)),
            (
                "memory",
                "memory.max",
                limits.memory_bytes.map(|b| b.to_string()),
            ),
        ];
        for (controller, file, value) in writes {
            let Some(value) = value else { continue };
            let path = dir.join(file);
            if !self.enabled.contains(controller) || !path.exists() {
                tracing::debug!(cgroup = %dir.display(), controller, "limit not enforced: controller unavailable");
                continue;
            }
            std::fs::write(&path, &value)
                .map_err(|e| AgentError::io(format!("write {value:?} to {}", path.display()), e))?;
            tracing::debug!(cgroup = %dir.display(), file, value, "applied limit");
        }
        Ok(dir)
    }

    /// Kills every process left in the pod's groups and removes them.
    /// Bounded (a few seconds); missing groups are fine.
    pub fn remove_pod(&self, uid: &str) -> Result<()> {
        remove_tree(&self.pod_dir(uid))
    }
}

/// Writes `+c` for each controller to `dir/cgroup.subtree_control`, one at
/// a time so one refusal does not block the others; returns those enabled.
fn enable(dir: &Path, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let control = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&control)
        .map(|t| parse_controllers(&t))
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for c in wanted {
        if current.contains(c) {
            out.insert(c.clone());
            continue;
        }
        match std::fs::write(&control, format!("+{c}")) {
            Ok(()) => {
                out.insert(c.clone());
            }
            Err(error) => {
                tracing::warn!(cgroup = %dir.display(), controller = %c, %error, "could not enable cgroup controller");
            }
        }
    }
    out
}

/// Kills all processes in `dir` and its descendants, then removes them,
/// deepest first.
pub fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::io(format!("read cgroup {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    kill_all(dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while killed processes are still exiting.
            Err(e) if Instant::now() < deadline => {
                tracing::trace!(cgroup = %dir.display(), error = %e, "cgroup busy, retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(AgentError::io(
                    format!("remove cgroup {}", dir.display()),
                    e,
                ));
            }
        }
    }
}

/// `cgroup.kill` where the kernel has it (5.14+), else SIGKILL per pid.
pub fn kill_all(dir: &Path) {
    let procs = |dir: &Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    if procs(dir).is_empty() {
        return;
    }
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in procs(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !procs(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_uses_the_default_period_and_a_floor() {
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
        assert_eq!(cpu_max(1), "1000 100000");
    }

    #[test]
    fn controllers_parse_as_a_set() {
        let set = parse_controllers("cpuset cpu io memory hugetlb pids\n");
        assert!(set.contains("cpu") && set.contains("memory"));
        assert!(
            parse_controllers("hugetlb\n")
                .is_disjoint(&WANTED.iter().map(|s| (*s).to_owned()).collect())
        );
    }

    #[test]
    fn prepare_refuses_a_directory_that_is_not_cgroup_v2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            Cgroups::prepare(dir.path(), &dir.path().join("skiff/n")).expect_err("not a cgroup");
        assert!(err.to_string().contains("not a cgroup v2"), "{err}");
    }

    #[test]
    fn limits_are_skipped_without_controllers() {
        // A plain directory with a cgroup.controllers file offering nothing:
        // groups are made, limits are not written.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.controllers"), "hugetlb\n").expect("write");
        let node = dir.path().join("skiff").join("n1");
        let cg = Cgroups::prepare(dir.path(), &node).expect("prepare");
        assert!(cg.enabled().is_empty());
        cg.create_pod("u1").expect("pod");
        let c = cg
            .create_container(
                "u1",
                "web",
                Limits {
                    cpu_millis: Some(500),
                    memory_bytes: Some(1 << 20),
                },
            )
            .expect("container");
        assert!(c.ends_with("skiff/n1/pod-u1/web"));
        assert!(!c.join("cpu.max").exists());
        assert!(!c.join("memory.max").exists());
    }
}
