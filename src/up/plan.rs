//! Pure decisions of `skiff up`: the command lines it runs, how it rewrites
//! the example manifests, how it summarises readiness, and the "what to
//! try" text. Everything here is unit-tested without root.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::Value;

/// Address `skiff up` adds to the underlay bridge for the API forwarder:
/// the agents in the node namespaces reach the API server (on loopback in
/// the root namespace) through it.
pub const FORWARDER_HOST: u8 = 253;

/// What differs between the agents of one `skiff up`.
#[derive(Debug, Clone)]
pub struct AgentSpec<'a> {
    /// API server URL as seen from the node namespaces.
    pub server_url: &'a str,
    /// Node name.
    pub node_name: &'a str,
    /// Node address on the underlay.
    pub node_ip: Ipv4Addr,
    /// Agent state dir.
    pub data_dir: &'a Path,
    /// `--dataplane` value.
    pub dataplane: &'a str,
    /// Upstream resolvers for names outside the cluster domain, as seen
    /// from inside a node namespace; empty: no forwarding.
    pub dns_upstreams: &'a [SocketAddr],
    /// Seconds between node heartbeats.
    pub heartbeat_seconds: u64,
}

/// Arguments of one node agent (after the program name).
pub fn agent_args(spec: &AgentSpec<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--server".into(),
        spec.server_url.into(),
        "--node-name".into(),
        spec.node_name.into(),
        "--node-ip".into(),
        spec.node_ip.to_string(),
        "--data-dir".into(),
        spec.data_dir.display().to_string(),
        "--dataplane".into(),
        spec.dataplane.into(),
        "--heartbeat-seconds".into(),
        spec.heartbeat_seconds.to_string(),
    ];
    if spec.dns_upstreams.is_empty() {
        // Node namespaces have no route out, so no upstream resolver is
        // reachable: answer only the cluster domain.
        args.push("--no-forward".into());
    } else {
        args.push("--upstream".into());
        args.push(
            spec.dns_upstreams
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    // Quick restarts keep `skiff up` snappy when a pod crashes once.
    args.extend(["--backoff-seconds".into(), "1".into()]);
    args
}

/// Arguments of `skiff agent cleanup` for one node (after the program name).
pub fn cleanup_args(node_name: &str, data_dir: &Path) -> Vec<String> {
    vec![
        "agent".into(),
        "--node-name".into(),
        node_name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "cleanup".into(),
    ]
}

/// Arguments of the API server (after the program name): where it
/// listens, its store, the address pods reach it at (the forwarder: the
/// `kubernetes` Service's endpoint), and the node lifecycle timings (grace
/// before a silent node turns Unknown, then how long its pods stay).
pub fn server_args(
    listen: SocketAddr,
    data_dir: &Path,
    advertise: Ipv4Addr,
    grace_seconds: u64,
    eviction_seconds: u64,
) -> Vec<String> {
    vec![
        "server".into(),
        "--listen".into(),
        listen.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--advertise-address".into(),
        advertise.to_string(),
        "--node-monitor-grace-seconds".into(),
        grace_seconds.to_string(),
        "--pod-eviction-seconds".into(),
        eviction_seconds.to_string(),
    ]
}

/// `PATH` for the agents: the directory of the running `skiff` first, so
/// that anything the agent runs by name (`skiff`) is this very binary.
pub fn path_with(exe_dir: &Path, current: Option<&str>) -> String {
    match current {
        Some(p) if !p.is_empty() => format!("{}:{p}", exe_dir.display()),
        _ => format!(
            "{}:{}",
            exe_dir.display(),
            skiff_agent::container::DEFAULT_PATH
        ),
    }
}

/// Replaces `command[0] == "skiff"` with `exe` in every container and init
/// container of a Pod, or of the pod template of a workload. Returns how
/// many commands it changed.
///
/// Needed because the agent starts containers with a fixed image-like
/// `PATH` (`/usr/local/bin:...`), not its own, and a development `skiff`
/// usually lives in `target/debug`.
pub fn rewrite_skiff_commands(object: &mut Value, exe: &str) -> usize {
    let spec = if object.get("kind").and_then(Value::as_str) == Some("Pod") {
        object.get_mut("spec")
    } else {
        object.pointer_mut("/spec/template/spec")
    };
    let Some(spec) = spec else { return 0 };
    let mut changed = 0;
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            if let Some(first) = c.pointer_mut("/command/0")
                && first.as_str() == Some("skiff")
            {
                *first = Value::String(exe.to_owned());
                changed += 1;
            }
        }
    }
    changed
}

/// Whether a Node reports condition `Ready=True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Pod is `Running` with condition `Ready=True` (and not being
/// deleted).
pub fn pod_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Readiness of a set of pods: how many are ready, and the rest by phase
/// (for the progress line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// Pods Running and Ready.
    pub ready: usize,
    /// Pods not being deleted.
    pub total: usize,
    /// `name=phase` of pods that are not ready, sorted.
    pub waiting: Vec<String>,
}

