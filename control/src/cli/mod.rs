//! Client-side commands of the `skiff` CLI (`apply`, `get`, `delete`),
//! kubectl-shaped: they talk to any Kubernetes-compatible API server through
//! kube's discovery and dynamic API, so they need no per-kind code except
//! for table columns.
//!
//! - `manifest`: reading YAML/JSON manifests from files, dirs or stdin.
//! - `resolve`: turning `po`, `pods`, `Pod`, `deploy` into an API resource.
//! - `table`: kubectl-like columns per kind (pure).
//! - `apply`, `get`, `delete`: the commands.

pub mod apply;
pub mod delete;
pub mod get;
pub mod manifest;
pub mod resolve;
pub mod table;

/// Errors of client commands, each naming what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {message}")]
    Manifest {
        path: String,
        index: usize,
        message: String,
    },
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownKind(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Usage(String),
    #[error("encoding output: {0}")]
    Output(String),
}
