//! `skiff exec`: runs a command inside a pod's namespaces on this machine
//! (the machine running the pod's agent), like `kubectl exec` without a
//! container runtime in between.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use skiff_agent::sandbox::names;

use crate::client::kube_client;

#[derive(Args)]
#[command(
    long_about = "Runs a command inside a pod's namespaces on this machine (root).\n\n\
    With the container's process found (its cgroup under <cgroup2>/skiff/<node>/pod-<uid>/<container>), \
    the command enters its network, UTS, IPC and mount namespaces, so it sees the pod's hostname \
    and its /etc/resolv.conf (the node-local DNS): `skiff exec web-x -- getent hosts web` works.\n\n\
    If no container process is running, it enters only the pod's network namespace \
    (skiff-pod-<id>); /etc/resolv.conf is then the machine's, so point DNS tools at the node IP \
    explicitly, e.g. `dig @<node ip> web.default.svc.cluster.local`.\n\n\
    The command runs with the pod's view of the network but the host's filesystem (pods are \
    image-less). Exits with the command's status."
)]
pub struct ExecArgs {
    /// API server URL (to find the pod's uid, node and containers).
    #[arg(long, env = "SKIFF_SERVER", default_value = "http://127.0.0.1:6443")]
    server: String,
    /// Pod name.
    pod: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Container (default: the pod's first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// How to enter the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// All namespaces of this container process.
    Process(u32),
    /// Only this network namespace file.
    Netns(PathBuf),
}

/// The `nsenter` arguments that run `command` after entering (pure).
pub fn nsenter_args(entry: &Entry, command: &[String]) -> Vec<String> {
    let mut args = match entry {
        Entry::Process(pid) => vec![
            "--target".to_owned(),
            pid.to_string(),
            "--net".to_owned(),
            "--uts".to_owned(),
            "--ipc".to_owned(),
            "--mount".to_owned(),
        ],
        Entry::Netns(path) => vec![format!("--net={}", path.display())],
    };
    args.push("--".to_owned());
    args.extend(command.iter().cloned());
    args
}

/// The first PID in `cgroup.procs` content (pure).
pub fn first_pid(cgroup_procs: &str) -> Option<u32> {
    cgroup_procs
        .lines()
        .find_map(|l| l.trim().parse::<u32>().ok())
}

/// The container's cgroup dir for pod `uid` on `node`, as the agent lays it out.
fn container_cgroup(node: &str, uid: &str, container: &str) -> Result<PathBuf> {
    let url: url::Url = "http://127.0.0.1".parse().context("placeholder URL")?;
    let cfg = skiff_agent::AgentConfig::new(url, node);
    Ok(cfg
        .node_cgroup()
        .join(names::pod_cgroup_name(uid))
        .join(names::sanitize(container)))
}

pub fn run(args: ExecArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pod = rt.block_on(async {
        let client = kube_client(&args.server)?;
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, &args.namespace);
        pods.get(&args.pod)
            .await
            .with_context(|| format!("pod {}/{}", args.namespace, args.pod))
    })?;
    let uid = pod
        .metadata
        .uid
        .clone()
        .with_context(|| format!("pod {} has no uid", args.pod))?;
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let node = spec
        .node_name
        .clone()
        .with_context(|| format!("pod {} is not scheduled to a node yet", args.pod))?;
    let container = match &args.container {
        Some(c) => {
            if !spec.containers.iter().any(|k| &k.name == c) {
                bail!("pod {} has no container {c:?}", args.pod);
            }
            c.clone()
        }
        None => spec
            .containers
            .first()
            .map(|c| c.name.clone())
            .context("pod has no containers")?,
    };

    let procs = container_cgroup(&node, &uid, &container)?.join("cgroup.procs");
    let mut join_cgroup = None;
    let entry = match std::fs::read_to_string(&procs)
        .ok()
        .and_then(|t| first_pid(&t))
    {
        Some(pid) => {
            // The command joins the container's cgroup too (as runc exec
            // does): the eBPF socket-LB translates ClusterIPs only for
            // processes below the node's cgroup.
            join_cgroup = Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .with_context(|| format!("opening {}", procs.display()))?,
            );
            Entry::Process(pid)
        }
        None => {
            let netns = Path::new("/var/run/netns").join(names::netns_name(&uid));
            if !netns.exists() {
                bail!(
                    "pod {} (node {node}) has no running container {container:?} and no network namespace {} on this machine",
                    args.pod,
                    netns.display()
                );
            }
            eprintln!(
                "skiff exec: container {container:?} is not running; entering only the pod's network namespace (DNS: use the node IP as server)"
            );
            Entry::Netns(netns)
        }
    };
    let mut cmd = Command::new("nsenter");
    cmd.args(nsenter_args(&entry, &args.command));
    if let Some(file) = join_cgroup {
        // SAFETY: only write(2), async-signal-safe, on an fd opened before
        // the fork; "0" moves the writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::write(&file, b"0")
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let status = cmd.status().context("running nsenter (util-linux)")?;
    std::process::exit(status.code().unwrap_or(128 + 9));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsenter_enters_the_container_or_just_the_netns() {
        let cmd = vec!["getent".to_owned(), "hosts".to_owned(), "web".to_owned()];
        assert_eq!(
            nsenter_args(&Entry::Process(42), &cmd).join(" "),
            "--target 42 --net --uts --ipc --mount -- getent hosts web"
        );
        assert_eq!(
            nsenter_args(&Entry::Netns("/var/run/netns/skiff-pod-abc".into()), &cmd).join(" "),
            "--net=/var/run/netns/skiff-pod-abc -- getent hosts web"
        );
    }

    #[test]
    fn first_pid_skips_blank_lines() {
        assert_eq!(first_pid("\n1234\n99\n"), Some(1234));
        assert_eq!(first_pid(""), None);
    }

    #[test]
    fn container_cgroup_follows_the_agent_layout() {
        let p = container_cgroup("node0", "3f2a9c10-7b6e-4c1d-9a8b-0123456789ab", "echo")
            .expect("path");
        assert!(
            p.ends_with("skiff/node0/pod-3f2a9c10-7b6e-4c1d-9a8b-0123456789ab/echo"),
            "{}",
            p.display()
        );
    }
}
