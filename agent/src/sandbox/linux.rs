//! [`LinuxRuntime`]: pod sandboxes for real (root).
//!
//! Per pod:
//! - network namespace `skiff-pod-<id>` (`ip netns add`, so `ip netns`
//!   lists it and it persists without a process), loopback up, `eth0` the
//!   pod end of veth `skv<id>` whose node end is on the node bridge, the
//!   pod IP on `eth0`, default route via the bridge address;
//! - UTS, IPC and mount namespaces made persistent as bind mounts of their
//!   nsfs files under `<data_dir>/ns/<id>/` (`unshare --uts=… --ipc=…
//!   --mount=…`); the mount namespace has the pod's resolv.conf bound over
//!   `/etc/resolv.conf`, and the UTS namespace the pod's hostname;
//! - a cgroup `<root>/skiff/<node>/pod-<uid>`, one child group per container;
//! - `<data_dir>/pods/<uid>/`: resolv.conf, `volumes/<emptyDir>`,
//!   `<container>.log`, and `run/` with the shims' pid and exit files.
//!
//! Containers are started by [`super::launch`]; each gets its own mount
//! namespace cloned from the pod's, holding its volume binds.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::cgroup::Cgroups;
use super::launch::{self, Bind, Namespaces};
use super::procfs::{self, PidFd};
use super::{ExitStatus, PodRuntime, ProcessState, Sandbox, SandboxSpec, mounts, names};
use crate::command;
use crate::container::{
    BindMount, CREATE_CONTAINER_CONFIG_ERROR, CREATE_CONTAINER_ERROR, ContainerLaunch,
};
use crate::error::{AgentError, Result};
use crate::lifecycle::ProbeAction;
use crate::state::ProcessRecord;

/// Where `ip netns` keeps its namespace files.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";
/// The namespace files of one pod.
const NS_KINDS: [&str; 3] = ["uts", "ipc", "mnt"];

/// How a tracked container's shim is held.
#[derive(Debug)]
enum Shim {
    /// Started by this agent: our child.
    Child(Child),
    /// Adopted: maybe our child (same process, restarted agent object),
    /// maybe init's.
    Adopted(Option<PidFd>),
}

#[derive(Debug)]
struct Tracked {
    pid: i32,
    pidfd: Option<PidFd>,
    shim: Shim,
}

impl Tracked {
    /// Reaps the shim if it is done; true once it has exited.
    fn shim_done(&mut self) -> bool {
        match &mut self.shim {
            Shim::Child(c) => !matches!(c.try_wait(), Ok(None)),
            Shim::Adopted(Some(fd)) => {
                fd.reap_if_child();
                fd.has_exited()
            }
            Shim::Adopted(None) => true,
        }
    }
}

/// The real runtime.
#[derive(Debug)]
pub struct LinuxRuntime {
    data_dir: PathBuf,
    bridge: String,
    cgroups: Cgroups,
    tracked: Mutex<HashMap<(String, String), Tracked>>,
}