/// Summarises `pods` (pure).
pub fn summarise_pods(pods: &[Pod]) -> PodSummary {
    let mut summary = PodSummary {
        ready: 0,
        total: 0,
        waiting: Vec::new(),
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        summary.total += 1;
        if pod_ready(pod) {
            summary.ready += 1;
        } else {
            let name = pod.metadata.name.as_deref().unwrap_or("?");
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("Pending");
            summary.waiting.push(format!("{name}={phase}"));
        }
    }
    summary.waiting.sort();
    summary
}

/// Whether `/proc/<pid>/cmdline` content names a `skiff` program: its
/// first argument's file name is `skiff` (so a recycled PID running
/// something else is never signalled).
pub fn cmdline_is_skiff(cmdline: &[u8]) -> bool {
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    Path::new(first.as_ref())
        .file_name()
        .is_some_and(|n| n == "skiff")
}

/// What the "try it" text needs.
#[derive(Debug, Clone)]
pub struct Hints<'a> {
    /// `skiff` as the user should type it (the current executable).
    pub skiff: &'a str,
    /// API server URL.
    pub server_url: &'a str,
    /// Whether that URL is the CLI default (then `--server` is left out).
    pub default_server: bool,
    /// Root of the agents' data dirs.
    pub agent_data_root: &'a Path,
    /// The outside client's namespace.
    pub outside_netns: &'a str,
    /// The first node's namespace and address.
    pub node_netns: &'a str,
    /// The first node's underlay address.
    pub node_ip: Ipv4Addr,
    /// A web pod's name, if examples were applied.
    pub pod: Option<&'a str>,
    /// Whether `curl` is installed.
    pub have_curl: bool,
    /// Whether `dig` is installed.
    pub have_dig: bool,
}

