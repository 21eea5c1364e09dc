//! Client-side commands of the `skiff` CLI (`apply`, `get`, `delete`,
//! `rollout`, `scale`), kubectl-shaped: they talk to any Kubernetes-compatible API server through
//! kube's discovery and dynamic API, so they need no per-kind code except
//! for table columns.
//!
//! - `manifest`: reading YAML/JSON manifests from files, dirs or stdin.
//! - `resolve`: turning `po`, `pods`, `Pod`, `deploy` into an API resource.
//! - `table`: kubectl-like columns per kind (pure).
//! - `apply`, `get`, `delete`: the commands.
//! - `rollout`: `status`, `undo`, `history` of Deployments (status also of
//!   DaemonSets), with the decisions (kubectl's status viewer, the
//!   revision to roll back to) pure.
//! - `scale`: `spec.replicas` through the `/scale` subresource.

pub mod apply;
pub mod delete;
pub mod get;
pub mod manifest;
pub mod resolve;
pub mod rollout;
pub mod scale;
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
    /// `rollout status` gave up waiting; `last` is what it saw last.
    #[error("timed out after {after} waiting for {what} rollout to finish (last: {last})")]
    Timeout {
        /// The `--timeout`, Go-style (`2s`, `5m0s`).
        after: String,
        /// `deployment "web"`.
        what: String,
        /// The last progress seen, e.g. `2 of 3 updated replicas are available`.
        last: String,
    },
    /// The Deployment's `Progressing` condition says
    /// `ProgressDeadlineExceeded`: the controller stopped expecting progress.
    #[error("deployment \"{0}\" exceeded its progress deadline")]
    ProgressDeadlineExceeded(String),
    /// `rollout status --revision=N` while another revision is rolling.
    #[error("desired revision ({desired}) is different from the running revision ({running})")]
    RevisionMismatch { desired: i64, running: i64 },
    /// The watch of the object ended (the watcher normally never ends).
    #[error("the watch of {0} ended before its rollout finished")]
    WatchEnded(String),
    /// The object went away while `rollout status` watched it.
    #[error("{0} was deleted while waiting for its rollout")]
    Deleted(String),
    /// `rollout undo --to-revision=N` names no ReplicaSet of the Deployment.
    #[error("unable to find specified revision {0} in history")]
    RevisionNotFound(i64),
    /// `rollout undo` without `--to-revision` and only one revision exists.
    #[error("no rollout history found for deployment \"{0}\"")]
    NoHistory(String),
    /// `rollout undo` of a paused Deployment (the controller would not act).
    #[error(
        "you cannot rollback a paused deployment; resume it first (unset spec.paused) and try again"
    )]
    Paused,
    /// `scale --current-replicas` did not match.
    #[error("Expected replicas to be {expected}, was {actual}")]
    Precondition { expected: i32, actual: i32 },
}

/// The `(kind, name)` pairs of kubectl-style resource arguments: either
/// `KIND/NAME...` (each may name its own kind) or `KIND NAME...` (pure).
///
/// # Errors
/// [`CliError::Usage`] when nothing is named, a `KIND/NAME` has an empty
/// side, or the two forms are mixed.
pub fn kind_and_names(args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::Usage(
            "you must provide one or more resources, e.g. deploy/NAME".into(),
        ));
    };
    if first.contains('/') {
        return args
            .iter()
            .map(|a| match a.split_once('/') {
                Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('/') => {
                    Ok((k.to_owned(), n.to_owned()))
                }
                Some(_) => Err(CliError::Usage(format!(
                    "arguments in resource/name form must have a single resource and name: {a:?}"
                ))),
                None => Err(CliError::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when \
                     passing arguments in resource/name form (e.g. 'skiff rollout status \
                     deploy/web' instead of 'skiff rollout status deploy web'): {a:?}"
                ))),
            })
            .collect();
    }
    let names = &args[1..];
    if names.is_empty() {
        return Err(CliError::Usage(format!(
            "resource(s) were provided, but no name was specified: {first} NAME"
        )));
    }
    if let Some(bad) = names.iter().find(|n| n.contains('/')) {
        return Err(CliError::Usage(format!(
            "there is no need to specify a resource type as a separate argument when passing \
             arguments in resource/name form: {bad:?}"
        )));
    }
    Ok(names.iter().map(|n| (first.clone(), n.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn resource_arguments_in_both_forms() {
        let pair = |k: &str, n: &str| (k.to_owned(), n.to_owned());
        assert_eq!(
            kind_and_names(&args(&["deploy/web", "rs/api"])).expect("slash form"),
            vec![pair("deploy", "web"), pair("rs", "api")]
        );
        assert_eq!(
            kind_and_names(&args(&["deployment", "web", "api"])).expect("kind then names"),
            vec![pair("deployment", "web"), pair("deployment", "api")]
        );
        for bad in [
            &[][..],
            &["deploy"][..],
            &["deploy/"][..],
            &["/web"][..],
            &["deploy/web/x"][..],
            &["deploy/web", "api"][..],
            &["deploy", "rs/web"][..],
        ] {
            assert!(
                matches!(kind_and_names(&args(bad)), Err(CliError::Usage(_))),
                "{bad:?} should be rejected"
            );
        }
    }
}