impl LinuxRuntime {
    /// A runtime keeping its files under `data_dir`, attaching pods to
    /// `bridge`, with cgroups from `cgroups`. Makes `<data_dir>/ns` a
    /// private mount for namespace files.
    pub fn new(data_dir: &Path, bridge: &str, cgroups: Cgroups) -> Result<Self> {
        mounts::ensure_private_dir(&ns_root(data_dir))?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            bridge: bridge.to_owned(),
            cgroups,
            tracked: Mutex::new(HashMap::new()),
        })
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }

    fn run_file(&self, uid: &str, container: &str, ext: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("run")
            .join(format!("{}.{ext}", names::sanitize(container)))
    }

    fn open_namespaces(&self, sandbox: &Sandbox) -> Result<Namespaces> {
        let open = |p: PathBuf| {
            File::open(&p).map_err(|e| AgentError::io(format!("open {}", p.display()), e))
        };
        let dir = ns_dir(&self.data_dir, &sandbox.uid);
        Ok(Namespaces {
            net: open(Path::new(NETNS_RUN_DIR).join(&sandbox.netns))?,
            ipc: open(dir.join("ipc"))?,
            uts: open(dir.join("uts"))?,
            mnt: open(dir.join("mnt"))?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Tracked>> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_exit(&self, uid: &str, container: &str) -> Option<ExitStatus> {
        std::fs::read_to_string(self.run_file(uid, container, "exit"))
            .ok()
            .and_then(|t| launch::parse_exit_file(&t))
    }

    /// Makes the UTS/IPC/mount namespaces if they are not all there.
    async fn ensure_pod_namespaces(&self, spec: &SandboxSpec, resolv: &Path) -> Result<()> {
        let dir = ns_dir(&self.data_dir, &spec.uid);
        let mounted = mounts::current_mount_points()?;
        let files: Vec<PathBuf> = NS_KINDS.iter().map(|k| dir.join(k)).collect();
        if !files.iter().all(|f| mounted.contains(f)) {
            for f in &files {
                mounts::detach(f)?;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| AgentError::io(format!("create {}", dir.display()), e))?;
            for f in &files {
                File::create(f)
                    .map_err(|e| AgentError::io(format!("create {}", f.display()), e))?;
            }
            let arg = |k: &str, f: &Path| format!("--{k}={}", f.display());
            let mut args = vec![
                arg("uts", &files[0]),
                arg("ipc", &files[1]),
                arg("mount", &files[2]),
                "--propagation".into(),
                "private".into(),
                "--".into(),
            ];
            if Path::new("/etc/resolv.conf").exists() {
                args.extend([
                    "mount".into(),
                    "--bind".into(),
                    resolv.display().to_string(),
                    "/etc/resolv.conf".into(),
                ]);
            } else {
                tracing::warn!(pod = %spec.name, "node has no /etc/resolv.conf to cover; pod keeps the node's (none)");
                args.push("true".into());
            }
            command::checked("unshare", &args).await?;
        }
        let uts = files[0].clone();
        let hostname = spec.hostname.clone();
        // setns(CLONE_NEWUTS) is allowed for one thread of a multi-threaded
        // process; a throwaway thread sets the name and ends.
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let f = File::open(&uts)
                        .map_err(|e| AgentError::io(format!("open {}", uts.display()), e))?;
                    nix::sched::setns(&f, CloneFlags::CLONE_NEWUTS)
                        .map_err(|e| AgentError::sys(format!("setns {}", uts.display()), e))?;
                    nix::unistd::sethostname(&hostname)
                        .map_err(|e| AgentError::sys(format!("sethostname {hostname}"), e))
                })
                .join()
                .unwrap_or_else(|_| Err(AgentError::Config("hostname thread panicked".into())))
            })
        })
        .await
        .map_err(|e| AgentError::Config(format!("hostname task: {e}")))?
    }

    /// Checks and prepares a container's volume mounts.
    fn prepare_binds(mounts: &[BindMount]) -> Result<Vec<Bind>> {
        let err = |reason: &'static str, message: String| AgentError::PodSpec { reason, message };
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            match m.host_path_type.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(&m.source).map_err(|e| {
                    AgentError::io(format!("create hostPath {}", m.source.display()), e)
                })?,
                Some("FileOrCreate") if !m.source.exists() => {
                    File::create(&m.source).map_err(|e| {
                        AgentError::io(format!("create hostPath {}", m.source.display()), e)
                    })?;
                }
                None if !m.source.exists() => {
                    // emptyDir sub-paths (and untyped hostPaths, as Docker-era
                    // kubelets did) are created as directories.
                    std::fs::create_dir_all(&m.source)
                        .map_err(|e| AgentError::io(format!("create {}", m.source.display()), e))?;
                }
                _ => {}
            }
            let meta = std::fs::metadata(&m.source).map_err(|_| {
                err(
                    CREATE_CONTAINER_CONFIG_ERROR,
                    format!("volume source {} does not exist", m.source.display()),
                )
            })?;
            let ft = meta.file_type();
            let ok = match m.host_path_type.as_deref() {
                Some("Directory" | "DirectoryOrCreate") => ft.is_dir(),
                Some("File" | "FileOrCreate") => ft.is_file(),
                Some("Socket") => ft.is_socket(),
                Some("CharDevice") => ft.is_char_device(),
                Some("BlockDevice") => ft.is_block_device(),
                _ => true,
            };
            if !ok {
                return Err(err(
                    CREATE_CONTAINER_CONFIG_ERROR,
                    format!(
                        "hostPath {} is not of type {}",
                        m.source.display(),
                        m.host_path_type.as_deref().unwrap_or_default()
                    ),
                ));
            }
            let target = std::fs::metadata(&m.target).map_err(|_| {
                err(
                    CREATE_CONTAINER_ERROR,
                    format!(
                        "mountPath {} does not exist on the node: without images, mount points must already exist",
                        m.target.display()
                    ),
                )
            })?;
            if target.is_dir() != ft.is_dir() {
                return Err(err(
                    CREATE_CONTAINER_ERROR,
                    format!(
                        "cannot mount {} over {}: one is a directory, the other not",
                        m.source.display(),
                        m.target.display()
                    ),
                ));
            }
            out.push(Bind {
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
            });
        }
        Ok(out)
    }

    async fn exec_probe(
        &self,
        sandbox: &Sandbox,
        launch: &ContainerLaunch,
        cmd: &[String],
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let Some((program, args)) = cmd.split_first() else {
            return Err("empty exec probe".into());
        };
        let namespaces = self.open_namespaces(sandbox).map_err(|e| e.to_string())?;
        let binds = Self::prepare_binds(&launch.mounts).map_err(|e| e.to_string())?;
        let cgroup = self.cgroups.container_dir(&sandbox.uid, &launch.name);
        let cgroup = cgroup.exists().then_some(cgroup);
        let std_cmd = launch::command_in(
            program,
            args,
            &launch.env,
            &launch.working_dir,
            &namespaces,
            &binds,
            cgroup.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("exec probe {program}: {e}"))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        drop(namespaces);
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                text.truncate(1024);
                Err(format!(
                    "exec probe {program} failed ({}): {}",
                    out.status,
                    text.trim()
                ))
            }
            Ok(Err(e)) => Err(format!("exec probe {program}: {e}")),
            Err(_) => {
                // The probe leads its own process group; take its children too.
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Err(format!("exec probe {program} timed out after {timeout:?}"))
            }
        }
    }
}

