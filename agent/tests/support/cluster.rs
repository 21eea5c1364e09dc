//! A real API server (skiff-control, in-process) in the cluster's
//! "outside" namespace and one agent per node namespace, each agent on its
//! own thread with its own tokio runtime inside its node's namespace.
//! Dropping the harness stops the agents and runs `cleanup` for each node
//! (also when a test panics), so no pod outlives a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_agent::{Agent, AgentConfig};
use skiff_control::api::{RunningServer, ServerConfig};
use skiff_tests::Cluster;
use tokio::sync::oneshot;

use super::*;

/// One agent thread.
pub struct RunningAgent {
    /// Its configuration (same on restart).
    pub cfg: AgentConfig,
    netns: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<skiff_agent::Result<()>>>,
    cleanup_on_drop: bool,
}

impl RunningAgent {
    /// Starts `Agent::new(cfg).run(..)` on a thread inside `netns`.
    pub fn start(cfg: AgentConfig, netns: &Path) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let run_cfg = cfg.clone();
        let thread = spawn_in(netns, move || async move {
            Agent::new(run_cfg)
                .run(async move {
                    let _ = rx.await;
                })
                .await
        });
        Self {
            cfg,
            netns: netns.to_owned(),
            stop: Some(tx),
            thread: Some(thread),
            cleanup_on_drop: true,
        }
    }

    /// Stops the agent (its pods keep running) and waits for it.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(node = %self.cfg.node_name, error = %e, "agent failed")
                }
                Err(_) => tracing::error!(node = %self.cfg.node_name, "agent thread panicked"),
            }
        }
    }

    /// Starts a fresh agent with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        let mut fresh = Self::start(self.cfg.clone(), &self.netns);
        self.stop = fresh.stop.take();
        self.thread = fresh.thread.take();
        fresh.cleanup_on_drop = false;
    }

    /// Runs `skiff agent cleanup` for this node inside its namespace.
    pub fn cleanup(&self) -> skiff_agent::CleanupReport {
        run_sync_in(&self.netns, || skiff_agent::cleanup(&self.cfg)).expect("cleanup")
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop();
        if self.cleanup_on_drop && (self.cfg.data_dir.exists() || self.cfg.node_cgroup().exists()) {
            let report = run_sync_in(&self.netns, || skiff_agent::cleanup(&self.cfg));
            tracing::info!(?report, "cleanup on drop");
        }
    }
}

/// Runs a blocking `f` on a thread inside `netns`.
pub fn run_sync_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(netns).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// API server + agents over a [`Cluster`]. Build inside a runtime running
/// in the cluster's outside namespace.
pub struct Harness<'a> {
    /// Agents, by node index. Dropped first.
    pub agents: Vec<RunningAgent>,
    server: Option<RunningServer>,
    /// Client of the API server.
    pub client: kube::Client,
    /// The API server's URL.
    pub url: String,
    /// The cluster.
    pub cluster: &'a Cluster,
    /// Data dirs root.
    pub base: PathBuf,
    tag: String,
    created: std::sync::Mutex<Vec<String>>,
}

