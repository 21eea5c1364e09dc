//! Pod sandboxes: the per-pod network namespace, veth, IPC/UTS/mount
//! namespaces, cgroup and data directory, and the container processes run
//! inside them.
//!
//! [`PodRuntime`] is the thin seam between the pod worker's logic and the
//! machine: [`linux::LinuxRuntime`] does it for real (root), tests of the
//! worker logic use a fake.
//!
//! - [`names`]: names of netns, veths, cgroups derived from the pod uid;
//! - [`resolv`]: the pod's resolv.conf;
//! - [`cgroup`]: cgroup v2 groups and limits;
//! - [`launch`]: the shim/fork/setns/exec of a container;
//! - [`procfs`]: pid identity (start times) and pidfds;
//! - [`mounts`]: mountinfo and the private namespace-file directory;
//! - [`linux`]: the real runtime.

pub mod cgroup;
pub mod launch;
pub mod linux;
pub mod mounts;
pub mod names;
pub mod procfs;
pub mod resolv;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::container::ContainerLaunch;
use crate::error::Result;
use crate::lifecycle::ProbeAction;
use crate::state::ProcessRecord;

pub use launch::ExitStatus;

/// What a sandbox is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Pod uid (names everything).
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// UTS hostname.
    pub hostname: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Prefix length of the node pod CIDR.
    pub prefix_len: u8,
    /// The bridge address (default route).
    pub gateway: Ipv4Addr,
    /// resolv.conf contents.
    pub resolv_conf: String,
    /// emptyDir volume names.
    pub empty_dirs: Vec<String>,
}

/// A sandbox that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Pod uid.
    pub uid: String,
    /// Network namespace name.
    pub netns: String,
    /// Node-side veth.
    pub veth: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// `<data_dir>/pods/<uid>`.
    pub pod_dir: PathBuf,
}

/// A container process as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Still running.
    Running,
    /// Ended; `None` if its status could not be recovered (its shim died).
    Exited(Option<ExitStatus>),
}

/// The machine side of running pods. Implementations are idempotent where
/// noted, because a worker retries after errors and after agent restarts.
#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// Makes (or completes) the sandbox. Idempotent.
    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox>;

    /// Starts a container in the sandbox, detached from the agent.
    async fn start_container(
        &self,
        sandbox: &Sandbox,
        launch: &ContainerLaunch,
    ) -> Result<ProcessRecord>;

    /// Re-attaches to a recorded process after an agent restart; false if it
    /// is gone (or its pid now names another process).
    fn adopt(&self, sandbox: &Sandbox, container: &str, record: &ProcessRecord) -> bool;

    /// Whether the process still runs, or how it ended.
    fn poll(&self, sandbox: &Sandbox, container: &str, record: &ProcessRecord) -> ProcessState;

    /// Signals the container's process group.
    fn signal(
        &self,
        sandbox: &Sandbox,
        container: &str,
        record: &ProcessRecord,
        signal: Signal,
    ) -> Result<()>;

    /// Runs a probe; `Err` carries the failure message.
    async fn probe(
        &self,
        sandbox: &Sandbox,
        launch: &ContainerLaunch,
        action: &ProbeAction,
        timeout: Duration,
    ) -> std::result::Result<(), String>;

    /// Kills whatever is left of the pod and removes its sandbox: cgroups,
    /// namespaces, veth, data directory. Idempotent; works from the uid
    /// alone so it can clean up after a crash.
    async fn remove_sandbox(&self, uid: &str) -> Result<()>;
}
