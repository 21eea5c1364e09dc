//! The record `skiff up` keeps in its data dir (`up.json`): its own PID and
//! those of the server and agents it started, with the node namespaces, so
//! that a second `skiff up` refuses to start and `skiff down` can clean up
//! after a crashed one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name inside the data dir.
pub const RECORD_FILE: &str = "up.json";

/// One node `skiff up` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name (also the agent's data dir name under `agents/`).
    pub name: String,
    /// The node's network namespace (`ip netns` name).
    pub netns: String,
    /// The agent's PID, once started.
    pub agent_pid: Option<u32>,
}

/// Everything a later `skiff up`/`skiff down` needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpRecord {
    /// The `skiff up` process.
    pub pid: u32,
    /// The API server child, once started.
    pub server_pid: Option<u32>,
    /// The nodes.
    pub nodes: Vec<NodeRecord>,
    /// The "outside" client namespace (`ip netns` name), once built.
    #[serde(default)]
    pub outside_netns: Option<String>,
    /// The outside client's underlay address.
    #[serde(default)]
    pub outside_ip: Option<std::net::Ipv4Addr>,
}

/// `<data_dir>/up.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORD_FILE)
}

/// Reads the record; `None` if there is none.
pub fn read(data_dir: &Path) -> Result<Option<UpRecord>> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the record atomically (temp file + rename), so a crash never
/// leaves half a record.
pub fn write(data_dir: &Path, record: &UpRecord) -> Result<()> {
    let p = path(data_dir);
    let tmp = data_dir.join(format!("{RECORD_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(record).context("encoding the up record")?;
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))
}

/// Removes the record (no record is fine).
pub fn remove(data_dir: &Path) -> Result<()> {
    match std::fs::remove_file(path(data_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path(data_dir).display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        let rec = UpRecord {
            pid: 42,
            server_pid: Some(43),
            nodes: vec![NodeRecord {
                name: "node0".into(),
                netns: "skiff-node0-42-1".into(),
                agent_pid: None,
            }],
            outside_netns: Some("skiff-outside-42-4".into()),
            outside_ip: Some(std::net::Ipv4Addr::new(192, 168, 250, 254)),
        };
        write(dir.path(), &rec).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(rec));
        remove(dir.path()).expect("remove");
        remove(dir.path()).expect("remove twice");
        assert_eq!(read(dir.path()).expect("read"), None);
    }
}
