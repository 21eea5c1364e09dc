//! `skiff apply -f FILE|DIR|-`: create what is missing, merge-patch what
//! exists, and say which for each object (`created`, `configured`,
//! `unchanged`), like kubectl.

use std::io::Write;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};

use super::CliError;
use super::manifest::{self, Doc};
use super::resolve::{Resolver, Resource};

/// Options of `skiff apply`.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub files: Vec<String>,
    /// `-n`: the namespace for objects that do not name one; an object that
    /// names another is an error.
    pub namespace: Option<String>,
}

/// kubectl's `kind.group/name` spelling of an object.
pub fn object_ref(res: &Resource, name: &str) -> String {
    let kind = res.api.kind.to_ascii_lowercase();
    if res.api.group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{}/{name}", res.api.group)
    }
}

/// The namespace a document goes to (pure): its own, else `-n`, else
/// `default`; conflicting ones are an error.
pub fn target_namespace(doc: &Doc, flag: Option<&str>) -> Result<String, CliError> {
    let own = doc
        .object
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    match (own, flag) {
        (Some(o), Some(f)) if o != f => Err(CliError::Usage(format!(
            "{} document {}: the namespace from the provided object \"{o}\" does not match the namespace \"{f}\". You must pass '--namespace={o}' to perform this operation.",
            doc.source, doc.index
        ))),
        (Some(o), _) => Ok(o.to_owned()),
        (None, Some(f)) => Ok(f.to_owned()),
        (None, None) => Ok("default".to_owned()),
    }
}

pub(super) fn api_for(
    client: &kube::Client,
    res: &Resource,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (res.namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &res.api),
        (true, None) => Api::all_with(client.clone(), &res.api),
        (false, _) => Api::all_with(client.clone(), &res.api),
    }
}

/// Applies every document; writes one line per object to `out`. Stops at
/// the first failure (what was applied before it stays applied).
pub async fn apply(
    client: kube::Client,
    opts: &ApplyOptions,
    out: &mut impl Write,
) -> Result<usize, CliError> {
    if opts.files.is_empty() {
        return Err(CliError::Usage("must specify -f FILE|DIR|-".into()));
    }
    let mut docs = Vec::new();
    for f in &opts.files {
        docs.extend(manifest::load(f)?);
    }
    let resolver = Resolver::new(client.clone()).await?;
    let mut applied = 0;
    for doc in &docs {
        let api_version = doc.object["apiVersion"].as_str().unwrap_or_default();
        let kind = doc.object["kind"].as_str().unwrap_or_default();
        let res = resolver.by_gvk(api_version, kind)?;
        let ns = if res.namespaced {
            Some(target_namespace(doc, opts.namespace.as_deref())?)
        } else {
            None
        };
        let api = api_for(&client, &res, ns.as_deref());
        let mut object = doc.object.clone();
        if let Some(ns) = &ns {
            object["metadata"]["namespace"] = ns.clone().into();
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let existing = if name.is_empty() {
            None
        } else {
            api.get_opt(&name).await?
        };
        let verb = match existing {
            None => {
                let obj: DynamicObject =
                    serde_json::from_value(object).map_err(|e| CliError::Output(e.to_string()))?;
                let created = api.create(&PostParams::default(), &obj).await?;
                let line = object_ref(&res, created.metadata.name.as_deref().unwrap_or(&name));
                writeln!(out, "{line} created").map_err(|e| CliError::Output(e.to_string()))?;
                applied += 1;
                continue;
            }
            Some(before) => {
                let after = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&object))
                    .await?;
                if after.metadata.resource_version == before.metadata.resource_version {
                    "unchanged"
                } else {
                    "configured"
                }
            }
        };
        writeln!(out, "{} {verb}", object_ref(&res, &name))
            .map_err(|e| CliError::Output(e.to_string()))?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(ns: Option<&str>) -> Doc {
        let mut o = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        if let Some(ns) = ns {
            o["metadata"]["namespace"] = ns.into();
        }
        Doc {
            source: "f.yaml".into(),
            index: 0,
            object: o,
        }
    }

    #[test]
    fn namespace_precedence_and_conflict() {
        assert_eq!(target_namespace(&doc(None), None).unwrap(), "default");
        assert_eq!(target_namespace(&doc(None), Some("x")).unwrap(), "x");
        assert_eq!(target_namespace(&doc(Some("y")), None).unwrap(), "y");
        assert_eq!(target_namespace(&doc(Some("y")), Some("y")).unwrap(), "y");
        let err = target_namespace(&doc(Some("y")), Some("x")).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
