//! One task per pod: makes its sandbox, starts and restarts containers as
//! the lifecycle machine decides, runs probes, pushes status when it
//! changes, and on deletion drains and tears everything down.
//!
//! The worker talks to the machine through [`PodRuntime`] and to the API
//! through [`PodApi`], so its logic is tested with fakes of both.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use nix::sys::signal::Signal;
use skiff_ipam::PodIpAllocator;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::container::{self, CREATE_CONTAINER_CONFIG_ERROR, PodContext};
use crate::error::{AgentError, Result};
use crate::lifecycle::{Action, Backoff, ContainerSpec, Now, PodMachine, ProbeKind, RestartPolicy};
use crate::probe;
use crate::sandbox::{PodRuntime, ProcessState, Sandbox, SandboxSpec, names, resolv};
use crate::state::{PodRecord, ProcessRecord, StateStore};
use crate::status::{self, ConditionClock, StatusInput};

/// Default grace period when neither the pod nor the deletion gives one.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long SIGKILLed processes get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The API calls a worker makes.
#[async_trait::async_trait]
pub trait PodApi: Send + Sync + 'static {
    /// Replaces the pod's status (pods/status subresource).
    async fn patch_status(&self, namespace: &str, name: &str, status: &PodStatus) -> Result<()>;
    /// Deletes the pod object for good (grace 0, only if it still has
    /// `uid`); absent is success.
    async fn delete_now(&self, namespace: &str, name: &str, uid: &str) -> Result<()>;
}

/// What workers share.
pub struct Shared {
    /// Configuration.
    pub cfg: AgentConfig,
    /// Sandbox and process operations.
    pub runtime: Arc<dyn PodRuntime>,
    /// API operations.
    pub api: Arc<dyn PodApi>,
    /// Persisted state.
    pub state: Arc<StateStore>,
    /// Pod IPs (persisted through `state` before use).
    pub ipam: Mutex<PodIpAllocator>,
    /// This node's IP.
    pub node_ip: Ipv4Addr,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Network,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.cfg.node_name)
            .field("pod_cidr", &self.pod_cidr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The pod's IP: its recorded one, or a new allocation persisted before
    /// it is returned (so a crash can never hand it out twice).
    pub fn ensure_ip(&self, uid: &str) -> Result<Ipv4Addr> {
        let mut alloc = self.ipam.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = alloc.clone();
        let ip = next.allocate(uid).map_err(|source| AgentError::Ipam {
            owner: uid.to_owned(),
            source,
        })?;
        let std::net::IpAddr::V4(ip) = ip else {
            return Err(AgentError::Config(format!(
                "pod CIDR {} is not IPv4",
                self.pod_cidr
            )));
        };
        let snapshot = next.snapshot();
        self.state.update(|s| {
            s.ipam = Some(snapshot);
            if let Some(r) = s.pods.get_mut(uid) {
                r.ip = Some(ip);
            }
        })?;
        *alloc = next;
        Ok(ip)
    }

    /// Gives the pod's IP back and forgets the pod, in one state write.
    pub fn forget(&self, uid: &str) -> Result<()> {
        let mut alloc = self.ipam.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = alloc.clone();
        next.release(uid);
        let snapshot = next.snapshot();
        self.state.update(|s| {
            s.ipam = Some(snapshot);
            s.pods.remove(uid);
        })?;
        *alloc = next;
        Ok(())
    }
}

/// What a worker hears about its pod.
pub type PodUpdate = Option<Arc<Pod>>;

fn meta(pod: &Pod) -> (String, String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// The grace period for deleting `pod`: the deletion's, else the spec's.
pub fn grace_period(pod: &Pod) -> Duration {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_GRACE, Duration::from_secs)
}

struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    ns: String,
    name: String,
    uid: String,
    machine: PodMachine,
    spec_errors: BTreeMap<String, AgentError>,
    clock: ConditionClock,
    start_time: chrono::DateTime<Utc>,
    sandbox: Option<Sandbox>,
    sandbox_error: Option<String>,
    sandbox_retry: (Instant, Duration),
    procs: BTreeMap<String, ProcessRecord>,
    kill_deadlines: BTreeMap<String, Instant>,
    last_pushed: Option<PodStatus>,
    probe_tx: mpsc::UnboundedSender<(String, ProbeKind, u64, std::result::Result<(), String>)>,
}

