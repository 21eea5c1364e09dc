//! `skiff delete KIND NAME... | -f FILE` [-n NS] [-l SELECTOR].

use std::io::Write;

use kube::api::{DeleteParams, ListParams};

use super::CliError;
use super::apply::{api_for, target_namespace};
use super::manifest;
use super::resolve::{Resolver, Resource};

/// Options of `skiff delete`.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub kind: Option<String>,
    pub names: Vec<String>,
    pub files: Vec<String>,
    pub namespace: Option<String>,
    pub selector: Option<String>,
}

fn enc(e: std::io::Error) -> CliError {
    CliError::Output(e.to_string())
}

/// Deletes the named objects; prints `kind "name" deleted` per object.
pub async fn delete(
    client: kube::Client,
    opts: &DeleteOptions,
    out: &mut impl Write,
) -> Result<usize, CliError> {
    let resolver = Resolver::new(client.clone()).await?;
    let mut targets: Vec<(Resource, Option<String>, String)> = Vec::new();
    for f in &opts.files {
        for doc in manifest::load(f)? {
            let res = resolver.by_gvk(
                doc.object["apiVersion"].as_str().unwrap_or_default(),
                doc.object["kind"].as_str().unwrap_or_default(),
            )?;
            let ns = if res.namespaced {
                Some(target_namespace(&doc, opts.namespace.as_deref())?)
            } else {
                None
            };
            let name = doc.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            targets.push((res, ns, name));
        }
    }
    if let Some(kind) = &opts.kind {
        let res = resolver.by_name(kind)?;
        let ns = res
            .namespaced
            .then(|| opts.namespace.clone().unwrap_or_else(|| "default".into()));
        let mut names = opts.names.clone();
        if let Some(sel) = &opts.selector {
            let api = api_for(&client, &res, ns.as_deref());
            names.extend(
                api.list(&ListParams::default().labels(sel))
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name),
            );
        }
        if names.is_empty() && opts.selector.is_none() {
            return Err(CliError::Usage(format!(
                "resource(s) were provided, but no name was specified: skiff delete {kind} NAME"
            )));
        }
        targets.extend(names.into_iter().map(|n| (res.clone(), ns.clone(), n)));
    } else if opts.files.is_empty() {
        return Err(CliError::Usage("specify KIND NAME... or -f FILE".into()));
    }
    for (res, ns, name) in &targets {
        let api = api_for(&client, res, ns.as_deref());
        api.delete(name, &DeleteParams::default()).await?;
        writeln!(
            out,
            "{} \"{name}\" deleted",
            res.api.kind.to_ascii_lowercase()
        )
        .map_err(enc)?;
    }
    Ok(targets.len())
}
