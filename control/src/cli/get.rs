//! `skiff get KIND [NAME...] [-n NS | -A] [-l SELECTOR] [-o FORMAT]`.

use std::io::Write;

use chrono::Utc;
use kube::api::{DynamicObject, ListParams};
use serde_json::Value;

use super::CliError;
use super::apply::api_for;
use super::resolve::Resolver;
use super::table::table;

/// `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

/// Options of `skiff get`.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    pub kind: String,
    pub names: Vec<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub selector: Option<String>,
    pub output: Output,
}

fn enc(e: impl std::fmt::Display) -> CliError {
    CliError::Output(e.to_string())
}

/// Prints the objects; returns how many. An empty list prints kubectl's
/// "No resources found" to `err` rather than an empty table.
pub async fn get(
    client: kube::Client,
    opts: &GetOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<usize, CliError> {
    let resolver = Resolver::new(client.clone()).await?;
    let res = resolver.by_name(&opts.kind)?;
    let ns = if !res.namespaced || opts.all_namespaces {
        None
    } else {
        Some(opts.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let api = api_for(&client, &res, ns.as_deref());
    let mut objects: Vec<DynamicObject> = Vec::new();
    if opts.names.is_empty() {
        let mut lp = ListParams::default();
        if let Some(sel) = &opts.selector {
            lp = lp.labels(sel);
        }
        objects = api.list(&lp).await?.items;
    } else {
        for name in &opts.names {
            objects.push(api.get(name).await?);
        }
    }
    let values: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).map_err(enc)?;
            // Dynamic objects lose apiVersion/kind on lists; put them back.
            v["apiVersion"] = res.api.api_version.clone().into();
            v["kind"] = res.api.kind.clone().into();
            Ok(v)
        })
        .collect::<Result<_, CliError>>()?;
    if values.is_empty() {
        match &ns {
            Some(ns) => writeln!(err, "No resources found in {ns} namespace.").map_err(enc)?,
            None => writeln!(err, "No resources found").map_err(enc)?,
        }
        return Ok(0);
    }
    let single = !opts.names.is_empty() && values.len() == 1;
    let doc = || {
        if single {
            values[0].clone()
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values, "metadata": {"resourceVersion": ""}})
        }
    };
    match opts.output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc()).map_err(enc)?
        )
        .map_err(enc)?,
        Output::Yaml => {
            write!(out, "{}", serde_saphyr::to_string(&doc()).map_err(enc)?).map_err(enc)?
        }
        Output::Name => {
            for v in &values {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                writeln!(out, "{}", super::apply::object_ref(&res, name)).map_err(enc)?;
            }
        }
        Output::Table | Output::Wide => {
            let t = table(
                &res.api.kind,
                &values,
                opts.all_namespaces && res.namespaced,
                opts.output == Output::Wide,
                Utc::now(),
            );
            write!(out, "{}", t.render()).map_err(enc)?;
        }
    }
    Ok(values.len())
}
