//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes strategic merge patch.
//!
//! Strategic merge patch is implemented for what kubectl sends: lists of
//! structs are merged by their merge key (containers by `name`, container
//! ports by `containerPort`, service ports by `port`, env by `name`, ...,
//! keyed by field name as in the Kubernetes types), `$patch: delete|replace`
//! directives, `$deleteFromPrimitiveList/`, `$retainKeys`, and the
//! `$setElementOrder/` hints (accepted; order follows the existing list).
//! Lists without a merge key are replaced, as in Kubernetes. Server-side
//! apply (`application/apply-patch+yaml`) is not supported.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Content type of a JSON merge patch.
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// Content type of a JSON patch.
pub const JSON_PATCH: &str = "application/json-patch+json";
/// Content type of a strategic merge patch.
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";

/// The kinds of patch the server applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386.
    Merge,
    /// RFC 6902.
    Json,
    /// Kubernetes strategic merge patch.
    Strategic,
}

impl PatchKind {
    /// The patch kind for a `Content-Type` (parameters ignored).
    ///
    /// # Errors
    /// 415 naming the accepted types.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let essence = content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            MERGE_PATCH => Ok(PatchKind::Merge),
            JSON_PATCH => Ok(PatchKind::Json),
            STRATEGIC_MERGE_PATCH => Ok(PatchKind::Strategic),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other:?}) - accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}"
            ))),
        }
    }
}

/// Applies `patch` to `target`.
///
/// # Errors
/// 400 when the patch is not of its declared form or (JSON patch) an
/// operation fails.
pub fn apply(kind: PatchKind, target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut result = target.clone();
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut result, patch);
        }
        PatchKind::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut result, &operations).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch could not be applied: {e}"))
            })?;
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(&mut result, patch);
        }
    }
    Ok(result)
}

const DIRECTIVE: &str = "$patch";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";
const RETAIN_KEYS: &str = "$retainKeys";

/// The merge key of a list field, by field name as the Kubernetes types
/// declare it; `None` means the list is replaced whole.
fn merge_key(field: &str, target: &[Value], patch: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            let has_container_port = target
                .iter()
                .chain(patch)
                .any(|v| v.get("containerPort").is_some());
            Some(if has_container_port {
                "containerPort"
            } else {
                "port"
            })
        }
        _ => None,
    }
}

/// Primitive lists Kubernetes merges as sets.
fn is_merged_primitive_list(field: &str) -> bool {
    field == "finalizers"
}

fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get(DIRECTIVE).and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ORDER_PREFIX) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE_PREFIX) {
            if let (Some(Value::Array(list)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                if value.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    target_map.remove(key);
                } else {
                    let entry = target_map.entry(key.clone()).or_insert(Value::Null);
                    strategic_merge(entry, value);
                }
            }
            Value::Array(patch_items) => {
                let existing = target_map.get(key).and_then(Value::as_array).cloned();
                let merged = match existing {
                    Some(existing) => merge_list(key, existing, patch_items),
                    None => patch_items
                        .iter()
                        .filter(|v| v.get(DIRECTIVE).is_none())
                        .map(without_directives)
                        .collect(),
                };
                target_map.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_list(field: &str, mut existing: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    if patch
        .iter()
        .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
    {
        return patch
            .iter()
            .filter(|v| v.get(DIRECTIVE).is_none())
            .map(without_directives)
            .collect();
    }
    if is_merged_primitive_list(field) {
        for item in patch {
            if !existing.contains(item) {
                existing.push(item.clone());
            }
        }
        return existing;
    }
    let Some(key) = merge_key(field, &existing, patch) else {
        return patch.iter().map(without_directives).collect();
    };
    for item in patch {
        let Some(id) = item.get(key) else {
            // An element without its merge key cannot be matched; Kubernetes
            // rejects it, we append it so nothing the client sent is lost.
            existing.push(without_directives(item));
            continue;
        };
        let position = existing.iter().position(|e| e.get(key) == Some(id));
        let delete = item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => existing.push(without_directives(item)),
        }
    }
    existing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type(Some("application/merge-patch+json; charset=utf-8")).ok(),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type(Some(JSON_PATCH)).ok(),
            Some(PatchKind::Json)
        );
        let err = PatchKind::from_content_type(Some("application/apply-patch+yaml"))
            .expect_err("unsupported");
        assert_eq!(err.code(), axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(PatchKind::from_content_type(None).is_err());
    }

    #[test]
    fn merge_patch_replaces_lists_and_removes_nulls() {
        let target = json!({"spec": {"replicas": 1, "ports": [{"port": 80}], "x": 1}});
        let result = apply(
            PatchKind::Merge,
            &target,
            &json!({"spec": {"replicas": 3, "ports": [{"port": 81}], "x": null}}),
        )
        .expect("applies");
        assert_eq!(
            result,
            json!({"spec": {"replicas": 3, "ports": [{"port": 81}]}})
        );
    }

    #[test]
    fn json_patch_ops_and_failures() {
        let target = json!({"metadata": {"labels": {"a": "b"}}});
        let result = apply(
            PatchKind::Json,
            &target,
            &json!([{"op": "add", "path": "/metadata/labels/c", "value": "d"}, {"op": "remove", "path": "/metadata/labels/a"}]),
        )
        .expect("applies");
        assert_eq!(result, json!({"metadata": {"labels": {"c": "d"}}}));
        let err = apply(
            PatchKind::Json,
            &target,
            &json!([{"op": "test", "path": "/metadata/labels/a", "value": "z"}]),
        )
        .expect_err("test op fails");
        assert_eq!(err.code(), axum::http::StatusCode::BAD_REQUEST);
        assert!(apply(PatchKind::Json, &target, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let target = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [
                {"name": "b", "image": "b:2"},
                {"name": "c", "image": "c:1"},
                {"name": "a", "ports": [{"containerPort": 443}]}
            ]
        }});
        let result = apply(PatchKind::Strategic, &target, &patch).expect("applies");
        assert_eq!(
            result,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}, {"containerPort": 443}]},
                {"name": "b", "image": "b:2"},
                {"name": "c", "image": "c:1"}
            ]}})
        );
    }

    #[test]
    fn strategic_directives() {
        let target = json!({"metadata": {"finalizers": ["a"]}, "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "tolerations": [{"key": "x"}]}});
        let patch = json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"ports": [{"port": 80, "$patch": "delete"}], "tolerations": [{"key": "y"}]}
        });
        let result = apply(PatchKind::Strategic, &target, &patch).expect("applies");
        assert_eq!(result["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            result["spec"]["ports"],
            json!([{"port": 443, "name": "https"}])
        );
        assert_eq!(result["spec"]["tolerations"], json!([{"key": "y"}]));
        let replace = apply(
            PatchKind::Strategic,
            &target,
            &json!({"spec": {"$patch": "replace", "ports": []}}),
        )
        .expect("applies");
        assert_eq!(replace["spec"], json!({"ports": []}));
        let retain = apply(
            PatchKind::Strategic,
            &target,
            &json!({"spec": {"$retainKeys": ["ports"], "ports": []}}),
        )
        .expect("applies");
        assert_eq!(
            retain["spec"],
            json!({"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]})
        );
    }
}
