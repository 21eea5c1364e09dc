//! A small cluster in one process for the controller and scheduler tests:
//! the real API server on loopback, every controller and the scheduler via
//! `run_all`, simulated nodes whose Ready condition is heartbeated by test
//! tasks, and a "fake kubelet" that marks pods bound to a live node
//! Running + Ready with a pod IP (the real agent is tested elsewhere).

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use skiff_control::api::{RunningServer, ServerConfig};
use skiff_control::controllers::{self, ControllersConfig, NodeLifecycleConfig};
use skiff_control::store::MemStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any one expected change.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Heartbeat period of the simulated nodes.
pub const HEARTBEAT: Duration = Duration::from_millis(300);
/// Node lifecycle timing used by these tests (short, but well above the
/// heartbeat period).
pub const GRACE: Duration = Duration::from_secs(2);
/// Eviction timeout used by these tests.
pub const EVICTION: Duration = Duration::from_secs(3);

/// Label asking the fake kubelet to finish a running pod with this exit code.
pub const EXIT_CODE_LABEL: &str = "test.skiff.io/exit-code";

/// Nodes whose simulated agent is alive (heartbeats, fake kubelet).
pub type Alive = Arc<Mutex<BTreeSet<String>>>;

/// The running cluster.
pub struct Cluster {
    pub server: Option<RunningServer>,
    pub client: Client,
    pub alive: Alive,
    stop: Vec<oneshot::Sender<()>>,
    controllers: Option<JoinHandle<Result<(), controllers::Error>>>,
    helpers: Vec<JoinHandle<()>>,
}

fn signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

impl Cluster {
    /// Starts the API server and all controllers (short node lifecycle
    /// timings), with no nodes yet.
    pub async fn start() -> Cluster {
        let mut cluster = Cluster::without_controllers().await;
        cluster.start_controllers();
        cluster
    }

    /// Starts the API server and the fake kubelet only.
    pub async fn without_controllers() -> Cluster {
        let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), "/nonexistent-unused");
        let server = config
            .build_with_store(Arc::new(MemStore::new()))
            .await
            .expect("build API server")
            .spawn();
        let client = Client::try_from(kube::Config::new(server.url().parse().expect("url")))
            .expect("kube client");
        let alive: Alive = Arc::new(Mutex::new(BTreeSet::new()));
        let (ktx, krx) = signal();
        let kubelet = tokio::spawn(fake_kubelet(client.clone(), alive.clone(), krx));
        Cluster {
            server: Some(server),
            client,
            alive,
            stop: vec![ktx],
            controllers: None,
            helpers: vec![kubelet],
        }
    }

    /// Starts every controller and the scheduler via `run_all`.
    pub fn start_controllers(&mut self) {
        let mut cfg = ControllersConfig {
            node_lifecycle: Some(NodeLifecycleConfig {
                grace: GRACE,
                eviction_timeout: EVICTION,
            }),
            ..ControllersConfig::default()
        };
        if let Some(gc) = cfg.gc.as_mut() {
            gc.resync = Duration::from_secs(2);
        }
        let (tx, rx) = signal();
        self.stop.push(tx);
        self.controllers = Some(tokio::spawn(controllers::run_all(
            self.client.clone(),
            cfg,
            rx,
        )));
    }

    /// Starts the cluster with `n` nodes `node-1`..`node-n` (4 cpu, 8Gi),
    /// and waits until the scheduler has seen all of them.
    pub async fn with_nodes(n: usize) -> Cluster {
        let mut cluster = Cluster::start().await;
        for i in 1..=n {
            cluster.add_node(&format!("node-{i}"), "4", "8Gi").await;
        }
        for i in 1..=n {
            cluster.probe_node(&format!("node-{i}")).await;
        }
        cluster
    }

    /// Proves the scheduler knows `node` (its caches fill asynchronously):
    /// a pod pinned there by `nodeSelector` gets bound; then it is deleted.
    pub async fn probe_node(&self, node: &str) {
        let api = Api::<Pod>::namespaced(self.client.clone(), "default");
        let name = format!("probe-{node}");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "probe"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "main", "image": "probe", "resources": {"requests": {"cpu": "0", "memory": "0"}}}]
            }
        }))
        .expect("probe manifest");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create probe");
        self.eventually(&format!("scheduler sees {node}"), || async {
            let p = api.get(&name).await.map_err(|e| e.to_string())?;
            if node_of(&p).as_deref() == Some(node) {
                Ok(())
            } else {
                Err(format!("{:?}", p.status))
            }
        })
        .await;
        api.delete(&name, &kube::api::DeleteParams::default())
            .await
            .expect("delete probe");
    }

    /// Registers a Ready node and starts heartbeating it.
    pub async fn add_node(&mut self, name: &str, cpu: &str, memory: &str) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [ready_condition()],
            }
        }))
        .expect("node manifest");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        self.alive.lock().expect("alive").insert(name.to_owned());
        let (tx, rx) = signal();
        self.stop.push(tx);
        self.helpers.push(tokio::spawn(heartbeat(
            self.client.clone(),
            name.to_owned(),
            self.alive.clone(),
            rx,
        )));
    }

    /// Simulates a node failure: heartbeats and its kubelet stop.
    pub fn kill_node(&self, name: &str) {
        self.alive.lock().expect("alive").remove(name);
    }

    /// Stops controllers, helpers and the server; fails if a controller
    /// stopped with an error.
    pub async fn stop(mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
        if let Some(c) = self.controllers.take() {
            let result = tokio::time::timeout(DEADLINE, c)
                .await
                .expect("controllers stop")
                .expect("controllers task");
            result.expect("controllers ran cleanly");
        }
        for h in self.helpers.drain(..) {
            let _ = tokio::time::timeout(DEADLINE, h).await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("server shutdown");
        }
    }

    /// Polls `check` every 50 ms until it returns `Some`, failing the test
    /// with `what` (and the last observation) after [`DEADLINE`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < DEADLINE {
            match check().await {
                Ok(v) => return v,
                Err(observed) => last = observed,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; last observed: {last}");
    }

    /// Pods in `default` with label `app=<app>`.
    /// Creates `d` (in `default`).
    pub async fn create_deployment(&self, d: k8s_openapi::api::apps::v1::Deployment) {
        kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
            self.client.clone(),
            "default",
        )
        .create(&kube::api::PostParams::default(), &d)
        .await
        .expect("create deployment");
    }

    pub async fn pods(&self, app: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("list pods")
            .items
    }
}