/// `<data_dir>/ns`: the private mount holding pods' namespace files.
pub fn ns_root(data_dir: &Path) -> PathBuf {
    data_dir.join("ns")
}

/// `<data_dir>/ns/<id>`.
pub fn ns_dir(data_dir: &Path, uid: &str) -> PathBuf {
    ns_root(data_dir).join(names::pod_id(uid))
}

/// True if `ip link show dev <name>` finds the interface in the current
/// network namespace.
async fn link_exists(name: &str) -> bool {
    command::output("ip", &["link", "show", "dev", name])
        .await
        .is_ok_and(|o| o.status.success())
}

#[async_trait::async_trait]
impl PodRuntime for LinuxRuntime {
    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let uid = &spec.uid;
        let pod_dir = self.pod_dir(uid);
        for d in [
            pod_dir.clone(),
            pod_dir.join("run"),
            pod_dir.join("volumes"),
        ]
        .into_iter()
        .chain(
            spec.empty_dirs
                .iter()
                .map(|v| pod_dir.join("volumes").join(names::sanitize(v))),
        ) {
            std::fs::create_dir_all(&d)
                .map_err(|e| AgentError::io(format!("create {}", d.display()), e))?;
        }
        let resolv = pod_dir.join("resolv.conf");
        std::fs::write(&resolv, &spec.resolv_conf)
            .map_err(|e| AgentError::io(format!("write {}", resolv.display()), e))?;
        self.cgroups.create_pod(uid)?;

