//! The worker's logic against a fake runtime and a fake API (no root).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use nix::sys::signal::Signal;
use serde_json::json;
use skiff_ipam::PodIpAllocator;
use tokio::sync::watch;

use super::*;
use crate::container::ContainerLaunch;
use crate::lifecycle::ProbeAction;
use crate::sandbox::{ExitStatus, PodRuntime, ProcessState, Sandbox, SandboxSpec};
use crate::state::{ProcessRecord, StateStore};

#[derive(Default)]
struct FakeInner {
    next_pid: i32,
    /// pid → container name, while running.
    running: BTreeMap<i32, String>,
    exited: BTreeMap<i32, ExitStatus>,
    started: Vec<(String, Vec<String>)>,
    signals: Vec<(String, Signal)>,
    sandboxes: Vec<SandboxSpec>,
    removed: Vec<String>,
    ready: bool,
}

#[derive(Default)]
struct FakeRuntime(Mutex<FakeInner>);

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeInner> {
        self.0.lock().expect("fake lock")
    }
    /// Makes the running process of `container` exit with `code`.
    fn exit(&self, container: &str, code: i32) {
        let mut f = self.lock();
        let pid = f
            .running
            .iter()
            .find(|(_, c)| *c == container)
            .map(|(p, _)| *p)
            .expect("running");
        f.running.remove(&pid);
        f.exited.insert(pid, ExitStatus::Code(code));
    }
    fn starts(&self, container: &str) -> usize {
        self.lock()
            .started
            .iter()
            .filter(|(c, _)| c == container)
            .count()
    }
}

#[async_trait::async_trait]
impl PodRuntime for FakeRuntime {
    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        self.lock().sandboxes.push(spec.clone());
        Ok(Sandbox {
            uid: spec.uid.clone(),
            netns: names::netns_name(&spec.uid),
            veth: names::veth_name(&spec.uid),
            ip: spec.ip,
            pod_dir: "/nonexistent".into(),
        })
    }
    async fn start_container(
        &self,
        _s: &Sandbox,
        launch: &ContainerLaunch,
    ) -> Result<ProcessRecord> {
        let mut f = self.lock();
        f.next_pid += 1;
        let pid = 1000 + f.next_pid;
        f.running.insert(pid, launch.name.clone());
        let mut argv = vec![launch.program.clone()];
        argv.extend(launch.args.iter().cloned());
        f.started.push((launch.name.clone(), argv));
        Ok(ProcessRecord {
            pid,
            start_ticks: 1,
            shim_pid: pid - 1,
            shim_start_ticks: 1,
            started_at: chrono::Utc::now(),
        })
    }
    fn adopt(&self, _s: &Sandbox, _c: &str, record: &ProcessRecord) -> bool {
        self.lock().running.contains_key(&record.pid)
    }
    fn poll(&self, _s: &Sandbox, _c: &str, record: &ProcessRecord) -> ProcessState {
        let f = self.lock();
        match f.exited.get(&record.pid) {
            Some(st) => ProcessState::Exited(Some(*st)),
            None => ProcessState::Running,
        }
    }
    fn signal(
        &self,
        _s: &Sandbox,
        container: &str,
        record: &ProcessRecord,
        signal: Signal,
    ) -> Result<()> {
        let mut f = self.lock();
        f.signals.push((container.to_owned(), signal));
        if f.running.remove(&record.pid).is_some() {
            f.exited
                .insert(record.pid, ExitStatus::Signal(signal as i32));
        }
        Ok(())
    }
    async fn probe(
        &self,
        _s: &Sandbox,
        _l: &ContainerLaunch,
        _a: &ProbeAction,
        _t: Duration,
    ) -> std::result::Result<(), String> {
        if self.lock().ready {
            Ok(())
        } else {
            Err("not yet".into())
        }
    }
    async fn remove_sandbox(&self, uid: &str) -> Result<()> {
        self.lock().removed.push(uid.to_owned());
        Ok(())
    }
}

