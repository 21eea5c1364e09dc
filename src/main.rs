//! `skiff`: one binary, one subcommand per role. Each subcommand's work lives
//! in its crate; this file only parses arguments and dispatches.

mod agent_cmd;
mod client;
mod dns_cmd;
mod echo_cmd;
mod exec_cmd;
mod kubectl_cmd;
mod logging;
mod proxy_cmd;
mod server_cmd;
mod up;
mod up_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: container-cluster networking built around a service proxy",
    long_about = "Skiff runs a small Kubernetes-API-compatible cluster: an API server with an \
                  embedded store, node agents that run pods in network namespaces, an eBPF \
                  (or iptables) service proxy and a cluster DNS server."
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info,skiff_proxy=debug`.
    /// The default leaves out kube-client's own report of a failed
    /// connection: the command's error says it, naming the server.
    #[arg(
        long,
        global = true,
        env = "SKIFF_LOG",
        default_value = "info,kube_client::client::builder=off"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (embedded durable store) with the scheduler and
    /// controllers.
    Server(server_cmd::ServerArgs),
    /// Create or update objects from manifests (files, dirs, or - for stdin).
    Apply(kubectl_cmd::ApplyArgs),
    /// List or show objects as a table, YAML, JSON or names.
    Get(kubectl_cmd::GetArgs),
    /// Delete objects by kind and name, selector, or manifest.
    Delete(kubectl_cmd::DeleteArgs),
    /// Follow, undo or list the rollouts of a Deployment (`rollout status
    /// deploy/web`, `rollout undo deploy/web --to-revision=2`).
    Rollout(kubectl_cmd::RolloutArgs),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet through
    /// its /scale subresource (`scale deploy/web --replicas=5`).
    Scale(kubectl_cmd::ScaleArgs),
    /// Run a node: the agent (pods in network namespaces), the service
    /// proxy and node-local DNS.
    Agent(agent_cmd::AgentArgs),
    /// Print a container's log (from the node running the pod).
    Logs(agent_cmd::LogsArgs),
    /// Run the service proxy standalone against an API server.
    Proxy(proxy_cmd::ProxyArgs),
    /// Run the cluster DNS server standalone against an API server.
    Dns(dns_cmd::DnsArgs),
    /// A tiny TCP/UDP/HTTP backend that answers with its name and the
    /// client's address (used by the examples and tests).
    EchoServer(echo_cmd::EchoArgs),
    /// Bring up a whole cluster on this machine in network namespaces
    /// (root): API server, N node agents, the examples; Ctrl-C tears it down.
    Up(up_cmd::UpArgs),
    /// Clean up after a `skiff up` that did not finish (crashed or killed).
    Down(up_cmd::DownArgs),
    /// Run a command inside a pod's namespaces on this machine (root).
    Exec(exec_cmd::ExecArgs),
}

/// kubectl takes `--server` before the subcommand too (`kubectl --server
/// URL get pods`); every Skiff subcommand that talks to a server reads
/// `SKIFF_SERVER` when its own `--server` is not given. So a `--server URL`
/// (or `--server=URL`) before the subcommand is taken out of the arguments
/// and returned, for the caller to put into that variable (pure).
fn hoist_server(
    mut args: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, Option<std::ffi::OsString>) {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        if arg == "--server" && i + 1 < args.len() {
            let value = args.remove(i + 1);
            args.remove(i);
            return (args, Some(value));
        }
        if let Some(value) = arg.strip_prefix("--server=") {
            let value = value.into();
            args.remove(i);
            return (args, Some(value));
        }
        if arg == "--log" {
            // A global option with a separate value: skip both.
            i += 2;
            continue;
        }
        if !arg.starts_with('-') {
            // The subcommand: what follows is its business.
            break;
        }
        i += 1;
    }
    (args, None)
}

fn main() -> Result<()> {
    // Like other CLI tools, end quietly when the reader of our output goes
    // away (`skiff get pods | head -1`) instead of failing on EPIPE.
    // SAFETY: setting a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (args, server) = hoist_server(std::env::args_os().collect());
    if let Some(server) = server {
        // SAFETY: at start-up, before any thread exists.
        unsafe { std::env::set_var("SKIFF_SERVER", server) };
    }
    let cli = Cli::parse_from(args);
    logging::init(&cli.log)?;
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Apply(args) => kubectl_cmd::apply(args),
        Command::Get(args) => kubectl_cmd::get(args),
        Command::Delete(args) => kubectl_cmd::delete(args),
        Command::Rollout(args) => kubectl_cmd::rollout(args),
        Command::Scale(args) => kubectl_cmd::scale(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Logs(args) => agent_cmd::logs(args),
        Command::Proxy(args) => proxy_cmd::run(args),
        Command::Dns(args) => dns_cmd::run(args),
        Command::EchoServer(args) => echo_cmd::run(args),
        Command::Up(args) => up_cmd::up(args),
        Command::Down(args) => up_cmd::down(args),
        Command::Exec(args) => exec_cmd::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn server_before_the_subcommand_is_hoisted() {
        let (rest, server) = hoist_server(args("skiff --server http://x:1 get pods"));
        assert_eq!(rest, args("skiff get pods"));
        assert_eq!(server, Some("http://x:1".into()));
        let (rest, server) = hoist_server(args("skiff --log debug --server=http://y get pods"));
        assert_eq!(rest, args("skiff --log debug get pods"));
        assert_eq!(server, Some("http://y".into()));
    }

    #[test]
    fn server_after_the_subcommand_stays_where_it_is() {
        let line = "skiff get pods --server http://x:1";
        assert_eq!(hoist_server(args(line)), (args(line), None));
        let line = "skiff exec web -- curl --server x";
        assert_eq!(hoist_server(args(line)), (args(line), None));
    }

    #[test]
    fn every_server_command_also_reads_the_environment() {
        // The hoisted value reaches subcommands through SKIFF_SERVER, so
        // each must declare that env fallback.
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            if let Some(arg) = sub.get_arguments().find(|a| a.get_id() == "server") {
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some("SKIFF_SERVER"),
                    "skiff {} --server",
                    sub.get_name()
                );
            }
        }
    }
}