impl<'a> Harness<'a> {
    /// Starts the API server on the outside client's address and one agent
    /// per node; waits until every node has registered with a pod CIDR.
    pub async fn start(cluster: &'a Cluster, base: &Path) -> Self {
        init_tracing();
        let listen = SocketAddr::from((cluster.outside().addr(), 0));
        let server = ServerConfig::new(listen, base.join("control"))
            .build()
            .await
            .expect("API server")
            .spawn();
        let url = server.url();
        let client = skiff_agent::client_for(&url.parse().expect("url")).expect("client");
        let tag = format!("t{}", std::process::id());
        let agents = cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut cfg = AgentConfig::new(url.parse().expect("url"), format!("{tag}-n{i}"));
                cfg.node_ip = Some(node.addr());
                cfg.data_dir = base.join(format!("agent-{i}"));
                cfg.cgroup_root = cgroup_root();
                cfg.heartbeat_interval = Duration::from_secs(1);
                cfg.backoff_base = Duration::from_millis(200);
                cfg.backoff_max = Duration::from_secs(3);
                cfg.sync_period = Duration::from_millis(100);
                RunningAgent::start(cfg, node.netns().path())
            })
            .collect::<Vec<_>>();
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        for a in &agents {
            let name = a.cfg.node_name.clone();
            wait_for_async(
                "node registered with a pod CIDR",
                Duration::from_secs(30),
                || {
                    let nodes = nodes.clone();
                    let name = name.clone();
                    async move {
                        nodes
                            .get(&name)
                            .await
                            .ok()
                            .and_then(|n| skiff_agent::node::pod_cidr(&n))
                    }
                },
            )
            .await;
        }
        Self {
            agents,
            server: Some(server),
            client,
            url,
            cluster,
            base: base.to_owned(),
            tag,
            created: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The node name of agent `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    /// Pods API in `default`.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to node `node` with `containers` (JSON) and extra spec fields.
    pub async fn create_pod(&self, name: &str, node: usize, spec: serde_json::Value) -> Pod {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"test": "agent"}},
            "spec": spec,
        });
        pod["spec"]["nodeName"] = json!(self.node_name(node));
        for c in pod["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
        {
            c.as_object_mut()
                .expect("container")
                .entry("image")
                .or_insert(json!("skiff/none"));
        }
        let pod: Pod = serde_json::from_value(pod).expect("pod json");
        let pod = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.created
            .lock()
            .expect("lock")
            .push(pod.metadata.uid.clone().expect("uid"));
        pod
    }

    /// Polls pod `name` until `f` accepts it.
    pub async fn wait_pod<T>(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        f: impl Fn(&Pod) -> Option<T>,
    ) -> T {
        let api = self.pods();
        wait_for_async(what, limit, || {
            let api = api.clone();
            let f = &f;
            async move { api.get(name).await.ok().as_ref().and_then(f) }
        })
        .await
    }

    /// Polls an arbitrary async check (for non-pod objects).
    pub async fn wait_pod_free<Fut: std::future::Future<Output = Option<()>>>(
        &self,
        what: &str,
        limit: Duration,
        f: impl FnMut() -> Fut,
    ) {
        wait_for_async(what, limit, f).await;
    }

    /// Deletes every pod and waits until the agents have torn them down
    /// (no pod left in the API or in any agent's state).
    pub async fn delete_all_pods(&self) {
        let api = self.pods();
        let list = api.list(&ListParams::default()).await.expect("list");
        for p in list.items {
            let name = p.metadata.name.clone().expect("name");
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
        let agents: Vec<&AgentConfig> = self.agents.iter().map(|a| &a.cfg).collect();
        wait_for_async("pods torn down", Duration::from_secs(60), || {
            let api = api.clone();
            let agents = agents.clone();
            async move {
                let empty = api
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
                let forgotten = agents.iter().all(|cfg| {
                    skiff_agent::state::StateStore::open(&cfg.data_dir)
                        .is_ok_and(|s| s.snapshot().pods.is_empty())
                });
                (empty && forgotten).then_some(())
            }
        })
        .await;
    }

    /// Graceful end: delete pods, stop agents, clean every node, stop the
    /// API server, and assert nothing the agents made is left.
    pub async fn finish(mut self) {
        self.delete_all_pods().await;
        let mut uids_seen = Vec::new();
        for a in &mut self.agents {
            a.stop();
            let report = a.cleanup();
            assert!(
                report.errors.is_empty(),
                "cleanup errors: {:?}",
                report.errors
            );
            assert!(
                report.killed.is_empty(),
                "no process should be left to kill: {report:?}"
            );
            uids_seen.extend(report.pods);
            assert!(!a.cfg.data_dir.exists(), "data dir removed");
            assert!(!a.cfg.node_cgroup().exists(), "node cgroup removed");
            let links = run_sync_in(&a.netns, || {
                std::process::Command::new("ip")
                    .args(["-j", "link", "show"])
                    .output()
                    .expect("ip")
            });
            let links = String::from_utf8_lossy(&links.stdout).into_owned();
            assert!(
                !links.contains("\"skiff0\"") && !links.contains("\"skv"),
                "bridge and veths removed: {links}"
            );
            let nat = run_sync_in(&a.netns, || {
                std::process::Command::new("iptables")
                    .args(["-t", "nat", "-S"])
                    .output()
                    .expect("iptables")
            });
            assert!(
                !String::from_utf8_lossy(&nat.stdout).contains("SKIFF-AGENT"),
                "iptables chains removed"
            );
        }
        let names = netns_names();
        for uid in self.created.lock().expect("lock").iter() {
            let netns = skiff_agent::sandbox::names::netns_name(uid);
            assert!(!names.contains(&netns), "pod netns {netns} left: {names:?}");
        }
        assert_no_mounts_under(&self.base);
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("server shutdown");
        }
    }
}