/// Runs the pod until it is deleted (then tears it down) or `shutdown`
/// flips (then leaves its processes running for the next agent to adopt).
pub async fn run(
    shared: Arc<Shared>,
    updates: watch::Receiver<PodUpdate>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let (ns, name, uid) = meta(&pod);
    let span = tracing::info_span!("pod", namespace = %ns, pod = %name, uid = %uid);
    run_inner(shared, pod, updates, shutdown)
        .instrument(span)
        .await;
}

async fn run_inner(
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    mut updates: watch::Receiver<PodUpdate>,
    mut shutdown: watch::Receiver<bool>,
) {
    updates.borrow_and_update();
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let mut w = Worker::new(shared, pod, probe_tx);
    loop {
        if *shutdown.borrow() {
            tracing::debug!("agent stopping; leaving pod running");
            return;
        }
        let latest = updates.borrow_and_update().clone();
        match latest {
            None => {
                tracing::info!("pod deleted from the API; stopping it");
                let grace = grace_period(&w.pod);
                w.terminate(grace, false).await;
                return;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                tracing::info!("pod is being deleted; stopping it");
                w.pod = p;
                let grace = grace_period(&w.pod);
                w.terminate(grace, true).await;
                return;
            }
            Some(p) => w.pod = p,
        }
        if let Err(e) = w.step().await {
            if e.is_not_found() {
                tracing::info!("pod vanished from the API");
            } else {
                tracing::warn!(error = %e, "pod sync failed");
            }
        }
        let wake = w
            .machine
            .next_wakeup()
            .into_iter()
            .chain(w.kill_deadlines.values().copied())
            .chain(w.sandbox.is_none().then_some(w.sandbox_retry.0))
            .min()
            .unwrap_or_else(|| Instant::now() + w.shared.cfg.sync_period);
        let wake = wake.min(Instant::now() + w.shared.cfg.sync_period);
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    // The agent dropped us: it is stopping.
                    return;
                }
            }
            Some((c, kind, instance, result)) = probe_rx.recv() => {
                if let Err(msg) = &result {
                    tracing::debug!(container = %c, ?kind, %msg, "probe failed");
                }
                w.machine.probe_result(&c, kind, instance, result.is_ok(), Now::current());
            }
            () = tokio::time::sleep_until(wake.into()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Tears down a pod the agent recorded but the API no longer has (deleted
/// while the agent was down).
pub async fn teardown_orphan(shared: Arc<Shared>, record: PodRecord) {
    let pod = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(record.name.clone()),
            namespace: Some(record.namespace.clone()),
            uid: Some(record.uid.clone()),
            ..Default::default()
        },
        ..Pod::default()
    };
    tracing::info!(namespace = %record.namespace, pod = %record.name, uid = %record.uid, "pod no longer in the API; tearing it down");
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut w = Worker::new(shared, Arc::new(pod), tx);
    w.terminate(DEFAULT_GRACE, false).await;
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        pod: Arc<Pod>,
        probe_tx: mpsc::UnboundedSender<(String, ProbeKind, u64, std::result::Result<(), String>)>,
    ) -> Self {
        let (ns, name, uid) = meta(&pod);
        let now = Now::current();
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut spec_errors = BTreeMap::new();
        let specs: Vec<ContainerSpec> = containers
            .iter()
            .map(|c| {
                probe::container_spec(c).unwrap_or_else(|e| {
                    spec_errors.insert(c.name.clone(), e);
                    ContainerSpec {
                        name: c.name.clone(),
                        ..ContainerSpec::default()
                    }
                })
            })
            .collect();
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|i| !i.is_empty())
        {
            for c in &containers {
                spec_errors
                    .entry(c.name.clone())
                    .or_insert(AgentError::PodSpec {
                        reason: CREATE_CONTAINER_CONFIG_ERROR,
                        message: "initContainers are not supported by the Skiff agent".into(),
                    });
            }
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
        {
            for c in &containers {
                spec_errors.insert(
                    c.name.clone(),
                    AgentError::PodSpec {
                        reason: CREATE_CONTAINER_CONFIG_ERROR,
                        message: "hostNetwork pods are not supported by the Skiff agent".into(),
                    },
                );
            }
        }
        let policy =
            RestartPolicy::parse(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
        let backoff = Backoff {
            base: shared.cfg.backoff_base,
            max: shared.cfg.backoff_max,
        };
        let mut machine = PodMachine::new(name.clone(), policy, backoff, specs, now);
        let record = shared.state.snapshot().pods.get(&uid).cloned();
        let procs = record
            .as_ref()
            .map(|r| r.containers.clone())
            .unwrap_or_default();
        for (c, n) in record.iter().flat_map(|r| &r.restart_counts) {
            machine.set_restart_count(c, *n);
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or(now.wall, status::from_k8s);
        Self {
            clock: ConditionClock::from_pod(&pod),
            shared,
            pod,
            ns,
            name,
            uid,
            machine,
            spec_errors,
            start_time,
            sandbox: None,
            sandbox_error: None,
            sandbox_retry: (Instant::now(), Duration::ZERO),
            procs,
            kill_deadlines: BTreeMap::new(),
            last_pushed: None,
            probe_tx,
        }
    }

    fn record(&self) -> PodRecord {
        PodRecord {
            uid: self.uid.clone(),
            namespace: self.ns.clone(),
            name: self.name.clone(),
            netns: names::netns_name(&self.uid),
            veth: names::veth_name(&self.uid),
            ip: None,
            containers: BTreeMap::new(),
            restart_counts: BTreeMap::new(),
        }
    }

    fn sandbox_spec(&self, ip: Ipv4Addr) -> SandboxSpec {
        let cfg = &self.shared.cfg;
        let dns = cfg.dns_ip.unwrap_or(self.shared.node_ip);
        SandboxSpec {
            uid: self.uid.clone(),
            namespace: self.ns.clone(),
            name: self.name.clone(),
            hostname: container::hostname(&self.pod),
            ip,
            prefix_len: self.shared.pod_cidr.prefix(),
            gateway: crate::network::gateway(self.shared.pod_cidr),
            resolv_conf: resolv::render(dns, &self.ns, &cfg.cluster_domain),
            empty_dirs: self
                .pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| v.empty_dir.is_some())
                .map(|v| v.name.clone())
                .collect(),
        }
    }

    /// Makes the sandbox (recording intent first), then adopts or reaps
    /// processes recorded by an earlier agent.
    async fn ensure_sandbox(&mut self) -> Result<()> {
        let rec = self.record();
        self.shared.state.update(|s| {
            s.pods.entry(rec.uid.clone()).or_insert(rec);
        })?;
        let ip = self.shared.ensure_ip(&self.uid)?;
        let sandbox = self
            .shared
            .runtime
            .create_sandbox(&self.sandbox_spec(ip))
            .await?;
        self.machine.sandbox_ready();
        let now = Now::current();
        for (c, rec) in std::mem::take(&mut self.procs) {
            self.machine.adopted(&c, rec.started_at, now);
            if self.shared.runtime.adopt(&sandbox, &c, &rec) {
                self.procs.insert(c, rec);
            } else {
                // It ended while no agent watched; report how, then restart per policy.
                let st = self.shared.runtime.poll(&sandbox, &c, &rec);
                let (code, sig) = exit_of(st);
                self.machine.exited(&c, code, sig, now);
                self.persist_procs()?;
            }
        }
        self.sandbox = Some(sandbox);
        Ok(())
    }

    fn persist_procs(&self) -> Result<()> {
        let procs = self.procs.clone();
        let counts: BTreeMap<String, i32> = self
            .machine
            .containers()
            .iter()
            .map(|c| (c.name().to_owned(), c.restart_count()))
            .collect();
        let uid = self.uid.clone();
        self.shared.state.update(|s| {
            if let Some(r) = s.pods.get_mut(&uid) {
                r.containers = procs;
                r.restart_counts = counts;
            }
        })
    }

    async fn step(&mut self) -> Result<()> {
        if self.sandbox.is_none() && Instant::now() >= self.sandbox_retry.0 {
            match self.ensure_sandbox().await {
                Ok(()) => self.sandbox_error = None,
                Err(e) => {
                    let msg = e.to_string();
                    tracing::warn!(error = %msg, "sandbox setup failed; will retry");
                    self.machine.sandbox_failed(&msg);
                    self.sandbox_error = Some(msg);
                    let next = (self.sandbox_retry.1 * 2)
                        .clamp(self.shared.cfg.sync_period, Duration::from_secs(30));
                    self.sandbox_retry = (Instant::now() + next, next);
                }
            }
        }
        if let Some(sandbox) = self.sandbox.clone() {
            self.poll_processes(&sandbox)?;
            self.enforce_kill_deadlines(&sandbox);
            let actions = self.machine.due_actions(Now::current());
            for action in actions {
                self.act(&sandbox, action).await?;
            }
        }
        self.push_status().await
    }

    fn poll_processes(&mut self, sandbox: &Sandbox) -> Result<()> {
        let mut changed = false;
        for (c, rec) in self.procs.clone() {
            if let st @ ProcessState::Exited(_) = self.shared.runtime.poll(sandbox, &c, &rec) {
                let (code, sig) = exit_of(st);
                tracing::info!(container = %c, exit_code = code, signal = sig, "container exited");
                self.machine.exited(&c, code, sig, Now::current());
                self.procs.remove(&c);
                self.kill_deadlines.remove(&c);
                changed = true;
            }
        }
        if changed {
            self.persist_procs()?;
        }
        Ok(())
    }

    fn enforce_kill_deadlines(&mut self, sandbox: &Sandbox) {
        let now = Instant::now();
        for (c, deadline) in self.kill_deadlines.clone() {
            if deadline <= now
                && let Some(rec) = self.procs.get(&c)
            {
                tracing::info!(container = %c, "grace period over; SIGKILL");
                if let Err(e) = self
                    .shared
                    .runtime
                    .signal(sandbox, &c, rec, Signal::SIGKILL)
                {
                    tracing::warn!(container = %c, error = %e, "SIGKILL failed");
                }
                self.kill_deadlines.insert(c, now + KILL_WAIT);
            }
        }
    }

    fn launch_for(&self, sandbox: &Sandbox, name: &str) -> Result<container::ContainerLaunch> {
        if let Some(e) = self.spec_errors.get(name) {
            return Err(match e {
                AgentError::PodSpec { reason, message } => AgentError::PodSpec {
                    reason,
                    message: message.clone(),
                },
                other => AgentError::Config(other.to_string()),
            });
        }
        let c = self
            .pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| c.name == name)
            .ok_or_else(|| AgentError::Config(format!("container {name} not in the pod spec")))?;
        let hostname = container::hostname(&self.pod);
        container::launch(
            &PodContext {
                pod: &self.pod,
                pod_ip: sandbox.ip,
                host_ip: self.shared.node_ip,
                node_name: &self.shared.cfg.node_name,
                pod_dir: &sandbox.pod_dir,
                hostname: &hostname,
            },
            c,
        )
    }

    async fn act(&mut self, sandbox: &Sandbox, action: Action) -> Result<()> {
        match action {
            Action::Start { container } => {
                let started = match self.launch_for(sandbox, &container) {
                    Ok(launch) => self.shared.runtime.start_container(sandbox, &launch).await,
                    Err(e) => Err(e),
                };
                match started {
                    Ok(rec) => {
                        self.machine.started(&container, Now::current());
                        self.procs.insert(container, rec);
                        self.persist_procs()?;
                    }
                    Err(AgentError::PodSpec { reason, message }) => {
                        tracing::warn!(container = %container, reason, %message, "cannot start container");
                        self.machine
                            .start_failed(&container, reason, &message, Now::current());
                    }
                    Err(e) => {
                        tracing::warn!(container = %container, error = %e, "container start failed");
                        self.machine.start_failed(
                            &container,
                            "RunContainerError",
                            &e.to_string(),
                            Now::current(),
                        );
                    }
                }
            }
            Action::Kill {
                container,
                reason,
                grace,
            } => {
                tracing::info!(container = %container, %reason, "killing container");
                if let Some(rec) = self.procs.get(&container) {
                    if let Err(e) =
                        self.shared
                            .runtime
                            .signal(sandbox, &container, rec, Signal::SIGTERM)
                    {
                        tracing::warn!(container = %container, error = %e, "SIGTERM failed");
                    }
                    let grace = grace.unwrap_or_else(|| grace_period(&self.pod));
                    self.kill_deadlines
                        .insert(container, Instant::now() + grace);
                }
            }
            Action::Probe {
                container,
                kind,
                instance,
                action,
                timeout,
            } => {
                let launch = self.launch_for(sandbox, &container)?;
                let runtime = Arc::clone(&self.shared.runtime);
                let tx = self.probe_tx.clone();
                let sandbox = sandbox.clone();
                tokio::spawn(async move {
                    let result = runtime.probe(&sandbox, &launch, &action, timeout).await;
                    let _ = tx.send((container, kind, instance, result));
                });
            }
        }
        Ok(())
    }

    fn current_status(&mut self) -> PodStatus {
        let pids: BTreeMap<String, i32> =
            self.procs.iter().map(|(c, r)| (c.clone(), r.pid)).collect();
        let input = StatusInput {
            pod: &self.pod,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip),
            host_ip: self.shared.node_ip,
            start_time: self.start_time,
            pids: &pids,
            message: self.sandbox_error.clone(),
        };
        status::build(&self.machine, &input, &mut self.clock, Utc::now())
    }

    async fn push_status(&mut self) -> Result<()> {
        let st = self.current_status();
        if self.last_pushed.as_ref() == Some(&st) {
            return Ok(());
        }
        self.shared
            .api
            .patch_status(&self.ns, &self.name, &st)
            .await?;
        tracing::debug!(phase = st.phase.as_deref().unwrap_or(""), "status pushed");
        self.last_pushed = Some(st);
        Ok(())
    }

    /// Graceful stop: SIGTERM every container's process group, wait up to
    /// `grace`, SIGKILL what is left, remove the sandbox, release the IP,
    /// forget the pod, and (if the object still exists) delete it for real.
    async fn terminate(&mut self, grace: Duration, delete_in_api: bool) {
        self.machine.set_terminating();
        let sandbox = self.sandbox.clone().unwrap_or_else(|| Sandbox {
            uid: self.uid.clone(),
            netns: names::netns_name(&self.uid),
            veth: names::veth_name(&self.uid),
            ip: Ipv4Addr::UNSPECIFIED,
            pod_dir: self.shared.cfg.pod_dir(&self.uid),
        });
        if self.sandbox.is_none() {
            // Adopt what an earlier agent started so it is signalled properly.
            for (c, rec) in self.procs.clone() {
                if !self.shared.runtime.adopt(&sandbox, &c, &rec) {
                    self.procs.remove(&c);
                }
            }
        }
        for (c, rec) in &self.procs {
            tracing::info!(container = %c, pid = rec.pid, grace_secs = grace.as_secs_f64(), "SIGTERM");
            if let Err(e) = self
                .shared
                .runtime
                .signal(&sandbox, c, rec, Signal::SIGTERM)
            {
                tracing::warn!(container = %c, error = %e, "SIGTERM failed");
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while !self.procs.is_empty() {
            if Instant::now() >= deadline && !killed {
                for (c, rec) in &self.procs {
                    tracing::info!(container = %c, "grace period over; SIGKILL");
                    let _ = self
                        .shared
                        .runtime
                        .signal(&sandbox, c, rec, Signal::SIGKILL);
                }
                killed = true;
            }
            if killed && Instant::now() >= deadline + KILL_WAIT {
                tracing::error!(left = ?self.procs.keys().collect::<Vec<_>>(), "containers survived SIGKILL; removing the sandbox anyway");
                break;
            }
            if let Err(e) = self.poll_processes(&sandbox) {
                tracing::warn!(error = %e, "could not record container exits");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if delete_in_api {
            // Final state for anyone watching while the object still exists.
            let _ = self.push_status().await;
        }
        if let Err(e) = self.shared.runtime.remove_sandbox(&self.uid).await {
            tracing::error!(error = %e, "sandbox removal failed; `skiff agent cleanup` removes leftovers");
        }
        if let Err(e) = self.shared.forget(&self.uid) {
            tracing::error!(error = %e, "could not release the pod IP");
        }
        if delete_in_api
            && let Err(e) = self
                .shared
                .api
                .delete_now(&self.ns, &self.name, &self.uid)
                .await
        {
            tracing::warn!(error = %e, "final delete of the pod failed");
        }
        tracing::info!("pod torn down");
    }
}

fn exit_of(st: ProcessState) -> (i32, Option<i32>) {
    match st {
        ProcessState::Exited(Some(s)) => (s.exit_code(), s.signal()),
        // The shim's record is gone: kubelet reports such containers as 137.
        ProcessState::Exited(None) | ProcessState::Running => (137, None),
    }
}

/// Whether a pod needs no worker: finished pods the agent has no record of
/// (after a restart kubelet does not rerun them either).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests;
