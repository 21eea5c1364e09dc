//! The pure per-pod state machine: container states, restarts with
//! crash-loop back-off, probe scheduling and counting, readiness, phase.
//!
//! It performs no IO. The pod worker feeds it events (sandbox ready,
//! container started/exited/failed to start, probe results) with the time
//! they happened, asks it for [`Action`]s that are due, and reads the
//! resulting state to build the Pod status. Monotonic time ([`Instant`])
//! drives scheduling; wall time only goes into reported timestamps.
//!
//! Semantics follow kubelet:
//! - restartPolicy `Always` restarts any exit, `OnFailure` non-zero exits,
//!   `Never` nothing;
//! - back-off: the first restart is immediate, then `base`, doubling up to
//!   `max` (kubelet: 10 s → 5 min); a container that ran at least `2 × max`
//!   before exiting starts over at an immediate restart. While waiting the
//!   container shows `Waiting{CrashLoopBackOff}` with its last termination;
//! - a startup probe gates liveness and readiness; liveness (or startup)
//!   reaching its failure threshold kills the container, which then
//!   restarts per policy; readiness decides `ready`;
//! - failed starts (`CreateContainerError`) are retried with the same
//!   back-off and do not count as restarts.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Kubelet's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart on any exit (default).
    Always,
    /// Restart on non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// From the spec string; anything unknown or absent is `Always`.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// Whether an exit with `exit_code` leads to a restart.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Crash-loop back-off parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First non-zero delay (kubelet: 10 s).
    pub base: Duration,
    /// Ceiling (kubelet: 5 min).
    pub max: Duration,
}

impl Backoff {
    /// Delay before a restart at back-off `level` (0 = first restart):
    /// zero, then `base`, `2·base`, `4·base`, … capped at `max`.
    pub fn delay(&self, level: u32) -> Duration {
        if level == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(level - 1).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A run at least this long resets the back-off.
    pub fn reset_after(&self) -> Duration {
        self.max.saturating_mul(2)
    }
}

/// A point in time, both monotonic (for scheduling) and wall (for reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic.
    pub mono: Instant,
    /// Wall clock.
    pub wall: DateTime<Utc>,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        Self {
            mono: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// `self` moved forward by `d` (for tests and schedules).
    pub fn plus(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            wall: self.wall + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
        }
    }
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// Gates the others until it succeeds once.
    Startup,
    /// Restarts the container when failing.
    Liveness,
    /// Decides readiness.
    Readiness,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run a command in the container; exit 0 is success.
    Exec(Vec<String>),
    /// Open a TCP connection to `host` (default: pod IP) and `port`.
    Tcp {
        /// Host override.
        host: Option<String>,
        /// Port.
        port: u16,
    },
    /// HTTP GET; 200..400 is success.
    Http {
        /// `HTTP` or `HTTPS`.
        scheme: String,
        /// Host override (default: pod IP).
        host: Option<String>,
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
}

/// One configured probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What to do.
    pub action: ProbeAction,
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10 s).
    pub period: Duration,
    /// `timeoutSeconds` (default 1 s).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
    /// Probe-level `terminationGracePeriodSeconds` for kills it causes.
    pub termination_grace: Option<Duration>,
}

