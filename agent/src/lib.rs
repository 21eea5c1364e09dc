//! Skiff node agent (the kubelet role): registers its Node, heartbeats,
//! runs the Pods bound to it and reports their status — an API client of
//! the Skiff (or any Kubernetes) API server through `kube`.
//!
//! # Containers without images
//!
//! Skiff does not pull or unpack images. A container's `command` (plus
//! `args`) names a program **on the node's filesystem**, which runs inside
//! the pod's network, UTS, IPC and mount namespaces and its cgroup. A
//! container without `command` cannot run: it stays `Waiting` with reason
//! `CreateContainerError` and a message saying so. Volume `mountPath`s must
//! exist on the node (there is no image to provide them); each container
//! gets its volumes bound in a mount namespace of its own. Supported:
//! `env` values and `fieldRef`s, `workingDir`, `emptyDir` and `hostPath`
//! volumes (with `subPath` and `readOnly`), CPU and memory limits (where
//! the cgroup v2 controllers exist), exec/TCP/HTTP probes, restart
//! policies with crash-loop back-off, graceful deletion. Not supported
//! (clear `CreateContainerConfigError`): init containers, configMap /
//! secret / projected volumes and env sources, gRPC and HTTPS probes,
//! `hostNetwork` pods. The container `image` is accepted and ignored.
//! Service environment variables are not injected; terminal pods keep
//! their sandbox (and IP) until deleted.
//!
//! # Layout
//!
//! - [`config`]: [`AgentConfig`] and machine discovery (cgroup v2 mount);
//! - [`node`]: the Node object, registration, heartbeat, pod CIDR;
//! - [`network`]: bridge, routes to other nodes' pod CIDRs, masquerade;
//! - [`sandbox`]: per-pod namespaces, veth, cgroups, container processes
//!   ([`sandbox::PodRuntime`] is the seam; [`sandbox::linux`] the real one);
//! - [`container`]: what to exec for a container (pure);
//! - [`probe`]: probe specs (pure) and TCP/HTTP probing;
//! - [`lifecycle`]: the pure per-pod state machine (restarts, back-off,
//!   probes, phase);
//! - [`status`]: Pod status from the machine (pure);
//! - [`pod_worker`]: one task per pod tying these together;
//! - [`state`]: what survives an agent restart (adoption of running pods);
//! - [`mod@logs`], [`mod@cleanup`]: `skiff logs` and `skiff agent cleanup`;
//! - [`quantity`], [`command`], [`error`]: support.

pub mod cleanup;
pub mod command;
pub mod config;
pub mod container;
pub mod error;
pub mod lifecycle;
pub mod logs;
pub mod network;
pub mod node;
pub mod pod_worker;
pub mod probe;
pub mod quantity;
pub mod sandbox;
pub mod state;
pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use skiff_ipam::PodIpAllocator;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cleanup::{CleanupReport, cleanup};
pub use config::AgentConfig;
pub use error::{AgentError, Result};
pub use logs::logs;

use crate::error::api_status;
use crate::network::NodeNetwork;
use crate::pod_worker::{PodApi, PodUpdate, Shared};
use crate::sandbox::PodRuntime;
use crate::sandbox::cgroup::Cgroups;
use crate::sandbox::linux::LinuxRuntime;
use crate::state::StateStore;

/// The node agent: `Agent::new(cfg).run(shutdown).await`.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
}

/// [`PodApi`] over a kube client.
#[derive(Clone)]
pub struct KubePodApi {
    client: Client,
}

impl KubePodApi {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl PodApi for KubePodApi {
    async fn patch_status(&self, namespace: &str, name: &str, status: &PodStatus) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(status::merge_patch(status)),
        )
        .await
        .map(drop)
        .map_err(|e| AgentError::api(format!("update status of pod {namespace}/{name}"), e))
    }

    async fn delete_now(&self, namespace: &str, name: &str, uid: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or the name now belongs to a newer pod.
            Err(e) if matches!(api_status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(AgentError::api(format!("delete pod {namespace}/{name}"), e)),
        }
    }
}

/// A kube client for `server` (plain HTTP or HTTPS without client auth).
pub fn client_for(server: &url::Url) -> Result<Client> {
    let uri = server
        .as_str()
        .parse()
        .map_err(|e| AgentError::Config(format!("server URL {server}: {e}")))?;
    Client::try_from(kube::Config::new(uri)).map_err(|e| AgentError::api("build API client", e))
}

impl Agent {
    /// An agent for `cfg`; nothing happens until [`Agent::run`].
    pub fn new(cfg: AgentConfig) -> Self {
        Self { cfg }
    }

