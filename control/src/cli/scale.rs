//! `skiff scale KIND/NAME... --replicas=N [--current-replicas=M]`, after
//! kubectl: `spec.replicas` written through the `/scale` subresource
//! (Deployments, ReplicaSets, StatefulSets), so only the replica count
//! changes whatever else the object holds.

use std::io::Write;

use k8s_openapi::api::autoscaling::v1::ScaleSpec;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::apply::{api_for, object_ref};
use super::resolve::Resolver;
use super::{CliError, kind_and_names};

/// Options of `skiff scale`.
#[derive(Clone, Debug, Default)]
pub struct ScaleOptions {
    /// `deploy/web rs/api` or `deploy web api`.
    pub resources: Vec<String>,
    pub namespace: Option<String>,
    /// The new `spec.replicas`.
    pub replicas: i32,
    /// `--current-replicas`: scale only if the object has this many now.
    pub current_replicas: Option<i32>,
}

/// kubectl's `--current-replicas` precondition (pure).
///
/// # Errors
/// [`CliError::Precondition`] when `expected` is given and differs.
pub fn check_current_replicas(expected: Option<i32>, actual: i32) -> Result<(), CliError> {
    match expected {
        Some(expected) if expected != actual => Err(CliError::Precondition { expected, actual }),
        _ => Ok(()),
    }
}

/// Scales each named object; prints `deployment.apps/web scaled` per
/// object and returns how many.
///
/// Without a precondition the Scale is patched (no read, no conflict).
/// With `--current-replicas` the Scale is read, checked and written back
/// with its resourceVersion, so a change in between fails with a conflict
/// instead of scaling from a count the user did not see.
///
/// # Errors
/// [`CliError::Usage`] for a negative count or malformed arguments;
/// [`CliError::Precondition`]; API errors (404, 409, a kind without
/// `/scale`).
pub async fn scale(
    client: kube::Client,
    opts: &ScaleOptions,
    out: &mut impl Write,
) -> Result<usize, CliError> {
    if opts.replicas < 0 {
        return Err(CliError::Usage(
            "the --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
                .into(),
        ));
    }
    let targets = kind_and_names(&opts.resources)?;
    let resolver = Resolver::new(client.clone()).await?;
    for (kind, name) in &targets {
        let res = resolver.by_name(kind)?;
        let ns = res
            .namespaced
            .then(|| opts.namespace.clone().unwrap_or_else(|| "default".into()));
        let api = api_for(&client, &res, ns.as_deref());
        match opts.current_replicas {
            None => {
                let patch = json!({"spec": {"replicas": opts.replicas}});
                api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Some(_) => {
                let mut current = api.get_scale(name).await?;
                let actual = current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                check_current_replicas(opts.current_replicas, actual)?;
                current.spec = Some(ScaleSpec {
                    replicas: Some(opts.replicas),
                });
                api.replace_scale(name, &PostParams::default(), &current)
                    .await?;
            }
        }
        writeln!(out, "{} scaled", object_ref(&res, name))
            .map_err(|e| CliError::Output(e.to_string()))?;
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_replicas_precondition() {
        assert!(check_current_replicas(None, 5).is_ok());
        assert!(check_current_replicas(Some(5), 5).is_ok());
        let err = check_current_replicas(Some(3), 5).expect_err("mismatch");
        assert!(matches!(
            err,
            CliError::Precondition {
                expected: 3,
                actual: 5
            }
        ));
        assert_eq!(err.to_string(), "Expected replicas to be 3, was 5");
    }
}
