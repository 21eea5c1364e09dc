//! The Node object: what the agent registers (addresses, capacity, labels,
//! system info), the Ready heartbeat, and waiting for the pod CIDR the
//! control plane assigns.
//!
//! Building the object and reading machine facts are pure functions over
//! text (`/proc/meminfo`) and values; the API calls are thin.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::Utc;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::error::{AgentError, Result, api_status};

/// Pods a node accepts (kubelet's default `maxPods`).
pub const MAX_PODS: u32 = 110;
/// Reported kubelet version.
pub const AGENT_VERSION: &str = concat!("skiff-", env!("CARGO_PKG_VERSION"));

/// What the machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in KiB (`MemTotal`).
    pub memory_kib: u64,
}

/// `MemTotal` in KiB from `/proc/meminfo` text.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reads CPU count (`available_parallelism`, which honours affinity and
/// cgroup quotas) and `MemTotal`.
pub fn read_capacity() -> Result<Capacity> {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .map_err(|e| AgentError::io("count CPUs", e))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| AgentError::io("read /proc/meminfo", e))?;
    let memory_kib = parse_mem_total(&meminfo)
        .ok_or_else(|| AgentError::Config("/proc/meminfo has no MemTotal".into()))?;
    Ok(Capacity { cpus, memory_kib })
}

/// The Ready condition with a fresh heartbeat.
pub fn ready_condition(transition: Option<Time>) -> NodeCondition {
    let now = crate::status::to_k8s(Utc::now());
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("skiff agent is posting ready status".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(transition.unwrap_or(now)),
    }
}

/// Labels of the Node: the well-known ones plus `extra`.
pub fn node_labels(name: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        (
            "kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        ),
        ("kubernetes.io/arch".to_owned(), arch().to_owned()),
    ]);
    labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// Kubernetes' architecture names.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The status the agent reports.
pub fn node_status(name: &str, ip: Ipv4Addr, cap: Capacity, kernel: &str) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cap.cpus.to_string())),
        (
            "memory".to_owned(),
            Quantity(format!("{}Ki", cap.memory_kib)),
        ),
        ("pods".to_owned(), Quantity(MAX_PODS.to_string())),
    ]);
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_owned(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![ready_condition(None)]),
        node_info: Some(NodeSystemInfo {
            architecture: arch().into(),
            container_runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: kernel.to_owned(),
            kubelet_version: AGENT_VERSION.into(),
            kube_proxy_version: AGENT_VERSION.into(),
            operating_system: std::env::consts::OS.into(),
            os_image: "Skiff node (image-less containers)".into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// The Node object to create.
pub fn node_object(name: &str, labels: BTreeMap<String, String>, status: NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(status),
    }
}

/// The node's pod CIDR, if assigned (`spec.podCIDRs[0]` or `spec.podCIDR`).
pub fn pod_cidr(node: &Node) -> Option<Ipv4Network> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .as_ref()
        .and_then(|c| c.first())
        .or(spec.pod_cidr.as_ref())
        .and_then(|c| c.parse().ok())
}

/// Creates the Node or, if it exists, updates its labels and status.
pub async fn register(
    api: &Api<Node>,
    name: &str,
    labels: BTreeMap<String, String>,
    status: NodeStatus,
) -> Result<Node> {
    let node = node_object(name, labels.clone(), status.clone());
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = name, "registered node"),
        Err(e) if api_status(&e) == Some(409) => {
            let patch = json!({"metadata": {"labels": labels}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| AgentError::api(format!("update labels of node {name}"), e))?;
            tracing::info!(node = name, "node already registered; updated");
        }
        Err(e) => return Err(AgentError::api(format!("create node {name}"), e)),
    }
    // Create may drop status (as Kubernetes does for most kinds): set it.
    let patch = json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| AgentError::api(format!("set status of node {name}"), e))
}

/// Refreshes the Ready condition's heartbeat (merge patch of the
/// conditions list, which the agent owns).
pub async fn heartbeat(api: &Api<Node>, name: &str, transition: Option<Time>) -> Result<()> {
    let patch = json!({"status": {"conditions": [ready_condition(transition)]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| AgentError::api(format!("heartbeat of node {name}"), e))
}

/// Polls the Node until the control plane has given it a pod CIDR.
pub async fn wait_for_pod_cidr(api: &Api<Node>, name: &str, poll: Duration) -> Result<Ipv4Network> {
    let mut logged = false;
    loop {
        let node = api
            .get(name)
            .await
            .map_err(|e| AgentError::api(format!("get node {name}"), e))?;
        if let Some(cidr) = pod_cidr(&node) {
            tracing::info!(node = name, %cidr, "pod CIDR assigned");
            return Ok(cidr);
        }
        if !logged {
            tracing::info!(
                node = name,
                "waiting for the control plane to assign a pod CIDR"
            );
            logged = true;
        }
        tokio::time::sleep(poll).await;
    }
}

/// The node's address when not configured: the first global IPv4 address
/// in `ip -j addr` output on an interface that is not `bridge` or a pod veth.
pub fn pick_node_ip(ip_addr_json: &str, bridge: &str) -> Option<Ipv4Addr> {
    #[derive(serde::Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Addr {
        family: String,
        local: String,
        #[serde(default)]
        scope: String,
    }
    let links: Vec<Link> = serde_json::from_str(ip_addr_json).ok()?;
    links
        .iter()
        .filter(|l| {
            l.ifname != bridge && !l.ifname.starts_with(crate::sandbox::names::POD_VETH_PREFIX)
        })
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet" && a.scope == "global")
        .find_map(|a| a.local.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       24683656 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_683_656));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn status_has_addresses_capacity_and_ready() {
        let s = node_status(
            "n1",
            Ipv4Addr::new(192, 168, 250, 2),
            Capacity {
                cpus: 2,
                memory_kib: 1024,
            },
            "6.1",
        );
        let addrs = s.addresses.as_ref().expect("addresses");
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "192.168.250.2")
        );
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "1024Ki");
        assert_eq!(cap["pods"].0, "110");
        let ready = &s.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert!(ready.last_heartbeat_time.is_some());
        let labels = node_labels("n1", &BTreeMap::from([("zone".to_owned(), "a".to_owned())]));
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["zone"], "a");
    }

    #[test]
    fn pod_cidr_prefers_the_list() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.2.0/24"]}})).expect("node");
        assert_eq!(pod_cidr(&node), Some("10.244.2.0/24".parse().expect("net")));
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {}})).expect("node");
        assert_eq!(pod_cidr(&node), None);
    }

    #[test]
    fn picks_a_global_address_off_our_interfaces() {
        let json = r#"[
          {"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","scope":"host"}]},
          {"ifname":"skiff0","addr_info":[{"family":"inet","local":"10.244.0.1","scope":"global"}]},
          {"ifname":"eth0","addr_info":[{"family":"inet6","local":"fe80::1","scope":"link"},{"family":"inet","local":"192.168.250.1","scope":"global"}]}
        ]"#;
        assert_eq!(
            pick_node_ip(json, "skiff0"),
            Some(Ipv4Addr::new(192, 168, 250, 1))
        );
        assert_eq!(pick_node_ip("[]", "skiff0"), None);
    }
}