        let netns = names::netns_name(uid);
        if !Path::new(NETNS_RUN_DIR).join(&netns).exists() {
            command::checked("ip", &["netns", "add", &netns]).await?;
        }
        command::checked("ip", &["-n", &netns, "link", "set", "lo", "up"]).await?;
        let veth = names::veth_name(uid);
        if !link_exists(&veth).await {
            command::checked(
                "ip",
                &[
                    "link",
                    "add",
                    &veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    names::POD_IFNAME,
                    "netns",
                    &netns,
                ],
            )
            .await?;
        }
        command::checked(
            "ip",
            &["link", "set", "dev", &veth, "master", &self.bridge, "up"],
        )
        .await?;
        let addr = format!("{}/{}", spec.ip, spec.prefix_len);
        command::checked(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "replace",
                &addr,
                "dev",
                names::POD_IFNAME,
            ],
        )
        .await?;
        command::checked(
            "ip",
            &["-n", &netns, "link", "set", "dev", names::POD_IFNAME, "up"],
        )
        .await?;
        let gw = spec.gateway.to_string();
        command::checked(
            "ip",
            &[
                "-n",
                &netns,
                "route",
                "replace",
                "default",
                "via",
                &gw,
                "dev",
                names::POD_IFNAME,
            ],
        )
        .await?;

        self.ensure_pod_namespaces(spec, &resolv).await?;
        tracing::debug!(pod = %spec.name, namespace = %spec.namespace, %netns, ip = %spec.ip, "sandbox ready");
        Ok(Sandbox {
            uid: uid.clone(),
            netns,
            veth,
            ip: spec.ip,
            pod_dir,
        })
    }

    async fn start_container(
        &self,
        sandbox: &Sandbox,
        launch: &ContainerLaunch,
    ) -> Result<ProcessRecord> {
        let binds = Self::prepare_binds(&launch.mounts)?;
        let cgroup = self
            .cgroups
            .create_container(&sandbox.uid, &launch.name, launch.limits)?;
        let namespaces = self.open_namespaces(sandbox)?;
        let log = sandbox
            .pod_dir
            .join(format!("{}.log", names::sanitize(&launch.name)));
        let pid_file = self.run_file(&sandbox.uid, &launch.name, "pid");
        let exit_file = self.run_file(&sandbox.uid, &launch.name, "exit");
        let started_at = chrono::Utc::now();
        let launched = launch::launch(&launch::LaunchSpec {
            program: &launch.program,
            args: &launch.args,
            env: &launch.env,
            working_dir: &launch.working_dir,
            namespaces: &namespaces,
            binds: &binds,
            cgroup: Some(&cgroup),
            log: &log,
            pid_file: &pid_file,
            exit_file: &exit_file,
        })
        .map_err(|e| match e {
            AgentError::Spawn { command, source } => AgentError::PodSpec {
                reason: CREATE_CONTAINER_ERROR,
                message: format!("failed to start `{command}`: {source}"),
            },
            other => other,
        })?;
        let pid = launched.pid;
        // Open the pidfd before reading the start time, so a fast exit is
        // seen as an exit and never confused with a recycled pid.
        let pidfd = PidFd::open(pid).ok();
        let start_ticks = procfs::start_ticks(pid).unwrap_or(0);
        let shim_pid = i32::try_from(launched.shim.id()).unwrap_or(0);
        let record = ProcessRecord {
            pid,
            start_ticks,
            shim_pid,
            shim_start_ticks: procfs::start_ticks(shim_pid).unwrap_or(0),
            started_at,
        };
        self.lock().insert(
            (sandbox.uid.clone(), launch.name.clone()),
            Tracked {
                pid,
                pidfd,
                shim: Shim::Child(launched.shim),
            },
        );
        tracing::info!(pod_uid = %sandbox.uid, container = %launch.name, pid, program = %launch.program, "container started");
        Ok(record)
    }

    fn adopt(&self, sandbox: &Sandbox, container: &str, record: &ProcessRecord) -> bool {
        let Some(pidfd) = PidFd::open_verified(record.pid, record.start_ticks) else {
            return false;
        };
        let shim = PidFd::open_verified(record.shim_pid, record.shim_start_ticks);
        self.lock().insert(
            (sandbox.uid.clone(), container.to_owned()),
            Tracked {
                pid: record.pid,
                pidfd: Some(pidfd),
                shim: Shim::Adopted(shim),
            },
        );
        tracing::info!(pod_uid = %sandbox.uid, container, pid = record.pid, "adopted running container");
        true
    }

    fn poll(&self, sandbox: &Sandbox, container: &str, record: &ProcessRecord) -> ProcessState {
        let key = (sandbox.uid.clone(), container.to_owned());
        let mut tracked = self.lock();
        let Some(t) = tracked.get_mut(&key).filter(|t| t.pid == record.pid) else {
            drop(tracked);
            return if procfs::is_same_process(record.pid, record.start_ticks)
                && self.adopt(sandbox, container, record)
            {
                ProcessState::Running
            } else {
                ProcessState::Exited(self.read_exit(&sandbox.uid, container))
            };
        };
        if t.pidfd.as_ref().is_some_and(|fd| !fd.has_exited()) {
            return ProcessState::Running;
        }
        // The container is gone; its status is complete once the shim has
        // written it and exited (microseconds later): until then report
        // Running and let the next poll pick the exit up.
        if !t.shim_done() {
            return ProcessState::Running;
        }
        tracked.remove(&key);
        drop(tracked);
        ProcessState::Exited(self.read_exit(&sandbox.uid, container))
    }

    fn signal(
        &self,
        sandbox: &Sandbox,
        container: &str,
        record: &ProcessRecord,
        signal: Signal,
    ) -> Result<()> {
        let alive = {
            let tracked = self.lock();
            match tracked.get(&(sandbox.uid.clone(), container.to_owned())) {
                Some(t) if t.pid == record.pid => {
                    t.pidfd.as_ref().is_some_and(|fd| !fd.has_exited())
                }
                _ => procfs::is_same_process(record.pid, record.start_ticks),
            }
        };
        if alive {
            match killpg(Pid::from_raw(record.pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(AgentError::sys(
                        format!("signal {signal} to process group {}", record.pid),
                        e,
                    ));
                }
            }
        }
        if signal == Signal::SIGKILL {
            // Also what left the process group.
            super::cgroup::kill_all(&self.cgroups.container_dir(&sandbox.uid, container));
        }
        Ok(())
    }

    async fn probe(
        &self,
        sandbox: &Sandbox,
        launch: &ContainerLaunch,
        action: &ProbeAction,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        match action {
            ProbeAction::Tcp { host, port } => {
                crate::probe::tcp(sandbox.ip, host.as_deref(), *port, timeout).await
            }
            ProbeAction::Http {
                scheme,
                host,
                port,
                path,
                headers,
            } => {
                crate::probe::http(
                    sandbox.ip,
                    scheme,
                    host.as_deref(),
                    *port,
                    path,
                    headers,
                    timeout,
                )
                .await
            }
            ProbeAction::Exec(cmd) => self.exec_probe(sandbox, launch, cmd, timeout).await,
        }
    }

    async fn remove_sandbox(&self, uid: &str) -> Result<()> {
        // Processes first: everything in the pod's cgroups dies.
        let cgroups = self.cgroups.clone();
        let owned_uid = uid.to_owned();
        tokio::task::spawn_blocking(move || cgroups.remove_pod(&owned_uid))
            .await
            .map_err(|e| AgentError::Config(format!("cgroup removal task: {e}")))??;
        let shims: Vec<Tracked> = {
            let mut tracked = self.lock();
            let keys: Vec<_> = tracked.keys().filter(|(u, _)| u == uid).cloned().collect();
            keys.into_iter()
                .filter_map(|k| tracked.remove(&k))
                .collect()
        };
        for mut t in shims {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.shim_done() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        remove_sandbox_blocking_parts(&self.data_dir, uid)?;
        let veth = names::veth_name(uid);
        if link_exists(&veth).await {
            command::checked("ip", &["link", "del", "dev", &veth]).await?;
        }
        let netns = names::netns_name(uid);
        if Path::new(NETNS_RUN_DIR).join(&netns).exists() {
            command::checked("ip", &["netns", "delete", &netns]).await?;
        }
        let pod_dir = self.pod_dir(uid);
        remove_pod_dir(&pod_dir)?;
        tracing::debug!(pod_uid = uid, %netns, "sandbox removed");
        Ok(())
    }
}

/// Unmounts and removes the pod's namespace files.
pub(crate) fn remove_sandbox_blocking_parts(data_dir: &Path, uid: &str) -> Result<()> {
    let dir = ns_dir(data_dir, uid);
    for k in NS_KINDS {
        mounts::detach(&dir.join(k))?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::io(format!("remove {}", dir.display()), e)),
    }
}

/// Removes a pod's data dir, refusing if anything is mounted below it (a
/// recursive delete must never walk into a bind of a node directory).
pub(crate) fn remove_pod_dir(pod_dir: &Path) -> Result<()> {
    let mounted = mounts::mounts_under(pod_dir)?;
    if !mounted.is_empty() {
        return Err(AgentError::Config(format!(
            "not removing {}: still mounted below it: {mounted:?}",
            pod_dir.display()
        )));
    }
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::io(format!("remove {}", pod_dir.display()), e)),
    }
}