    /// Registers the node, waits for its pod CIDR, sets up the node network
    /// and runs pods until `shutdown` resolves. On shutdown pods keep
    /// running (a restarted agent adopts them); only deletion stops them.
    ///
    /// Until the node is registered an unreachable API server is retried
    /// (with back-off, until `shutdown`). Fails on bad configuration, an API
    /// rejection of the Node, a missing cgroup v2 hierarchy, or node network
    /// setup errors. Needs root.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let cfg = self.cfg;
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| AgentError::io(format!("create {}", cfg.data_dir.display()), e))?;
        let state = Arc::new(StateStore::open(&cfg.data_dir)?);
        let client = client_for(&cfg.server)?;
        let nodes: Api<Node> = Api::all(client.clone());

        let node_ip = match cfg.node_ip {
            Some(ip) => ip,
            None => detect_node_ip(&cfg.bridge).await?,
        };
        let capacity = node::read_capacity()?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let labels = node::node_labels(&cfg.node_name, &cfg.labels);
        let status = node::node_status(&cfg.node_name, node_ip, capacity, &kernel);
        let mut shutdown = std::pin::pin!(shutdown);
        // The API server may start after us (or be restarting): retry
        // transport and server errors until it answers; a 4xx is final.
        let mut delay = Duration::from_millis(200);
        let pod_cidr = loop {
            let attempt = async {
                node::register(&nodes, &cfg.node_name, labels.clone(), status.clone()).await?;
                node::wait_for_pod_cidr(&nodes, &cfg.node_name, Duration::from_millis(500)).await
            };
            tokio::select! {
                result = attempt => match result {
                    Ok(cidr) => break cidr,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, retry_in = ?delay, "API server not reachable; retrying registration");
                    }
                    Err(e) => return Err(e),
                },
                () = &mut shutdown => return Ok(()),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return Ok(()),
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        };

        let cgroups = Cgroups::prepare(&cfg.cgroup_root, &cfg.node_cgroup())?;
        let network = NodeNetwork {
            bridge: cfg.bridge.clone(),
            pod_cidr,
            cluster_cidr: cfg.cluster_cidr,
        };
        network.ensure().await?;
        let runtime: Arc<dyn PodRuntime> =
            Arc::new(LinuxRuntime::new(&cfg.data_dir, &cfg.bridge, cgroups)?);

        let snapshot = state.snapshot();
        if snapshot.pod_cidr.is_some_and(|c| c != pod_cidr) {
            tracing::warn!(old = ?snapshot.pod_cidr, new = %pod_cidr, pods = snapshot.pods.len(), "pod CIDR changed; removing pods of the old one");
            for uid in snapshot.pods.keys() {
                if let Err(e) = runtime.remove_sandbox(uid).await {
                    tracing::error!(uid, error = %e, "could not remove old sandbox");
                }
            }
            state.update(|s| {
                s.pods.clear();
                s.ipam = None;
            })?;
        }
        let ipam = match state.snapshot().ipam {
            Some(snap) => PodIpAllocator::from_snapshot(&snap),
            None => PodIpAllocator::new(ipnetwork::IpNetwork::V4(pod_cidr)),
        }
        .map_err(|source| AgentError::Ipam {
            owner: "(restore)".into(),
            source,
        })?;
        state.update(|s| s.pod_cidr = Some(pod_cidr))?;

        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            runtime,
            api: Arc::new(KubePodApi::new(client.clone())),
            state,
            ipam: Mutex::new(ipam),
            node_ip,
            pod_cidr,
        });
        run_node(shared, client, network, shutdown).await
    }
}

/// The node's address from `ip -j addr`.
async fn detect_node_ip(bridge: &str) -> Result<Ipv4Addr> {
    let json = command::checked("ip", &["-j", "-4", "addr", "show"]).await?;
    node::pick_node_ip(&json, bridge).ok_or_else(|| {
        AgentError::Config("no global IPv4 address found for the node; set node_ip".into())
    })
}

/// Heartbeat, routes and pods until `shutdown`.
async fn run_node(
    shared: Arc<Shared>,
    client: Client,
    network: NodeNetwork,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let node_name = shared.cfg.node_name.clone();
    let heartbeat = tokio::spawn(heartbeat_loop(
        Api::all(client.clone()),
        node_name.clone(),
        shared.cfg.heartbeat_interval,
        stop_rx.clone(),
    ));
    let routes = tokio::spawn(route_loop(
        Api::all(client.clone()),
        node_name,
        network,
        stop_rx.clone(),
    ));
    let pods = tokio::spawn(pod_loop(Arc::clone(&shared), client, stop_rx));
    shutdown.await;
    tracing::info!("agent stopping; pods keep running");
    let _ = stop_tx.send(true);
    for task in [heartbeat, routes, pods] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "agent task failed");
        }
    }
    Ok(())
}