/// The "what to try" text, every line a command that works as printed.
pub fn hints(h: &Hints<'_>) -> String {
    let server = if h.default_server {
        String::new()
    } else {
        format!(" --server {}", h.server_url)
    };
    let root = h.agent_data_root.display();
    let mut out = String::new();
    out.push_str("Try:\n");
    out.push_str(&format!("  {} get nodes{server}\n", h.skiff));
    out.push_str(&format!("  {} get pods -o wide{server}\n", h.skiff));
    out.push_str(&format!("  {} get svc{server}\n", h.skiff));
    if let Some(pod) = h.pod {
        if h.have_curl {
            out.push_str(&format!(
                "  ip netns exec {} curl -s http://{}:30080/     # NodePort from outside the cluster\n",
                h.outside_netns, h.node_ip
            ));
        }
        out.push_str(&format!(
            "  {} exec {pod}{server} -- getent hosts web.default.svc.cluster.local\n",
            h.skiff
        ));
        if h.have_curl {
            out.push_str(&format!(
                "  {} exec {pod}{server} -- curl -s http://web/     # ClusterIP by name, from a pod\n",
                h.skiff
            ));
        }
        if h.have_dig {
            out.push_str(&format!(
                "  ip netns exec {} dig +short @{} web-headless.default.svc.cluster.local     # node-local DNS\n",
                h.node_netns, h.node_ip
            ));
        }
        out.push_str(&format!(
            "  {} logs {pod}{server} --agent-data-root {root}\n",
            h.skiff
        ));
    }
    out.push_str("Press Ctrl-C to tear the cluster down.\n");
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, PodCondition, PodStatus};
    use serde_json::json;

    use super::*;

    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn agent_args_name_the_node_and_disable_forwarding() {
        let mut spec = AgentSpec {
            server_url: "http://192.168.250.253:6443",
            node_name: "node1",
            node_ip: Ipv4Addr::new(192, 168, 250, 2),
            data_dir: Path::new("/d/agents/node1"),
            dataplane: "iptables",
            dns_upstreams: &[],
            heartbeat_seconds: 10,
        };
        let joined = agent_args(&spec).join(" ");
        assert!(joined.starts_with("agent --server http://192.168.250.253:6443 "));
        assert!(joined.contains("--node-name node1 --node-ip 192.168.250.2"));
        assert!(joined.contains("--data-dir /d/agents/node1 --dataplane iptables"));
        assert!(joined.ends_with("--heartbeat-seconds 10 --no-forward --backoff-seconds 1"));
        let upstreams: [SocketAddr; 2] = [
            "127.0.0.1:5300".parse().expect("addr"),
            "127.0.0.2:53".parse().expect("addr"),
        ];
        spec.dns_upstreams = &upstreams;
        let joined = agent_args(&spec).join(" ");
        assert!(joined.contains("--upstream 127.0.0.1:5300,127.0.0.2:53 "));
        assert!(!joined.contains("--no-forward"));
        assert_eq!(
            cleanup_args("node1", Path::new("/d/agents/node1")).join(" "),
            "agent --node-name node1 --data-dir /d/agents/node1 cleanup"
        );
        assert_eq!(
            server_args(
                "127.0.0.1:7000".parse().expect("addr"),
                Path::new("/d/server"),
                Ipv4Addr::new(192, 168, 250, 253),
                4,
                6
            )
            .join(" "),
            "server --listen 127.0.0.1:7000 --data-dir /d/server --advertise-address 192.168.250.253 \
             --node-monitor-grace-seconds 4 --pod-eviction-seconds 6"
        );
    }

    #[test]
    fn path_puts_the_exe_dir_first() {
        assert_eq!(
            path_with(Path::new("/x/bin"), Some("/usr/bin")),
            "/x/bin:/usr/bin"
        );
        assert!(path_with(Path::new("/x/bin"), None).starts_with("/x/bin:/usr/local/sbin"));
    }

    #[test]
    fn rewrites_only_skiff_commands_in_pod_templates() {
        let mut deploy = json!({
            "kind": "Deployment",
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "i", "command": ["skiff", "echo-server"]}],
                "containers": [
                    {"name": "a", "command": ["skiff", "echo-server", "--listen", "0.0.0.0:8080"]},
                    {"name": "b", "command": ["/bin/sleep", "skiff"]},
                    {"name": "c"}
                ]
            }}}
        });
        assert_eq!(rewrite_skiff_commands(&mut deploy, "/t/skiff"), 2);
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["command"],
            json!(["/t/skiff", "echo-server", "--listen", "0.0.0.0:8080"])
        );
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][1]["command"],
            json!(["/bin/sleep", "skiff"])
        );
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"command": ["skiff"]}]}});
        assert_eq!(rewrite_skiff_commands(&mut pod, "/t/skiff"), 1);
        assert_eq!(pod["spec"]["containers"][0]["command"][0], "/t/skiff");
        let mut svc = json!({"kind": "Service", "spec": {"ports": []}});
        assert_eq!(rewrite_skiff_commands(&mut svc, "/t/skiff"), 0);
    }

    #[test]
    fn the_example_deployment_runs_skiff() {
        // The embedded examples must keep needing the rewrite, or `skiff up`
        // would silently apply something else.
        let docs = skiff_control::cli::manifest::parse("web.yaml", super::super::EXAMPLE_WEB)
            .expect("examples parse");
        let changed: usize = docs
            .into_iter()
            .map(|mut d| rewrite_skiff_commands(&mut d.object, "/t/skiff"))
            .sum();
        assert_eq!(changed, 1);
    }

    #[test]
    fn summary_counts_ready_running_pods() {
        let mut deleting = pod("web-d", "Running", true);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [
            pod("web-a", "Running", true),
            pod("web-c", "Pending", false),
            pod("web-b", "Running", false),
            deleting,
        ];
        let s = summarise_pods(&pods);
        assert_eq!(s.ready, 1);
        assert_eq!(s.total, 3);
        assert_eq!(s.waiting, ["web-b=Running", "web-c=Pending"]);
        assert!(!pod_ready(&Pod::default()));
    }

    #[test]
    fn node_ready_needs_the_ready_condition_true() {
        let mut n = Node::default();
        assert!(!node_ready(&n));
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(node_ready(&n));
    }

    #[test]
    fn only_skiff_cmdlines_are_ours() {
        assert!(cmdline_is_skiff(
            b"/work/main/target/debug/skiff\0agent\0--node-name\0n0\0"
        ));
        assert!(cmdline_is_skiff(b"skiff\0server\0"));
        assert!(!cmdline_is_skiff(b"/usr/bin/sleep\0skiff\0"));
        assert!(!cmdline_is_skiff(b"/usr/bin/skiffy\0"));
        assert!(!cmdline_is_skiff(b""));
    }

    #[test]
    fn hints_are_complete_commands() {
        let h = Hints {
            skiff: "/t/skiff",
            server_url: "http://127.0.0.1:7000",
            default_server: false,
            agent_data_root: Path::new("/d/agents"),
            outside_netns: "skiff-outside-1-5",
            node_netns: "skiff-node0-1-1",
            node_ip: Ipv4Addr::new(192, 168, 250, 1),
            pod: Some("web-abc"),
            have_curl: true,
            have_dig: true,
        };
        let text = hints(&h);
        assert!(text.contains("/t/skiff get pods -o wide --server http://127.0.0.1:7000\n"));
        assert!(
            text.contains("ip netns exec skiff-outside-1-5 curl -s http://192.168.250.1:30080/")
        );
        assert!(text.contains(
            "/t/skiff exec web-abc --server http://127.0.0.1:7000 -- getent hosts web.default.svc.cluster.local"
        ));
        assert!(text.contains("dig +short @192.168.250.1 web-headless.default.svc.cluster.local"));
        assert!(
            text.contains(
                "logs web-abc --server http://127.0.0.1:7000 --agent-data-root /d/agents\n"
            )
        );
        let no_tools = hints(&Hints {
            default_server: true,
            have_curl: false,
            have_dig: false,
            pod: None,
            ..h
        });
        assert!(no_tools.contains("/t/skiff get svc\n"));
        assert!(!no_tools.contains("curl"));
        assert!(!no_tools.contains("exec"));
    }
}