fn ready_condition() -> serde_json::Value {
    let now = Timestamp::now().to_string();
    json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now})
}

async fn heartbeat(client: Client, name: String, alive: Alive, stop: impl Future<Output = ()>) {
    let nodes = Api::<Node>::all(client);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        if !alive.lock().expect("alive").contains(&name) {
            continue;
        }
        let patch = json!({"status": {"conditions": [ready_condition()]}});
        // Transient failures are fine: the next beat retries.
        let _ = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// Whether a pod is being deleted (gracefully: it still exists).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether a pod is Running with Ready=True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The node a pod is bound to.
pub fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The first container's image.
pub fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn fake_kubelet(client: Client, alive: Alive, stop: impl Future<Output = ()>) {
    let api = Api::<Pod>::all(client.clone());
    let mut next_ip: BTreeMap<String, u32> = BTreeMap::new();
    let events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    let mut stop = std::pin::pin!(stop);
    loop {
        let pod = tokio::select! {
            () = &mut stop => return,
            ev = events.next() => match ev {
                Some(Ok(pod)) => pod,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let Some(node) = node_of(&pod) else { continue };
        if !alive.lock().expect("alive").contains(&node) {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            // What the agent does once the containers stopped: the final
            // delete, grace 0.
            let dp = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = Api::<Pod>::namespaced(client.clone(), &namespace)
                .delete(&name, &dp)
                .await;
            continue;
        }
        // Test pods can ask to finish: label `exit-code` (Jobs).
        let exit = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(EXIT_CODE_LABEL))
            .cloned();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if let Some(code) = exit.filter(|_| phase == "Running") {
            let now = Timestamp::now().to_string();
            let ok = code == "0";
            let patch = json!({"status": {
                "phase": if ok { "Succeeded" } else { "Failed" },
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                ],
                "containerStatuses": [{
                    "name": "main", "image": image_of(&pod), "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code.parse::<i32>().unwrap_or(1), "finishedAt": now}},
                }],
            }});
            let _ = Api::<Pod>::namespaced(client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            continue;
        }
        if is_ready(&pod) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let index = alive
            .lock()
            .expect("alive")
            .iter()
            .position(|n| *n == node)
            .unwrap_or(0);
        let counter = next_ip.entry(node.clone()).or_insert(2);
        let ip = format!("10.244.{}.{}", index, *counter);
        *counter += 1;
        let now = Timestamp::now().to_string();
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }});
        let _ = Api::<Pod>::namespaced(client.clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// A Deployment manifest: `app=<name>` pods running `image`, 100m cpu.
pub fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: serde_json::Value,
    unavailable: serde_json::Value,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "main",
                    "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]}
            }
        }
    }))
    .expect("deployment manifest")
}