async fn heartbeat_loop(
    api: Api<Node>,
    name: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let transition = Some(status::to_k8s(chrono::Utc::now()));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match node::heartbeat(&api, &name, transition.clone()).await {
                    Ok(()) => tracing::trace!(node = %name, "heartbeat"),
                    Err(e) => tracing::warn!(node = %name, error = %e, "heartbeat failed"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn route_loop(
    api: Api<Node>,
    self_name: String,
    network: NodeNetwork,
    mut stop: watch::Receiver<bool>,
) {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, Node>> = None;
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.changed() => return,
        };
        let Some(event) = event else { return };
        let sync = match event {
            Ok(Event::Init) => {
                initial = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(n)) => {
                if let (Some(init), Some(name)) = (initial.as_mut(), n.metadata.name.clone()) {
                    init.insert(name, n);
                }
                false
            }
            Ok(Event::InitDone) => {
                nodes = initial.take().unwrap_or_default();
                true
            }
            Ok(Event::Apply(n)) => {
                if let Some(name) = n.metadata.name.clone() {
                    nodes.insert(name, n);
                }
                true
            }
            Ok(Event::Delete(n)) => {
                if let Some(name) = &n.metadata.name {
                    nodes.remove(name);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                false
            }
        };
        if sync {
            let desired = network::desired_routes(nodes.values(), &self_name, network.pod_cidr);
            if let Err(e) = network.sync_routes(&desired).await {
                tracing::warn!(error = %e, "route sync failed");
            }
        }
    }
}

struct WorkerHandle {
    tx: watch::Sender<PodUpdate>,
    task: JoinHandle<()>,
}

async fn pod_loop(shared: Arc<Shared>, client: Client, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", shared.cfg.node_name);
    let stream =
        watcher::watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut initial: Option<HashSet<String>> = None;
    let mut orphans: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.changed() => break,
        };
        let Some(event) = event else { break };
        workers.retain(|uid, w| {
            let finished = w.task.is_finished();
            if finished {
                done.insert(uid.clone());
            }
            !finished
        });
        match event {
            Ok(Event::Init) => initial = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(init), Some(uid)) = (initial.as_mut(), pod.metadata.uid.clone()) {
                    init.insert(uid);
                }
                on_apply(&shared, &mut workers, &done, &stop, pod).await;
            }
            Ok(Event::InitDone) => {
                let present = initial.take().unwrap_or_default();
                // Pods that vanished while nobody watched.
                for (uid, w) in &workers {
                    if !present.contains(uid) {
                        let _ = w.tx.send(None);
                    }
                }
                for (uid, record) in shared.state.snapshot().pods {
                    if !present.contains(&uid) && !workers.contains_key(&uid) {
                        orphans.push(tokio::spawn(pod_worker::teardown_orphan(
                            Arc::clone(&shared),
                            record,
                        )));
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_apply(&shared, &mut workers, &done, &stop, pod).await,
            Ok(Event::Delete(pod)) => {
                if let Some(w) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    let _ = w.tx.send(None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
    for w in workers.into_values() {
        drop(w.tx);
        let _ = w.task.await;
    }
    for o in orphans {
        let _ = o.await;
    }
}

async fn on_apply(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, WorkerHandle>,
    done: &HashSet<String>,
    stop: &watch::Receiver<bool>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(w) = workers.get(&uid) {
        let _ = w.tx.send(Some(Arc::new(pod)));
        return;
    }
    let known = shared.state.snapshot().pods.contains_key(&uid);
    if done.contains(&uid) || (!known && pod_worker::is_finished(&pod)) {
        // Already torn down, or finished before we knew it: nothing to run.
        if pod.metadata.deletion_timestamp.is_some() {
            let (ns, name) = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            if let Err(e) = shared.api.delete_now(&ns, &name, &uid).await {
                tracing::warn!(error = %e, "final delete of the pod failed");
            }
        }
        return;
    }
    let (tx, rx) = watch::channel(Some(Arc::new(pod)));
    let task = tokio::spawn(pod_worker::run(Arc::clone(shared), rx, stop.clone()));
    workers.insert(uid, WorkerHandle { tx, task });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_an_unreachable_api_server_until_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Port 1 on loopback: connection refused, a transport error.
        let mut cfg = AgentConfig::new(url::Url::parse("http://127.0.0.1:1").expect("url"), "n1");
        cfg.data_dir = dir.path().join("agent");
        cfg.node_ip = Some(Ipv4Addr::new(192, 0, 2, 1));
        let started = std::time::Instant::now();
        let result = Agent::new(cfg)
            .run(tokio::time::sleep(Duration::from_millis(700)))
            .await;
        assert!(
            result.is_ok(),
            "retries, then stops cleanly on shutdown: {result:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "kept retrying until shutdown"
        );
    }
}
