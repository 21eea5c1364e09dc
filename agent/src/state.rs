//! What the agent persists in its data dir so that a restarted agent adopts
//! its running pods instead of duplicating them: the pod IP allocator and,
//! per pod, the sandbox names, IP and container processes.
//!
//! The file is rewritten whole on every change, write-then-rename with
//! fsync of file and directory, so a crash leaves either the old or the new
//! state, never a torn one. Every resource is recorded *before* it is
//! created (intent first), so `cleanup` can always find what was made.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use skiff_ipam::PodIpSnapshot;

use crate::error::{AgentError, Result};

/// Current state file format.
pub const STATE_VERSION: u32 = 1;
/// File name inside the data dir.
pub const STATE_FILE: &str = "state.json";

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The node pod CIDR the IPs were allocated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Network>,
    /// Pod IP allocator snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<PodIpSnapshot>,
    /// Pods with a sandbox (or one being made), by uid.
    #[serde(default)]
    pub pods: BTreeMap<String, PodRecord>,
}

/// One pod's sandbox and processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Pod uid.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Network namespace name (`ip netns`).
    pub netns: String,
    /// Host end of the pod veth.
    pub veth: String,
    /// The pod IP, once allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Running container processes, by container name.
    #[serde(default)]
    pub containers: BTreeMap<String, ProcessRecord>,
    /// Restart counts by container name (kept across restarts of the agent).
    #[serde(default)]
    pub restart_counts: BTreeMap<String, i32>,
}

/// A container process as started: enough to find it again and to be sure
/// it is still the same process (pid plus start time from `/proc/<pid>/stat`
/// guards against pid reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    /// The container's main process (also its process group id).
    pub pid: i32,
    /// Its start time in clock ticks since boot.
    pub start_ticks: u64,
    /// The shim that waits for it and records its exit status.
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot.
    pub shim_start_ticks: u64,
    /// When the agent started it.
    pub started_at: DateTime<Utc>,
}

/// The state file and an in-memory copy, changed only through
/// [`StateStore::update`].
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    state: Mutex<AgentState>,
}

impl StateStore {
    /// Loads `<data_dir>/state.json`, or starts empty if there is none.
    /// Fails on unreadable or unparsable files and unknown versions: the
    /// agent must not forget pods it made.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: AgentState =
                    serde_json::from_slice(&bytes).map_err(|source| AgentError::State {
                        path: path.clone(),
                        source,
                    })?;
                if state.version != STATE_VERSION {
                    return Err(AgentError::Config(format!(
                        "{} has version {}, this agent reads {STATE_VERSION}",
                        path.display(),
                        state.version
                    )));
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentState {
                version: STATE_VERSION,
                ..AgentState::default()
            },
            Err(e) => return Err(AgentError::io(format!("read {}", path.display()), e)),
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> AgentState {
        self.lock().clone()
    }

    /// Applies `f` and persists the result before returning. If writing
    /// fails the in-memory state is rolled back, so memory never claims
    /// more than the disk.
    pub fn update<R>(&self, f: impl FnOnce(&mut AgentState) -> R) -> Result<R> {
        let mut guard = self.lock();
        let before = guard.clone();
        let out = f(&mut guard);
        if *guard == before {
            return Ok(out);
        }
        if let Err(e) = write_atomic(&self.path, &*guard) {
            *guard = before;
            return Err(e);
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serialises `value` to `path` via `path.tmp`, fsyncing the file before
/// the rename and the directory after it.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| AgentError::Config(format!("{} has no parent directory", path.display())))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| AgentError::io(format!("create {}", dir.display()), e))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| AgentError::State {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| AgentError::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str) -> PodRecord {
        PodRecord {
            uid: uid.into(),
            namespace: "default".into(),
            name: "web".into(),
            netns: "skiff-pod-x".into(),
            veth: "skvx".into(),
            ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            containers: BTreeMap::from([(
                "c".to_owned(),
                ProcessRecord {
                    pid: 42,
                    start_ticks: 7,
                    shim_pid: 41,
                    shim_start_ticks: 6,
                    started_at: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
                },
            )]),
            restart_counts: BTreeMap::from([("c".to_owned(), 2)]),
        }
    }

    #[test]
    fn state_survives_reopen_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open empty");
        assert!(store.snapshot().pods.is_empty());
        store
            .update(|s| s.pods.insert("u1".into(), record("u1")))
            .expect("update");
        let reopened = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.snapshot(), store.snapshot());
        assert_eq!(reopened.snapshot().pods["u1"].restart_counts["c"], 2);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn failed_write_rolls_back_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        // A directory where the temp file should go makes the write fail.
        std::fs::create_dir(dir.path().join("state.json.tmp")).expect("mkdir");
        let err = store.update(|s| s.pods.insert("u1".into(), record("u1")));
        assert!(err.is_err());
        assert!(store.snapshot().pods.is_empty(), "memory must match disk");
    }

    #[test]
    fn corrupt_or_future_state_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(AgentError::State { .. })
        ));
        std::fs::write(dir.path().join(STATE_FILE), br#"{"version":99}"#).expect("write");
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(AgentError::Config(_))
        ));
    }
}
