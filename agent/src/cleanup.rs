//! `skiff agent cleanup`: removes everything an agent made on this node —
//! its containers' processes, pod network namespaces, veths, namespace
//! files, cgroups, the bridge, its routes and iptables chains, and its
//! data dir (state, logs, volumes).
//!
//! It works from the state file *and* from what is on disk (pod
//! directories, namespace-file directories), so it also finds pods whose
//! setup was interrupted. Network objects are removed in the network
//! namespace the caller runs in (the node's). It is forceful: processes
//! get SIGKILL, not a grace period. Run it with the agent stopped.

use std::collections::BTreeSet;
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::command;
use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::network;
use crate::sandbox::{cgroup, linux, mounts, names, procfs};
use crate::state::StateStore;

/// What cleanup did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Pod uids whose sandboxes were removed.
    pub pods: Vec<String>,
    /// Processes killed (by recorded pid).
    pub killed: Vec<i32>,
    /// Steps that failed (cleanup carries on past them).
    pub errors: Vec<String>,
}

/// Tears down everything the agent configured by `cfg` made. Returns what
/// it did; fails only if the state file is unreadable.
pub fn cleanup(cfg: &AgentConfig) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let note = |r: Result<()>, report: &mut CleanupReport| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "cleanup step failed");
            report.errors.push(e.to_string());
        }
    };
    let data_dir = &cfg.data_dir;
    let state = if data_dir.join(crate::state::STATE_FILE).exists() {
        StateStore::open(data_dir)?.snapshot()
    } else {
        Default::default()
    };

    // Processes first, by recorded pid (verified by start time).
    for rec in state.pods.values().flat_map(|p| p.containers.values()) {
        if procfs::is_same_process(rec.pid, rec.start_ticks) {
            let _ = killpg(Pid::from_raw(rec.pid), Signal::SIGKILL);
            report.killed.push(rec.pid);
        }
    }
    // Then everything in the node's cgroups (also children that left the
    // process group).
    note(cgroup::remove_tree(&cfg.node_cgroup()), &mut report);
    let skiff_cg = cfg.cgroup_root.join("skiff");
    // Shared by every agent on the machine: removed once no node uses it
    // (a cgroup directory always holds its control files, so look for
    // child groups).
    let has_children = std::fs::read_dir(&skiff_cg)
        .map(|d| d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())))
        .unwrap_or(true);
    if !has_children {
        let _ = std::fs::remove_dir(&skiff_cg);
    }

    let mut uids: BTreeSet<String> = state.pods.keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("pods")) {
        uids.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    for uid in &uids {
        note(
            linux::remove_sandbox_blocking_parts(data_dir, uid),
            &mut report,
        );
        let veth = names::veth_name(uid);
        if command::checked_blocking("ip", &["link", "show", "dev", &veth]).is_ok() {
            note(
                command::checked_blocking("ip", &["link", "del", "dev", &veth]).map(drop),
                &mut report,
            );
        }
        let netns = names::netns_name(uid);
        if Path::new(linux::NETNS_RUN_DIR).join(&netns).exists() {
            note(
                command::checked_blocking("ip", &["netns", "delete", &netns]).map(drop),
                &mut report,
            );
        }
        note(linux::remove_pod_dir(&cfg.pod_dir(uid)), &mut report);
        report.pods.push(uid.clone());
    }
    // Namespace-file dirs without a pod dir (setup interrupted early).
    let ns_root = linux::ns_root(data_dir);
    if let Ok(entries) = std::fs::read_dir(&ns_root) {
        for dir in entries.flatten().map(|e| e.path()) {
            for kind in ["uts", "ipc", "mnt"] {
                note(mounts::detach(&dir.join(kind)), &mut report);
            }
            note(
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| AgentError::io(format!("remove {}", dir.display()), e)),
                &mut report,
            );
        }
    }
    note(mounts::detach(&ns_root), &mut report);

    // Node network.
    if command::checked_blocking("ip", &["link", "show", "dev", &cfg.bridge]).is_ok() {
        note(
            command::checked_blocking("ip", &["link", "del", "dev", &cfg.bridge]).map(drop),
            &mut report,
        );
    }
    note(network::remove_routes_blocking(), &mut report);
    for e in network::remove_iptables_blocking() {
        report.errors.push(e.to_string());
    }

    // Finally the data dir, unless something is still mounted in it.
    if data_dir.exists() {
        match mounts::mounts_under(data_dir) {
            Ok(m) if m.is_empty() => note(
                std::fs::remove_dir_all(data_dir)
                    .map_err(|e| AgentError::io(format!("remove {}", data_dir.display()), e)),
                &mut report,
            ),
            Ok(m) => report.errors.push(format!(
                "kept {}: still mounted below it: {m:?}",
                data_dir.display()
            )),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    tracing::info!(
        pods = report.pods.len(),
        killed = report.killed.len(),
        errors = report.errors.len(),
        "agent cleanup done"
    );
    Ok(report)
}