/// A container's probes and name, as the machine needs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    /// Name.
    pub name: String,
    /// startupProbe.
    pub startup: Option<ProbeSpec>,
    /// livenessProbe.
    pub liveness: Option<ProbeSpec>,
    /// readinessProbe.
    pub readiness: Option<ProbeSpec>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit code (128 + signal when killed by one).
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, or a start failure reason.
    pub reason: String,
    /// Extra detail.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// A container's reported state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running: being created, backing off, or failing to start.
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerError`, ….
        reason: String,
        /// Detail.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// Start time.
        started_at: DateTime<Utc>,
    },
    /// Ended and not (yet) restarted.
    Terminated(Termination),
}

#[derive(Debug, Clone)]
struct ProbeState {
    spec: ProbeSpec,
    successes: u32,
    failures: u32,
    next_due: Instant,
    in_flight: bool,
}

impl ProbeState {
    fn new(spec: ProbeSpec, running_since: Instant) -> Self {
        Self {
            next_due: running_since + spec.initial_delay,
            spec,
            successes: 0,
            failures: 0,
            in_flight: false,
        }
    }
}

/// One container's lifecycle.
#[derive(Debug, Clone)]
pub struct ContainerMachine {
    spec: ContainerSpec,
    state: ContainerState,
    last: Option<Termination>,
    restart_count: i32,
    backoff_level: u32,
    next_start: Option<Instant>,
    starting: bool,
    instance: u64,
    running_since: Option<Instant>,
    started: bool,
    ready: bool,
    probes: Vec<(ProbeKind, ProbeState)>,
    kill_pending: Option<(String, Option<Duration>)>,
    killing: bool,
    ever_ran: bool,
}

impl ContainerMachine {
    fn new(spec: ContainerSpec, now: Instant) -> Self {
        Self {
            spec,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            backoff_level: 0,
            next_start: Some(now),
            starting: false,
            instance: 0,
            running_since: None,
            started: false,
            ready: false,
            probes: Vec::new(),
            kill_pending: None,
            killing: false,
            ever_ran: false,
        }
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// Current state.
    pub fn state(&self) -> &ContainerState {
        &self.state
    }
    /// The previous termination, shown as `lastState`.
    pub fn last_termination(&self) -> Option<&Termination> {
        self.last.as_ref()
    }
    /// Restarts so far.
    pub fn restart_count(&self) -> i32 {
        self.restart_count
    }
    /// Running and passing readiness (and startup).
    pub fn ready(&self) -> bool {
        self.ready
    }
    /// Startup probe passed (or none).
    pub fn started(&self) -> bool {
        self.started
    }
    /// Increments on every start; probe results carry it so stale ones are
    /// dropped.
    pub fn instance(&self) -> u64 {
        self.instance
    }
    /// True while running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    fn begin_running(&mut self, started_at: DateTime<Utc>, now: Instant) {
        self.state = ContainerState::Running { started_at };
        self.starting = false;
        self.next_start = None;
        self.instance += 1;
        self.running_since = Some(now);
        self.ever_ran = true;
        self.kill_pending = None;
        self.killing = false;
        self.probes = [
            (ProbeKind::Startup, &self.spec.startup),
            (ProbeKind::Liveness, &self.spec.liveness),
            (ProbeKind::Readiness, &self.spec.readiness),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.clone().map(|s| (k, ProbeState::new(s, now))))
        .collect();
        self.started = self.spec.startup.is_none();
        self.ready = self.started && self.spec.readiness.is_none();
    }
}

/// Something the worker should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start (or restart) the container.
    Start {
        /// Container name.
        container: String,
    },
    /// Stop the container (a failed liveness or startup probe).
    Kill {
        /// Container name.
        container: String,
        /// Why.
        reason: String,
        /// Grace period override from the probe.
        grace: Option<Duration>,
    },
    /// Run a probe; report with [`PodMachine::probe_result`].
    Probe {
        /// Container name.
        container: String,
        /// Which probe.
        kind: ProbeKind,
        /// The container instance probed.
        instance: u64,
        /// What to do.
        action: ProbeAction,
        /// Time limit.
        timeout: Duration,
    },
}

/// Kubernetes pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not all containers have started.
    Pending,
    /// All started; at least one running or restarting.
    Running,
    /// All terminated successfully and will not restart.
    Succeeded,
    /// All terminated, at least one failed, none will restart.
    Failed,
}

impl Phase {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// The whole pod.
#[derive(Debug, Clone)]
pub struct PodMachine {
    name: String,
    policy: RestartPolicy,
    backoff: Backoff,
    containers: Vec<ContainerMachine>,
    sandbox_ready: bool,
    terminating: bool,
}

impl PodMachine {
    /// A pod whose containers all wait for the sandbox.
    pub fn new(
        name: impl Into<String>,
        policy: RestartPolicy,
        backoff: Backoff,
        containers: Vec<ContainerSpec>,
        now: Now,
    ) -> Self {
        Self {
            name: name.into(),
            policy,
            backoff,
            containers: containers
                .into_iter()
                .map(|c| ContainerMachine::new(c, now.mono))
                .collect(),
            sandbox_ready: false,
            terminating: false,
        }
    }

    /// The containers, in spec order.
    pub fn containers(&self) -> &[ContainerMachine] {
        &self.containers
    }

    /// One container.
    pub fn container(&self, name: &str) -> Option<&ContainerMachine> {
        self.containers.iter().find(|c| c.spec.name == name)
    }

    fn get(&mut self, name: &str) -> Option<&mut ContainerMachine> {
        self.containers.iter_mut().find(|c| c.spec.name == name)
    }

    /// The restart policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Whether the sandbox (network, namespaces) is up.
    pub fn is_sandbox_ready(&self) -> bool {
        self.sandbox_ready
    }

    /// The sandbox is up: containers may start.
    pub fn sandbox_ready(&mut self) {
        self.sandbox_ready = true;
    }

    /// Sandbox creation failed; containers keep waiting and show why.
    pub fn sandbox_failed(&mut self, message: &str) {
        for c in &mut self.containers {
            if !c.ever_ran {
                c.state = ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: Some(message.to_owned()),
                };
            }
        }
    }

    /// Restores a restart count remembered across an agent restart.
    pub fn set_restart_count(&mut self, name: &str, count: i32) {
        if let Some(c) = self.get(name) {
            c.restart_count = count;
            c.ever_ran |= count > 0;
        }
    }

    /// A container found already running (adopted after an agent restart).
    pub fn adopted(&mut self, name: &str, started_at: DateTime<Utc>, now: Now) {
        if let Some(c) = self.get(name) {
            c.begin_running(started_at, now.mono);
        }
    }

    /// The worker started the container.
    pub fn started(&mut self, name: &str, now: Now) {
        if let Some(c) = self.get(name) {
            if c.ever_ran {
                c.restart_count += 1;
            }
            c.begin_running(now.wall, now.mono);
        }
    }

    /// Starting the container failed (before it ran); retried with back-off.
    pub fn start_failed(&mut self, name: &str, reason: &str, message: &str, now: Now) {
        let backoff = self.backoff;
        let terminating = self.terminating;
        if let Some(c) = self.get(name) {
            c.starting = false;
            c.state = ContainerState::Waiting {
                reason: reason.to_owned(),
                message: Some(message.to_owned()),
            };
            c.backoff_level = c.backoff_level.saturating_add(1);
            c.next_start =
                (!terminating).then(|| now.mono + backoff.delay(c.backoff_level).max(backoff.base));
        }
    }

    /// The container's process ended with `exit_code` (and `signal`).
    pub fn exited(&mut self, name: &str, exit_code: i32, signal: Option<i32>, now: Now) {
        let (policy, backoff, terminating, pod) = (
            self.policy,
            self.backoff,
            self.terminating,
            self.name.clone(),
        );
        let Some(c) = self.get(name) else { return };
        let started_at = match &c.state {
            ContainerState::Running { started_at } => Some(*started_at),
            _ => None,
        };
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let term = Termination {
            exit_code,
            signal,
            reason: reason.into(),
            message: None,
            started_at,
            finished_at: now.wall,
        };
        let ran_for = c
            .running_since
            .map_or(Duration::ZERO, |s| now.mono.saturating_duration_since(s));
        c.running_since = None;
        c.ready = false;
        c.started = false;
        c.probes.clear();
        c.kill_pending = None;
        c.killing = false;
        if terminating || !policy.restarts(exit_code) {
            c.state = ContainerState::Terminated(term);
            c.next_start = None;
            return;
        }
        if ran_for >= backoff.reset_after() {
            c.backoff_level = 0;
        }
        let delay = backoff.delay(c.backoff_level);
        c.backoff_level = c.backoff_level.saturating_add(1);
        c.last = Some(term.clone());
        c.next_start = Some(now.mono + delay);
        c.state = if delay.is_zero() {
            ContainerState::Terminated(term)
        } else {
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container={} pod={pod}",
                    human(delay),
                    c.spec.name
                )),
            }
        };
    }

    /// A probe finished. Stale results (another instance, not running) are
    /// ignored.
    pub fn probe_result(
        &mut self,
        name: &str,
        kind: ProbeKind,
        instance: u64,
        success: bool,
        now: Now,
    ) {
        let Some(c) = self.get(name) else { return };
        if c.instance != instance || !c.is_running() {
            return;
        }
        let since = c.running_since.unwrap_or(now.mono);
        let mut newly_started = false;
        let mut kill = None;
        let mut readiness = None;
        if let Some((_, p)) = c.probes.iter_mut().find(|(k, _)| *k == kind) {
            p.in_flight = false;
            p.next_due = now.mono + p.spec.period;
            if success {
                p.failures = 0;
                p.successes = p.successes.saturating_add(1);
                if p.successes >= p.spec.success_threshold.max(1) {
                    match kind {
                        ProbeKind::Startup => newly_started = true,
                        ProbeKind::Readiness => readiness = Some(true),
                        ProbeKind::Liveness => {}
                    }
                }
            } else {
                p.successes = 0;
                p.failures = p.failures.saturating_add(1);
                if p.failures >= p.spec.failure_threshold.max(1) {
                    match kind {
                        ProbeKind::Readiness => readiness = Some(false),
                        ProbeKind::Liveness | ProbeKind::Startup => {
                            p.failures = 0;
                            let what = if kind == ProbeKind::Liveness {
                                "liveness"
                            } else {
                                "startup"
                            };
                            kill = Some((
                                format!("container {name} failed {what} probe, will be restarted"),
                                p.spec.termination_grace,
                            ));
                        }
                    }
                }
            }
        }
        if newly_started && !c.started {
            c.started = true;
            // Liveness and readiness start after startup, honouring their
            // initial delays from the container start.
            for (k, p) in &mut c.probes {
                if *k != ProbeKind::Startup {
                    p.next_due = (since + p.spec.initial_delay).max(now.mono);
                }
            }
            c.ready = c.spec.readiness.is_none();
        }
        if let Some(r) = readiness {
            c.ready = r && c.started;
        }
        if let Some(k) = kill
            && !c.killing
        {
            c.ready = false;
            c.kill_pending = Some(k);
        }
    }

    /// Stop everything: no more starts or probes.
    pub fn set_terminating(&mut self) {
        self.terminating = true;
        for c in &mut self.containers {
            c.next_start = None;
            c.ready = false;
        }
    }

    /// Whether the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.terminating
    }

    /// The actions due at `now`; each is handed out once.
    pub fn due_actions(&mut self, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.terminating || !self.sandbox_ready {
            return out;
        }
        for c in &mut self.containers {
            if let Some((reason, grace)) = c.kill_pending.take() {
                c.killing = true;
                out.push(Action::Kill {
                    container: c.spec.name.clone(),
                    reason,
                    grace,
                });
                continue;
            }
            if !c.is_running() {
                if !c.starting && c.next_start.is_some_and(|t| t <= now.mono) {
                    c.starting = true;
                    out.push(Action::Start {
                        container: c.spec.name.clone(),
                    });
                }
                continue;
            }
            if c.killing {
                continue;
            }
            let started = c.started;
            for (kind, p) in &mut c.probes {
                let eligible = if *kind == ProbeKind::Startup {
                    !started
                } else {
                    started
                };
                if eligible && !p.in_flight && p.next_due <= now.mono {
                    p.in_flight = true;
                    out.push(Action::Probe {
                        container: c.spec.name.clone(),
                        kind: *kind,
                        instance: c.instance,
                        action: p.spec.action.clone(),
                        timeout: p.spec.timeout,
                    });
                }
            }
        }
        out
    }

    /// The earliest time something becomes due, if anything is scheduled.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.terminating || !self.sandbox_ready {
            return None;
        }
        self.containers
            .iter()
            .flat_map(|c| {
                let start = (!c.is_running() && !c.starting)
                    .then_some(c.next_start)
                    .flatten();
                let probes = c
                    .probes
                    .iter()
                    .filter(|(k, p)| !p.in_flight && ((*k == ProbeKind::Startup) != c.started))
                    .map(|(_, p)| p.next_due);
                start.into_iter().chain(
                    if c.is_running() { Some(probes) } else { None }
                        .into_iter()
                        .flatten(),
                )
            })
            .min()
    }

    /// Kubelet's phase rule (`getPhase`), without init containers.
    pub fn phase(&self) -> Phase {
        let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.containers {
            match &c.state {
                ContainerState::Running { .. } => running += 1,
                ContainerState::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                ContainerState::Waiting { .. } => {
                    if c.last.is_some() {
                        stopped += 1;
                    } else {
                        waiting += 1;
                    }
                }
            }
        }
        if waiting > 0 || self.containers.is_empty() {
            return Phase::Pending;
        }
        if running > 0 {
            return Phase::Running;
        }
        if stopped > 0 {
            // A terminated container with a pending restart is "restarting".
            let restarting = self.containers.iter().any(|c| c.next_start.is_some());
            if self.policy == RestartPolicy::Always && restarting {
                return Phase::Running;
            }
            if stopped == succeeded {
                return Phase::Succeeded;
            }
            if self.policy == RestartPolicy::Never || !restarting {
                return Phase::Failed;
            }
            return Phase::Running;
        }
        Phase::Pending
    }

    /// All containers ready.
    pub fn containers_ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }

    /// Names of containers that are not ready, for condition messages.
    pub fn unready(&self) -> Vec<&str> {
        self.containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.spec.name.as_str())
            .collect()
    }
}

/// `10s`, `1m20s`, `250ms`: how kubelet prints back-off delays.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m0s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            base: 200 * MS,
            max: 1600 * MS,
        }
    }

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            ..ContainerSpec::default()
        }
    }

    fn probe(action_port: u16, period_ms: u32, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: ProbeAction::Tcp {
                host: None,
                port: action_port,
            },
            initial_delay: Duration::ZERO,
            period: period_ms * MS,
            timeout: 100 * MS,
            success_threshold: success,
            failure_threshold: failure,
            termination_grace: None,
        }
    }

    fn ready_pod(policy: RestartPolicy, specs: Vec<ContainerSpec>) -> (PodMachine, Now) {
        let t0 = Now::current();
        let mut m = PodMachine::new("p", policy, backoff(), specs, t0);
        assert!(m.due_actions(t0).is_empty(), "nothing before the sandbox");
        assert_eq!(m.phase(), Phase::Pending);
        m.sandbox_ready();
        (m, t0)
    }

    fn starts(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { container } => Some(container.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_sequence_matches_kubelet() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        };
        let seq: Vec<u64> = (0..8).map(|l| b.delay(l).as_secs()).collect();
        assert_eq!(seq, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(200), Duration::from_secs(300));
        assert_eq!(human(Duration::from_secs(80)), "1m20s");
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn crash_loop_backs_off_and_counts_restarts() {
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![spec("c")]);
        assert_eq!(starts(&m.due_actions(t0)), ["c"]);
        assert!(m.due_actions(t0).is_empty(), "start handed out once");
        m.started("c", t0);
        assert_eq!(m.phase(), Phase::Running);
        assert!(
            m.containers_ready(),
            "no readiness probe: ready when running"
        );

        // First crash: immediate restart, shown as Terminated meanwhile.
        let t1 = t0.plus(50 * MS);
        m.exited("c", 3, None, t1);
        let c = m.container("c").expect("c");
        assert!(
            matches!(c.state(), ContainerState::Terminated(t) if t.exit_code == 3 && t.reason == "Error")
        );
        assert_eq!(m.phase(), Phase::Running, "restarting under Always");
        assert_eq!(starts(&m.due_actions(t1)), ["c"]);
        m.started("c", t1);
        assert_eq!(m.container("c").expect("c").restart_count(), 1);

        // Second crash: CrashLoopBackOff for base, then 2·base.
        let mut t = t1;
        for (expected_delay, restarts) in [(200, 2), (400, 3), (800, 4), (1600, 5), (1600, 6)] {
            t = t.plus(10 * MS);
            m.exited("c", 1, None, t);
            let c = m.container("c").expect("c");
            match c.state() {
                ContainerState::Waiting { reason, message } => {
                    assert_eq!(reason, "CrashLoopBackOff");
                    assert!(
                        message
                            .as_deref()
                            .expect("msg")
                            .contains("container=c pod=p")
                    );
                }
                other => panic!("expected back-off, got {other:?}"),
            }
            assert_eq!(c.last_termination().expect("last").exit_code, 1);
            assert!(!m.containers_ready());
            assert_eq!(m.next_wakeup(), Some(t.mono + expected_delay * MS));
            assert!(
                m.due_actions(t.plus((expected_delay - 1) * MS)).is_empty(),
                "too early"
            );
            t = t.plus(expected_delay * MS);
            assert_eq!(starts(&m.due_actions(t)), ["c"]);
            m.started("c", t);
            assert_eq!(m.container("c").expect("c").restart_count(), restarts);
        }

        // A long run resets the back-off: next restart is immediate again.
        let late = t.plus(backoff().reset_after());
        m.exited("c", 1, None, late);
        assert_eq!(starts(&m.due_actions(late)), ["c"]);
    }

    #[test]
    fn restart_policies_decide_restart_and_phase() {
        // Never: exit 0 → Succeeded, non-zero → Failed, no restarts.
        let (mut m, t0) = ready_pod(RestartPolicy::Never, vec![spec("a"), spec("b")]);
        m.due_actions(t0);
        m.started("a", t0);
        assert_eq!(m.phase(), Phase::Pending, "b not started yet");
        m.started("b", t0);
        m.exited("a", 0, None, t0);
        assert_eq!(m.phase(), Phase::Running);
        m.exited("b", 0, None, t0);
        assert_eq!(m.phase(), Phase::Succeeded);
        assert!(m.due_actions(t0.plus(Duration::from_secs(60))).is_empty());

        let (mut m, t0) = ready_pod(RestartPolicy::Never, vec![spec("a")]);
        m.due_actions(t0);
        m.started("a", t0);
        m.exited("a", 2, Some(9), t0);
        assert_eq!(m.phase(), Phase::Failed);

        // OnFailure: failure restarts, success completes.
        let (mut m, t0) = ready_pod(RestartPolicy::OnFailure, vec![spec("a")]);
        m.due_actions(t0);
        m.started("a", t0);
        m.exited("a", 1, None, t0);
        assert_eq!(m.phase(), Phase::Running);
        assert_eq!(starts(&m.due_actions(t0)), ["a"]);
        m.started("a", t0);
        m.exited("a", 0, None, t0);
        assert_eq!(m.phase(), Phase::Succeeded);
        assert_eq!(m.container("a").expect("a").restart_count(), 1);

        // Always restarts even a clean exit.
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![spec("a")]);
        m.due_actions(t0);
        m.started("a", t0);
        m.exited("a", 0, None, t0);
        assert_eq!(starts(&m.due_actions(t0)), ["a"]);
    }

    #[test]
    fn readiness_needs_threshold_successes_and_drops_on_failures() {
        let mut s = spec("web");
        s.readiness = Some(probe(80, 100, 2, 2));
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![s]);
        m.due_actions(t0);
        m.started("web", t0);
        assert!(!m.containers_ready(), "not ready before the first probe");
        let inst = m.container("web").expect("web").instance();

        let probe_due = |m: &mut PodMachine, t: Now| -> usize {
            m.due_actions(t)
                .iter()
                .filter(|a| matches!(a, Action::Probe { .. }))
                .count()
        };
        assert_eq!(probe_due(&mut m, t0), 1);
        assert_eq!(probe_due(&mut m, t0), 0, "one in flight at a time");
        m.probe_result("web", ProbeKind::Readiness, inst, true, t0);
        assert!(!m.containers_ready(), "success threshold is 2");
        let t1 = t0.plus(100 * MS);
        assert_eq!(probe_due(&mut m, t0.plus(99 * MS)), 0, "period not elapsed");
        assert_eq!(probe_due(&mut m, t1), 1);
        m.probe_result("web", ProbeKind::Readiness, inst, true, t1);
        assert!(m.containers_ready());

        let t2 = t1.plus(100 * MS);
        m.due_actions(t2);
        m.probe_result("web", ProbeKind::Readiness, inst, false, t2);
        assert!(m.containers_ready(), "one failure is below the threshold");
        m.probe_result("web", ProbeKind::Readiness, inst, false, t2);
        assert!(!m.containers_ready());
        assert_eq!(m.unready(), ["web"]);

        // Results for an older instance are ignored.
        m.probe_result("web", ProbeKind::Readiness, inst + 7, true, t2);
        m.probe_result("web", ProbeKind::Readiness, inst + 7, true, t2);
        assert!(!m.containers_ready());
    }

    #[test]
    fn liveness_failure_kills_once_and_restart_follows_policy() {
        let mut s = spec("app");
        s.liveness = Some(probe(80, 100, 1, 3));
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![s]);
        m.due_actions(t0);
        m.started("app", t0);
        let inst = m.container("app").expect("app").instance();
        let mut t = t0;
        for _ in 0..3 {
            let acts = m.due_actions(t);
            assert!(
                acts.iter().any(|a| matches!(
                    a,
                    Action::Probe {
                        kind: ProbeKind::Liveness,
                        ..
                    }
                )),
                "{acts:?}"
            );
            m.probe_result("app", ProbeKind::Liveness, inst, false, t);
            t = t.plus(100 * MS);
        }
        let acts = m.due_actions(t);
        assert!(
            matches!(&acts[..], [Action::Kill { container, .. }] if container == "app"),
            "{acts:?}"
        );
        assert!(
            m.due_actions(t.plus(Duration::from_secs(1))).is_empty(),
            "kill handed out once, no probes while killing"
        );
        m.exited("app", 143, Some(15), t);
        assert_eq!(starts(&m.due_actions(t)), ["app"], "restarted under Always");
        m.started("app", t);
        assert_eq!(m.container("app").expect("app").restart_count(), 1);
    }

    #[test]
    fn startup_probe_gates_liveness_and_readiness() {
        let mut s = spec("slow");
        s.startup = Some(probe(80, 100, 1, 10));
        s.liveness = Some(probe(80, 100, 1, 1));
        s.readiness = Some(probe(80, 100, 1, 1));
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![s]);
        m.due_actions(t0);
        m.started("slow", t0);
        let inst = m.container("slow").expect("c").instance();
        let kinds = |acts: Vec<Action>| -> Vec<ProbeKind> {
            acts.into_iter()
                .filter_map(|a| match a {
                    Action::Probe { kind, .. } => Some(kind),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(kinds(m.due_actions(t0)), [ProbeKind::Startup]);
        m.probe_result("slow", ProbeKind::Startup, inst, false, t0);
        assert!(!m.container("slow").expect("c").started());
        let t1 = t0.plus(100 * MS);
        assert_eq!(kinds(m.due_actions(t1)), [ProbeKind::Startup]);
        m.probe_result("slow", ProbeKind::Startup, inst, true, t1);
        assert!(m.container("slow").expect("c").started());
        assert!(!m.containers_ready(), "readiness still has to pass");
        assert_eq!(
            kinds(m.due_actions(t1)),
            [ProbeKind::Liveness, ProbeKind::Readiness]
        );
        m.probe_result("slow", ProbeKind::Readiness, inst, true, t1);
        assert!(m.containers_ready());
    }

    #[test]
    fn failed_starts_wait_with_the_reason_and_do_not_count() {
        let (mut m, t0) = ready_pod(RestartPolicy::Never, vec![spec("c")]);
        m.due_actions(t0);
        m.start_failed("c", "CreateContainerError", "no command", t0);
        match m.container("c").expect("c").state() {
            ContainerState::Waiting { reason, message } => {
                assert_eq!(reason, "CreateContainerError");
                assert_eq!(message.as_deref(), Some("no command"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.phase(), Phase::Pending);
        assert!(m.due_actions(t0.plus(100 * MS)).is_empty());
        assert_eq!(
            starts(&m.due_actions(t0.plus(200 * MS))),
            ["c"],
            "retried after back-off even under Never"
        );
        assert_eq!(m.container("c").expect("c").restart_count(), 0);
    }

    #[test]
    fn terminating_stops_starts_and_restarts() {
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![spec("c")]);
        m.due_actions(t0);
        m.started("c", t0);
        m.set_terminating();
        m.exited("c", 143, Some(15), t0);
        assert!(m.due_actions(t0.plus(Duration::from_secs(10))).is_empty());
        assert!(matches!(
            m.container("c").expect("c").state(),
            ContainerState::Terminated(_)
        ));
    }

    #[test]
    fn adopted_containers_run_with_their_restart_count() {
        let (mut m, t0) = ready_pod(RestartPolicy::Always, vec![spec("c")]);
        m.set_restart_count("c", 4);
        m.adopted("c", t0.wall, t0);
        assert!(
            m.due_actions(t0).is_empty(),
            "no start for an adopted container"
        );
        assert_eq!(m.phase(), Phase::Running);
        m.exited("c", 1, None, t0);
        m.due_actions(t0.plus(Duration::from_secs(5)));
        m.started("c", t0.plus(Duration::from_secs(5)));
        assert_eq!(m.container("c").expect("c").restart_count(), 5);
    }
}
