//! `skiff apply | get | delete`: kubectl-shaped client commands.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use skiff_control::cli::apply::{self, ApplyOptions};
use skiff_control::cli::delete::{self, DeleteOptions};
use skiff_control::cli::get::{self, GetOptions, Output};

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

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

pub fn apply(args: ApplyArgs) -> Result<()> {
    let opts = ApplyOptions {
        files: args.files,
        namespace: args.namespace,
    };
    block_on(async {
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
    block_on(async {
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
    block_on(async {
        let client = kube_client(&args.server.server)?;
        delete::delete(client, &opts, &mut std::io::stdout()).await?;
        Ok(())
    })
}
