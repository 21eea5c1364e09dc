//! `skiff apply | get | delete | rollout | scale`: kubectl-shaped client
//! commands.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use skiff_control::cli::apply::{self, ApplyOptions};
use skiff_control::cli::delete::{self, DeleteOptions};
use skiff_control::cli::get::{self, GetOptions, Output};
use skiff_control::cli::rollout::{self, HistoryOptions, StatusOptions, UndoOptions};
use skiff_control::cli::scale::{self, ScaleOptions};

use crate::client::kube_client;

#[derive(Args)]
pub struct ServerFlag {
    /// API server URL.
    #[arg(
        long,
        env = "SKIFF_SERVER",
        default_value = "http://127.0.0.1:6443",
        global = true
    )]
    server: String,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    server: ServerFlag,
    /// Manifest file, directory of .yaml/.yml/.json files, or `-` for stdin.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    server: ServerFlag,
    /// Kind: `pods`, `po`, `pod`, `svc`, `deploy`, `nodes`, `endpointslices`, ...
    kind: String,
    /// Names (default: all).
    names: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier in (front,back),!canary`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    output: Option<OutputArg>,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    server: ServerFlag,
    /// Kind, then names (or -l).
    #[arg(required_unless_present = "files")]
    kind: Option<String>,
    names: Vec<String>,
    /// Delete what these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

#[derive(Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    server: ServerFlag,
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Watch a rollout until it finishes: prints each new state and exits 0
    /// once done, non-zero on timeout or when the progress deadline passed.
    Status(RolloutStatusArgs),
    /// Roll a Deployment back to the previous revision (or --to-revision).
    Undo(RolloutUndoArgs),
    /// List a Deployment's revisions.
    History(RolloutHistoryArgs),
}

#[derive(Args)]
struct RolloutStatusArgs {
    /// `deploy/NAME` or `deploy NAME` (also `ds/NAME`).
    #[arg(required = true)]
    resources: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Watch until the rollout finishes; `--watch=false` prints the status
    /// once.
    #[arg(
        short = 'w',
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    watch: bool,
    /// Give up after this long (Go duration: 30s, 5m, 1h30m; 0 waits
    /// forever).
    #[arg(long, default_value = "0s", value_parser = rollout::parse_go_duration)]
    timeout: Duration,
    /// Fail unless this revision is the one rolling out.
    #[arg(long)]
    revision: Option<i64>,
}

#[derive(Args)]
struct RolloutUndoArgs {
    /// `deploy/NAME` or `deploy NAME`.
    #[arg(required = true)]
    resources: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The revision to go back to (default, or 0: the previous one).
    #[arg(long)]
    to_revision: Option<i64>,
}

#[derive(Args)]
struct RolloutHistoryArgs {
    /// `deploy/NAME` or `deploy NAME`.
    #[arg(required = true)]
    resources: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    server: ServerFlag,
    /// `deploy/NAME`, `rs/NAME`, `sts/NAME` (several allowed), or `KIND
    /// NAME...`.
    #[arg(required = true)]
    resources: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The new number of replicas.
    #[arg(long, required = true)]
    replicas: i32,
    /// Scale only if the object has exactly this many replicas now.
    #[arg(long)]
    current_replicas: Option<i32>,
}

/// Runs a CLI command against `server`; an error that comes from not
/// reaching the server at all says which server, and what to check.
fn block_on<T>(server: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f);
    result.map_err(|e| {
        if unreachable(&e) {
            e.context(format!(
                "cannot reach the API server at {server} (is `skiff server` or `skiff up` running? \
                 pick another with --server or SKIFF_SERVER)"
            ))
        } else {
            e
        }
    })
}

/// Whether the error chain says the connection itself failed.
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<kube::Error>(),
            Some(kube::Error::Service(_) | kube::Error::HyperError(_))
        )
    })
}

pub fn apply(args: ApplyArgs) -> Result<()> {
    let opts = ApplyOptions {
        files: args.files,
        namespace: args.namespace,
    };
    block_on(&args.server.server, async {
        let client = kube_client(&args.server.server)?;
        apply::apply(client, &opts, &mut std::io::stdout()).await?;
        Ok(())
    })
}

pub fn get(args: GetArgs) -> Result<()> {
    let opts = GetOptions {
        kind: args.kind,
        names: args.names,
        namespace: args.namespace,
        all_namespaces: args.all_namespaces,
        selector: args.selector,
        output: match args.output {
            None => Output::Table,
            Some(OutputArg::Wide) => Output::Wide,
            Some(OutputArg::Yaml) => Output::Yaml,
            Some(OutputArg::Json) => Output::Json,
            Some(OutputArg::Name) => Output::Name,
        },
    };
    block_on(&args.server.server, async {
        let client = kube_client(&args.server.server)?;
        get::get(
            client,
            &opts,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
        .await?;
        Ok(())
    })
}

pub fn delete(args: DeleteArgs) -> Result<()> {
    let opts = DeleteOptions {
        kind: args.kind,
        names: args.names,
        files: args.files,
        namespace: args.namespace,
        selector: args.selector,
    };
    block_on(&args.server.server, async {
        let client = kube_client(&args.server.server)?;
        delete::delete(client, &opts, &mut std::io::stdout()).await?;
        Ok(())
    })
}

pub fn rollout(args: RolloutArgs) -> Result<()> {
    block_on(&args.server.server, async {
        let client = kube_client(&args.server.server)?;
        let out = &mut std::io::stdout();
        match args.command {
            RolloutCommand::Status(a) => {
                let opts = StatusOptions {
                    resources: a.resources,
                    namespace: a.namespace,
                    watch: a.watch,
                    timeout: Some(a.timeout).filter(|t| !t.is_zero()),
                    revision: a.revision,
                };
                rollout::status(client, &opts, out).await?;
            }
            RolloutCommand::Undo(a) => {
                let opts = UndoOptions {
                    resources: a.resources,
                    namespace: a.namespace,
                    to_revision: a.to_revision,
                };
                rollout::undo(client, &opts, out).await?;
            }
            RolloutCommand::History(a) => {
                let opts = HistoryOptions {
                    resources: a.resources,
                    namespace: a.namespace,
                };
                rollout::history(client, &opts, out).await?;
            }
        }
        Ok(())
    })
}

pub fn scale(args: ScaleArgs) -> Result<()> {
    let opts = ScaleOptions {
        resources: args.resources,
        namespace: args.namespace,
        replicas: args.replicas,
        current_replicas: args.current_replicas,
    };
    block_on(&args.server.server, async {
        let client = kube_client(&args.server.server)?;
        scale::scale(client, &opts, &mut std::io::stdout()).await?;
        Ok(())
    })
}