#[derive(Default)]
struct FakeApi {
    statuses: Mutex<Vec<PodStatus>>,
    deletes: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PodApi for FakeApi {
    async fn patch_status(&self, _ns: &str, _name: &str, status: &PodStatus) -> Result<()> {
        self.statuses.lock().expect("lock").push(status.clone());
        Ok(())
    }
    async fn delete_now(&self, _ns: &str, name: &str, _uid: &str) -> Result<()> {
        self.deletes.lock().expect("lock").push(name.to_owned());
        Ok(())
    }
}

impl FakeApi {
    fn last(&self) -> PodStatus {
        self.statuses
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a status was pushed")
    }
    fn count(&self) -> usize {
        self.statuses.lock().expect("lock").len()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    runtime: Arc<FakeRuntime>,
    api: Arc<FakeApi>,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::parse("http://127.0.0.1:1").expect("url");
    let mut cfg = AgentConfig::new(url, "node-a");
    cfg.data_dir = dir.path().to_owned();
    cfg.backoff_base = Duration::from_millis(300);
    cfg.backoff_max = Duration::from_secs(2);
    cfg.sync_period = Duration::from_millis(20);
    let cidr: Ipv4Network = "10.244.5.0/24".parse().expect("cidr");
    let runtime = Arc::new(FakeRuntime::default());
    let api = Arc::new(FakeApi::default());
    let shared = Arc::new(Shared {
        cfg,
        runtime: runtime.clone(),
        api: api.clone(),
        state: Arc::new(StateStore::open(dir.path()).expect("state")),
        ipam: Mutex::new(PodIpAllocator::new(ipnetwork::IpNetwork::V4(cidr)).expect("ipam")),
        node_ip: Ipv4Addr::new(192, 168, 250, 1),
        pod_cidr: cidr,
    });
    Harness {
        _dir: dir,
        shared,
        runtime,
        api,
    }
}

fn pod(v: serde_json::Value) -> Arc<Pod> {
    Arc::new(serde_json::from_value(v).expect("pod"))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn container_status(s: &PodStatus, name: &str) -> k8s_openapi::api::core::v1::ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .cloned()
        .expect("container status")
}

#[tokio::test]
async fn runs_restarts_with_backoff_reports_and_tears_down() {
    let h = harness();
    let p = pod(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1"},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 5, "containers": [
            {"name": "app", "command": ["/bin/app", "--ip=$(IP)"], "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
        ]}
    }));
    let (tx, rx) = watch::channel(Some(p.clone()));
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(h.shared.clone(), rx, stop_rx));

    eventually("running status", || {
        h.api.count() > 0 && h.api.last().phase.as_deref() == Some("Running")
    })
    .await;
    let st = h.api.last();
    assert_eq!(
        st.pod_ip.as_deref(),
        Some("10.244.5.2"),
        "first pod IP after the gateway"
    );
    assert_eq!(st.host_ip.as_deref(), Some("192.168.250.1"));
    assert_eq!(
        h.runtime.lock().started[0].1,
        ["/bin/app", "--ip=10.244.5.2"]
    );
    let spec = h.runtime.lock().sandboxes[0].clone();
    assert_eq!(spec.gateway, Ipv4Addr::new(10, 244, 5, 1));
    assert!(spec.resolv_conf.contains("search shop.svc.cluster.local"));
    // The IP and process are persisted before use.
    let saved = h.shared.state.snapshot();
    assert_eq!(saved.pods["uid-1"].ip, Some(Ipv4Addr::new(10, 244, 5, 2)));
    assert_eq!(saved.pods["uid-1"].containers.len(), 1);

    // No change → no push.
    let pushes = h.api.count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.api.count(),
        pushes,
        "unchanged status is not pushed again"
    );

    // First crash: immediate restart. Second: CrashLoopBackOff, then restart.
    h.runtime.exit("app", 2);
    eventually("first restart", || h.runtime.starts("app") == 2).await;
    eventually("restartCount 1", || {
        container_status(&h.api.last(), "app").restart_count == 1
    })
    .await;
    h.runtime.exit("app", 2);
    eventually("back-off reported", || {
        let cs = container_status(&h.api.last(), "app");
        cs.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .as_deref()
            == Some("CrashLoopBackOff")
    })
    .await;
    let cs = container_status(&h.api.last(), "app");
    assert_eq!(
        cs.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(2)
    );
    assert_eq!(h.runtime.starts("app"), 2, "waits out the back-off");
    eventually("second restart", || h.runtime.starts("app") == 3).await;
    eventually("restartCount 2", || {
        container_status(&h.api.last(), "app").restart_count == 2
    })
    .await;
    assert_eq!(
        h.shared.state.snapshot().pods["uid-1"].restart_counts["app"],
        2,
        "persisted for adoption"
    );

    // Deleted from the API: SIGTERM, sandbox removed, IP released, no API delete.
    tx.send(None).expect("send");
    task.await.expect("worker");
    assert_eq!(
        h.runtime.lock().signals,
        [("app".to_owned(), Signal::SIGTERM)]
    );
    assert_eq!(h.runtime.lock().removed, ["uid-1"]);
    assert!(h.shared.state.snapshot().pods.is_empty());
    assert!(
        h.shared
            .state
            .snapshot()
            .ipam
            .expect("ipam")
            .owners
            .is_empty()
    );
    assert!(h.api.deletes.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn readiness_gates_ready_and_deletion_timestamp_finalises() {
    let h = harness();
    let p = pod(json!({
        "metadata": {"name": "db", "namespace": "default", "uid": "uid-2"},
        "spec": {"containers": [{"name": "db", "command": ["db"],
            "readinessProbe": {"tcpSocket": {"port": 5432}, "periodSeconds": 1}}]}
    }));
    let (tx, rx) = watch::channel(Some(p.clone()));
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(h.shared.clone(), rx, stop_rx));
    eventually("running", || {
        h.api.count() > 0 && h.api.last().phase.as_deref() == Some("Running")
    })
    .await;
    let ready = |s: &PodStatus| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    assert!(!ready(&h.api.last()), "not ready while the probe fails");
    h.runtime.lock().ready = true;
    eventually("ready", || ready(&h.api.last())).await;
    assert!(container_status(&h.api.last(), "db").ready);

    let mut deleting = (*p).clone();
    deleting.metadata.deletion_timestamp = Some(crate::status::to_k8s(chrono::Utc::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(3);
    tx.send(Some(Arc::new(deleting))).expect("send");
    task.await.expect("worker");
    assert_eq!(
        *h.api.deletes.lock().expect("lock"),
        ["db"],
        "object removed for real after teardown"
    );
    assert!(!ready(&h.api.last()), "last status shows the pod not ready");
}

#[tokio::test]
async fn missing_command_is_reported_and_shutdown_leaves_pods_running() {
    let h = harness();
    let p = pod(json!({
        "metadata": {"name": "img", "namespace": "default", "uid": "uid-3"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "ok", "command": ["sleep", "1000"]}]}
    }));
    let (_tx, rx) = watch::channel(Some(p));
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(h.shared.clone(), rx, stop_rx));
    eventually("error reported", || {
        h.api.count() > 0
            && container_status(&h.api.last(), "nginx")
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some("CreateContainerError")
    })
    .await;
    let st = h.api.last();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let msg = container_status(&st, "nginx")
        .state
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .expect("message");
    assert!(msg.contains("without images"), "{msg}");
    eventually("ok container started", || h.runtime.starts("ok") == 1).await;
    stop_tx.send(true).expect("stop");
    task.await.expect("worker");
    assert!(
        h.runtime.lock().signals.is_empty(),
        "agent shutdown does not stop pods"
    );
    assert!(h.runtime.lock().removed.is_empty());
    assert_eq!(
        h.shared.state.snapshot().pods["uid-3"].containers.len(),
        1,
        "kept for adoption"
    );
}

#[tokio::test]
async fn restarted_worker_adopts_running_containers() {
    let h = harness();
    let p = pod(json!({
        "metadata": {"name": "keep", "namespace": "default", "uid": "uid-4"},
        "spec": {"containers": [{"name": "c", "command": ["sleep", "1000"]}]}
    }));
    let (_tx, rx) = watch::channel(Some(p.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(h.shared.clone(), rx, stop_rx));
    eventually("started", || h.runtime.starts("c") == 1).await;
    stop_tx.send(true).expect("stop");
    task.await.expect("worker");
    let before = h.shared.state.snapshot().pods["uid-4"].clone();

    let (_tx2, rx2) = watch::channel(Some(p));
    let (_stop2, stop_rx2) = watch::channel(false);
    let task2 = tokio::spawn(run(h.shared.clone(), rx2, stop_rx2));
    eventually("running again", || {
        h.api.last().phase.as_deref() == Some("Running")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.runtime.starts("c"), 1, "adopted, not started twice");
    let after = h.shared.state.snapshot().pods["uid-4"].clone();
    assert_eq!(after.ip, before.ip, "same IP");
    assert_eq!(after.containers, before.containers, "same process");
    task2.abort();
}
