//! Reading and changing the cluster through the API (kube-rs, as any
//! Kubernetes client would) and the `skiff` CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::harness::{SKIFF, Up};

/// What the tests need of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodInfo {
    pub name: String,
    pub node: String,
    pub ip: Option<Ipv4Addr>,
    pub ready: bool,
    pub terminating: bool,
    pub template_hash: Option<String>,
}

impl PodInfo {
    fn of(p: &Pod) -> PodInfo {
        let status = p.status.as_ref();
        PodInfo {
            name: p.metadata.name.clone().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: p.metadata.deletion_timestamp.is_some(),
            template_hash: p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash").cloned()),
        }
    }
}

/// Pods in `default` matching `selector` (all for "").
pub fn pods(up: &Up, selector: &str) -> Vec<PodInfo> {
    let api: Api<Pod> = Api::namespaced(up.client.clone(), "default");
    let mut params = ListParams::default();
    if !selector.is_empty() {
        params = params.labels(selector);
    }
    let list = up.rt.block_on(api.list(&params)).expect("listing pods");
    let mut out: Vec<PodInfo> = list.items.iter().map(PodInfo::of).collect();
    out.sort();
    out
}

/// Waits until exactly `n` pods match `selector`, none terminating and
/// all ready, and `accept` likes them; returns them.
pub fn wait_pods(
    up: &Up,
    selector: &str,
    n: usize,
    timeout: Duration,
    accept: impl Fn(&[PodInfo]) -> bool,
) -> Vec<PodInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = pods(up, selector);
        let live: Vec<PodInfo> = all.iter().filter(|p| !p.terminating).cloned().collect();
        if live.len() == n && live.iter().all(|p| p.ready && p.ip.is_some()) && accept(&live) {
            return live;
        }
        assert!(
            Instant::now() < deadline,
            "{selector}: wanted {n} ready pods within {} s, have {all:#?}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The three example web pods, ready.
pub fn web_pods(up: &Up) -> Vec<PodInfo> {
    wait_pods(up, "app=web", 3, Duration::from_secs(90), |_| true)
}

/// Starts a long-sleeping client pod on `node` and waits until it runs.
pub fn client_pod(up: &Up, name: &str, node: &str) -> PodInfo {
    apply(
        up,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels:
    role: e2e-client
    client: {name}
spec:
  nodeSelector:
    kubernetes.io/hostname: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: skiff/none
    command: ["sleep", "100000"]
"#
        ),
    );
    let pods = wait_pods(
        up,
        &format!("client={name}"),
        1,
        Duration::from_secs(60),
        |_| true,
    );
    assert_eq!(pods[0].node, node, "client pod scheduled elsewhere");
    pods[0].clone()
}

/// `skiff apply -f -` with `yaml`; panics with its output on failure.
pub fn apply(up: &Up, yaml: &str) {
    let mut child = Command::new(SKIFF)
        .args(["apply", "--server", &up.server, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiff apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("writing the manifest");
    let out = child.wait_with_output().expect("skiff apply output");
    assert!(
        out.status.success(),
        "skiff apply failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Service's ClusterIP.
pub fn cluster_ip(up: &Up, name: &str) -> Ipv4Addr {
    let api: Api<Service> = Api::namespaced(up.client.clone(), "default");
    let svc = up.rt.block_on(api.get(name)).expect("service");
    svc.spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("service {name} has no ClusterIP"))
}

/// Node name → InternalIP.
pub fn node_ips(up: &Up) -> BTreeMap<String, Ipv4Addr> {
    let api: Api<Node> = Api::all(up.client.clone());
    let list = up
        .rt
        .block_on(api.list(&ListParams::default()))
        .expect("nodes");
    list.items
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((name, ip))
        })
        .collect()
}

/// Addresses of the ready endpoints of Service `name`.
pub fn ready_endpoints(up: &Up, name: &str) -> BTreeSet<Ipv4Addr> {
    let api: Api<EndpointSlice> = Api::namespaced(up.client.clone(), "default");
    let list = up
        .rt
        .block_on(
            api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}"))),
        )
        .expect("endpoint slices");
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Waits until the ready endpoints of `name` are exactly `want`.
pub fn wait_endpoints(up: &Up, name: &str, want: &BTreeSet<Ipv4Addr>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let have = ready_endpoints(up, name);
        if &have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints of {name}: want {want:?}, have {have:?} after {} s",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets `spec.replicas` of Deployment `name` with `skiff scale`.
pub fn scale(up: &Up, name: &str, replicas: u32) {
    let out = up.skiff(
        &["scale"],
        &[
            &format!("deployment/{name}"),
            &format!("--replicas={replicas}"),
        ],
    );
    assert!(
        out.status.success(),
        "skiff scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Changes the pod template of Deployment `name` (an annotation), which
/// starts a rollout.
pub fn touch_template(up: &Up, name: &str, value: &str) {
    let api: Api<Deployment> = Api::namespaced(up.client.clone(), "default");
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"e2e/rollout": value}}}}});
    up.rt
        .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
        .expect("patching the deployment");
}

/// Whether Deployment `name` has fully rolled out its current template.
pub fn rolled_out(up: &Up, name: &str) -> bool {
    let api: Api<Deployment> = Api::namespaced(up.client.clone(), "default");
    let d = up.rt.block_on(api.get(name)).expect("deployment");
    let want = d.spec.replicas.unwrap_or(1);
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(s) = d.status else { return false };
    s.observed_generation.unwrap_or(0) >= generation
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
}
