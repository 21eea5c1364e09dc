//! [`AgentConfig`]: everything the agent needs to know about its node, plus
//! discovery of defaults from the machine (cgroup v2 mount, node address).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use url::Url;

use crate::error::{AgentError, Result};

/// Default node bridge name.
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// Default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default cluster CIDR (the supernet of all node pod CIDRs).
pub const DEFAULT_CLUSTER_CIDR: Ipv4Network =
    match Ipv4Network::new_checked(Ipv4Addr::new(10, 244, 0, 0), 16) {
        Some(net) => net,
        None => panic!("invalid default cluster CIDR"),
    };
/// Where agent state lives unless configured: one directory per node name.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/skiff/agent";

/// Plain-data configuration of one node agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// API server URL (`http://host:port`).
    pub server: Url,
    /// This node's name (the Node object's name).
    pub node_name: String,
    /// The node's InternalIP; `None` = the first global IPv4 address of an
    /// interface that is not the agent's bridge or a pod veth.
    pub node_ip: Option<Ipv4Addr>,
    /// Extra labels for the Node object (besides `kubernetes.io/hostname`,
    /// `kubernetes.io/os`, `kubernetes.io/arch`).
    pub labels: BTreeMap<String, String>,
    /// State, pod logs, volumes and namespace files; one per node.
    pub data_dir: PathBuf,
    /// The cgroup v2 directory under which `skiff/<node>/pod-<uid>/<container>` is made.
    pub cgroup_root: PathBuf,
    /// Node bridge name (max 15 bytes).
    pub bridge: String,
    /// Nameserver written into pods' resolv.conf; `None` = the node IP
    /// (the agent hosts node-local DNS).
    pub dns_ip: Option<Ipv4Addr>,
    /// Cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Supernet of all pod CIDRs; traffic from it to elsewhere is masqueraded.
    pub cluster_cidr: Ipv4Network,
    /// How often the Node's Ready condition heartbeat is refreshed.
    pub heartbeat_interval: Duration,
    /// First crash-loop back-off delay (kubelet: 10 s); doubles per restart.
    pub backoff_base: Duration,
    /// Back-off ceiling (kubelet: 5 min).
    pub backoff_max: Duration,
    /// How often each pod worker checks its processes and due probes.
    pub sync_period: Duration,
}

impl AgentConfig {
    /// A configuration with kubelet-like defaults for `node_name` talking to
    /// `server`: data in `/var/lib/skiff/agent/<node>`, cgroups under the
    /// cgroup v2 mount found in `/proc/mounts` (or `/sys/fs/cgroup` if none
    /// is found; [`crate::Agent::run`] then fails with a clear message).
    pub fn new(server: Url, node_name: impl Into<String>) -> Self {
        let node_name = node_name.into();
        Self {
            server,
            data_dir: Path::new(DEFAULT_DATA_ROOT).join(&node_name),
            node_name,
            node_ip: None,
            labels: BTreeMap::new(),
            cgroup_root: detect_cgroup2_root().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            bridge: DEFAULT_BRIDGE.to_owned(),
            dns_ip: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            heartbeat_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            sync_period: Duration::from_secs(1),
        }
    }

    /// Checks what can be checked without touching the machine.
    pub fn validate(&self) -> Result<()> {
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return Err(AgentError::Config(format!(
                "node name {:?} must be 1..=253 bytes",
                self.node_name
            )));
        }
        if !self
            .node_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(AgentError::Config(format!(
                "node name {:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')",
                self.node_name
            )));
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 || self.bridge.contains(['/', ' ', ':'])
        {
            return Err(AgentError::Config(format!(
                "bridge name {:?} is not a valid interface name",
                self.bridge
            )));
        }
        if !matches!(self.server.scheme(), "http" | "https") {
            return Err(AgentError::Config(format!(
                "server URL {} must be http:// or https://",
                self.server
            )));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(AgentError::Config(
                "back-off base must be non-zero and not above the ceiling".to_owned(),
            ));
        }
        Ok(())
    }

    /// `<data_dir>/pods/<uid>`: a pod's logs, volumes and resolv.conf.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }

    /// The log file of container `container` of pod `uid`.
    pub fn log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join(format!("{container}.log"))
    }

    /// `<cgroup_root>/skiff/<node>`: parent of every pod cgroup of this node.
    pub fn node_cgroup(&self) -> PathBuf {
        self.cgroup_root.join("skiff").join(&self.node_name)
    }
}

/// The mount point of the cgroup v2 hierarchy in `/proc/mounts` text:
/// `/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` in
/// systemd's hybrid mode. `None` if there is none.
pub fn cgroup2_mount(proc_mounts: &str) -> Option<PathBuf> {
    proc_mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `/proc/mounts` and returns the cgroup v2 mount, if any.
pub fn detect_cgroup2_root() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()
        .as_deref()
        .and_then(cgroup2_mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_cgroup2_mounts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        assert_eq!(
            cgroup2_mount("none /mnt/my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn validation_rejects_bad_names_and_backoff() {
        let url = Url::parse("http://127.0.0.1:6443").expect("url");
        let mut cfg = AgentConfig::new(url, "node-1");
        cfg.validate().expect("defaults are valid");
        assert_eq!(cfg.data_dir, Path::new("/var/lib/skiff/agent/node-1"));
        cfg.node_name = "Node_1".into();
        assert!(cfg.validate().is_err());
        cfg.node_name = "n".into();
        cfg.bridge = "a-very-long-bridge-name".into();
        assert!(cfg.validate().is_err());
        cfg.bridge = DEFAULT_BRIDGE.into();
        cfg.backoff_base = Duration::ZERO;
        assert!(cfg.validate().is_err());
    }
}
