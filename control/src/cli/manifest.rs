//! Manifests: one or many YAML (or JSON) documents per file; `kind: List`
//! documents are flattened; empty documents skipped.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::CliError;

/// One object read from a manifest, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub source: String,
    pub index: usize,
    pub object: Value,
}

/// Reads `-` (stdin), a file, or every `.yaml`/`.yml`/`.json` file of a
/// directory (sorted by name, not recursive, like `kubectl apply -f DIR`).
pub fn load(path: &str) -> Result<Vec<Doc>, CliError> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Read {
                path: "-".into(),
                source,
            })?;
        return parse("<stdin>", &text);
    }
    let p = Path::new(path);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CliError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    if p.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(p)
            .map_err(|source| CliError::Read {
                path: path.into(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|f| {
                f.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for f in files {
            docs.extend(parse(&f.display().to_string(), &read(&f)?)?);
        }
        Ok(docs)
    } else {
        parse(path, &read(p)?)
    }
}

/// Parses manifest text (pure).
pub fn parse(source: &str, text: &str) -> Result<Vec<Doc>, CliError> {
    let values: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text).map_err(|e| CliError::Manifest {
            path: source.into(),
            index: 0,
            message: e.to_string(),
        })?]
    } else {
        serde_saphyr::from_multiple::<Option<Value>>(text)
            .map_err(|e| CliError::Manifest {
                path: source.into(),
                index: 0,
                message: e.to_string(),
            })?
            .into_iter()
            .flatten()
            .collect()
    };
    let mut docs = Vec::new();
    for (index, v) in values.into_iter().enumerate() {
        if v.is_null() {
            continue;
        }
        let bad = |message: &str| CliError::Manifest {
            path: source.into(),
            index,
            message: message.into(),
        };
        if !v.is_object() {
            return Err(bad("not an object"));
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                docs.push(checked(source, index, item)?);
            }
        } else {
            docs.push(checked(source, index, v)?);
        }
    }
    Ok(docs)
}

fn checked(source: &str, index: usize, object: Value) -> Result<Doc, CliError> {
    for field in ["apiVersion", "kind"] {
        if object
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(CliError::Manifest {
                path: source.into(),
                index,
                message: format!("{field} not set"),
            });
        }
    }
    if object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && object.pointer("/metadata/generateName").is_none()
    {
        return Err(CliError::Manifest {
            path: source.into(),
            index,
            message: "metadata.name not set".into(),
        });
    }
    Ok(Doc {
        source: source.into(),
        index,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_empty_docs_and_lists() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n";
        let docs = parse("t.yaml", text).unwrap();
        let kinds: Vec<&str> = docs
            .iter()
            .map(|d| d.object["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Namespace", "Service", "Deployment"]);
    }

    #[test]
    fn json_manifest() {
        let docs = parse(
            "t.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse("t.yaml", "apiVersion: v1\nmetadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("kind not set"), "{err}");
        let err = parse("t.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = parse("t.yaml", "- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("not an object"), "{err}");
    }
}
