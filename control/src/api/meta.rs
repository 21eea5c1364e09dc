//! Server-managed metadata and spec/status separation, as pure functions
//! over an object's JSON.
//!
//! The server owns `uid`, `creationTimestamp`, `generation` and
//! `resourceVersion`; clients cannot set them. For kinds with a status
//! subresource, the main resource cannot change `.status` and the status
//! subresource can change nothing else. `generation` counts changes of
//! everything but metadata and status (the "spec").

use serde_json::{Map, Value};

use crate::kinds::{KindInfo, StatusOnCreate};
use crate::store::Revision;

/// Characters Kubernetes uses for `generateName` suffixes (no vowels, no
/// look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a `generateName` suffix.
const NAME_SUFFIX_LEN: usize = 5;
/// Kubernetes truncates the prefix so the generated name fits 63 bytes.
const MAX_GENERATED_PREFIX: usize = 58;

/// `metadata` as a mutable map, created if absent or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(root) = object else {
        unreachable!("replaced by an object just above")
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else {
        unreachable!("replaced by an object just above")
    };
    meta
}

/// A string field of `metadata` (`name`, `namespace`, `resourceVersion`...).
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// `metadata.name`, empty if absent.
pub fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

/// `metadata.namespace`, if set and non-empty.
pub fn namespace_of(object: &Value) -> Option<&str> {
    meta_str(object, "namespace").filter(|ns| !ns.is_empty())
}

/// Sets `metadata.resourceVersion` to the revision.
pub fn set_resource_version(object: &mut Value, revision: Revision) {
    metadata_mut(object).insert("resourceVersion".into(), Value::from(revision.to_string()));
}

/// Removes `metadata.resourceVersion` (it is never stored).
pub fn clear_resource_version(object: &mut Value) {
    metadata_mut(object).remove("resourceVersion");
}

/// The `resourceVersion` a client sent, if any: a precondition for updates.
///
/// Returns `Err` with the raw string when it is not a revision.
pub fn requested_resource_version(object: &Value) -> Result<Option<Revision>, String> {
    match meta_str(object, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| rv.to_owned()),
    }
}

/// Fills in `apiVersion` and `kind` when the client left them out.
/// Returns a message when they name another kind.
pub fn apply_type_meta(kind: &KindInfo, object: &mut Value) -> Result<(), String> {
    let api_version = kind.api_version();
    let Some(map) = object.as_object_mut() else {
        return Err(format!(
            "the body of the request must be a JSON object describing a {}",
            kind.kind
        ));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::from(api_version.clone()));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            ));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::from(kind.kind));
        }
        Some(k) if k == kind.kind => {}
        Some(k) => {
            return Err(format!(
                "{k} in version {:?} cannot be handled as a {}: the kind in the data ({k}) does not match the resource ({})",
                kind.version, kind.kind, kind.plural
            ));
        }
    }
    Ok(())
}

/// A name for `generateName`: the prefix (truncated) plus five random
/// characters drawn from `random`.
pub fn generated_name(prefix: &str, random: &[u8; 16]) -> String {
    let mut cut = prefix.len().min(MAX_GENERATED_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = prefix[..cut].to_owned();
    for byte in random.iter().take(NAME_SUFFIX_LEN) {
        let index = usize::from(*byte) % NAME_ALPHABET.len();
        name.push(char::from(NAME_ALPHABET[index]));
    }
    name
}

/// What the server sets on a new object.
#[derive(Clone, Debug)]
pub struct CreateStamp {
    /// New `metadata.uid`.
    pub uid: String,
    /// `metadata.creationTimestamp` (RFC 3339, seconds).
    pub timestamp: String,
}

/// Prepares a decoded object for create: server-owned metadata set, status
/// reset as the kind says.
pub fn prepare_create(kind: &KindInfo, object: &mut Value, stamp: &CreateStamp) {
    let meta = metadata_mut(object);
    meta.insert("uid".into(), Value::from(stamp.uid.clone()));
    meta.insert(
        "creationTimestamp".into(),
        Value::from(stamp.timestamp.clone()),
    );
    meta.insert("generation".into(), Value::from(1));
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    if !kind.namespaced {
        meta.remove("namespace");
    }
    if let Some(map) = object.as_object_mut() {
        match &kind.status_on_create {
            StatusOnCreate::Keep => {}
            StatusOnCreate::Reset(status) => {
                map.insert("status".into(), status.clone());
            }
            StatusOnCreate::None => {}
        }
    }
}

/// The parts of an object that count as its spec for `generation`: every
/// top-level field except type, metadata and status.
fn spec_part(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prepares a decoded replacement `new` of `old` for the main resource:
/// server-owned metadata carried over, status kept if the kind has a
/// status subresource, generation bumped if the spec changed.
pub fn prepare_update(kind: &KindInfo, old: &Value, new: &mut Value) {
    carry_server_metadata(old, new);
    if kind.status_subresource
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    let old_generation = old
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if spec_part(old) == spec_part(new) {
        old_generation
    } else {
        old_generation + 1
    };
    metadata_mut(new).insert("generation".into(), Value::from(generation));
}

/// For the status subresource: `old` with only `.status` taken from `new`.
pub fn prepare_status_update(old: &Value, new: &Value) -> Value {
    let mut result = old.clone();
    if let Some(map) = result.as_object_mut() {
        match new.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    result
}

fn carry_server_metadata(old: &Value, new: &mut Value) {
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = metadata_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("managedFields");
    meta.remove("selfLink");
    meta.remove("resourceVersion");
}

/// Whether two stored forms are the same (then an update writes nothing,
/// as in Kubernetes, and the resourceVersion does not move).
pub fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        clear_resource_version(&mut v);
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn stamp() -> CreateStamp {
        CreateStamp {
            uid: "u-1".into(),
            timestamp: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn create_sets_server_fields_and_resets_status() {
        let kinds = Kinds::builtin();
        let pods = kinds.of::<Pod>().expect("pods");
        let mut pod = json!({"metadata": {"name": "p", "uid": "client", "resourceVersion": "9"}, "status": {"phase": "Running"}});
        prepare_create(pods, &mut pod, &stamp());
        assert_eq!(pod["metadata"]["uid"], "u-1");
        assert_eq!(pod["metadata"]["generation"], 1);
        assert_eq!(pod["metadata"].get("resourceVersion"), None);
        assert_eq!(pod["status"], json!({"phase": "Pending"}));

        let nodes = kinds.of::<Node>().expect("nodes");
        let mut node = json!({"metadata": {"name": "n", "namespace": "x"}, "status": {"capacity": {"cpu": "2"}}});
        prepare_create(nodes, &mut node, &stamp());
        assert_eq!(node["status"]["capacity"]["cpu"], "2");
        assert_eq!(node["metadata"].get("namespace"), None);
    }

    #[test]
    fn update_keeps_status_and_bumps_generation_on_spec_change_only() {
        let kinds = Kinds::builtin();
        let deploy = kinds.of::<Deployment>().expect("deployments");
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 3, "creationTimestamp": "t"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut relabel = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 7}});
        prepare_update(deploy, &old, &mut relabel);
        assert_eq!(relabel["metadata"]["generation"], 3);
        assert_eq!(relabel["metadata"]["uid"], "u");
        assert_eq!(relabel["status"]["replicas"], 1);
        let mut scale = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}});
        prepare_update(deploy, &old, &mut scale);
        assert_eq!(scale["metadata"]["generation"], 4);
        assert_eq!(scale["status"]["replicas"], 1);

        let slices = kinds.of::<EndpointSlice>().expect("slices");
        let old = json!({"metadata": {"name": "s", "generation": 1}, "addressType": "IPv4", "endpoints": []});
        let mut new = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]});
        prepare_update(slices, &old, &mut new);
        assert_eq!(new["metadata"]["generation"], 2);
    }

    #[test]
    fn status_update_changes_only_status() {
        let old =
            json!({"metadata": {"name": "p"}, "spec": {"a": 1}, "status": {"phase": "Pending"}});
        let new = json!({"metadata": {"name": "p", "labels": {"x": "y"}}, "spec": {"a": 2}, "status": {"phase": "Running"}});
        let result = prepare_status_update(&old, &new);
        assert_eq!(result["spec"]["a"], 1);
        assert_eq!(result["status"]["phase"], "Running");
        assert_eq!(result["metadata"].get("labels"), None);
    }

    #[test]
    fn type_meta_defaults_and_mismatches() {
        let kinds = Kinds::builtin();
        let deploy = kinds.of::<Deployment>().expect("deployments");
        let mut obj = json!({"metadata": {}});
        apply_type_meta(deploy, &mut obj).expect("fills");
        assert_eq!(obj["apiVersion"], "apps/v1");
        assert_eq!(obj["kind"], "Deployment");
        let mut wrong = json!({"apiVersion": "v1", "kind": "Deployment"});
        assert!(apply_type_meta(deploy, &mut wrong).is_err());
        let mut wrong = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet"});
        assert!(apply_type_meta(deploy, &mut wrong).is_err());
    }

    #[test]
    fn generated_names_use_prefix_and_safe_alphabet() {
        let name = generated_name("web-", &[0, 1, 2, 3, 200, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(name[4..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
        let long = generated_name(&"a".repeat(80), &[0; 16]);
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn requested_resource_version_parses() {
        assert_eq!(
            requested_resource_version(&json!({"metadata": {}})),
            Ok(None)
        );
        assert_eq!(
            requested_resource_version(&json!({"metadata": {"resourceVersion": "12"}})),
            Ok(Some(12))
        );
        assert!(
            requested_resource_version(&json!({"metadata": {"resourceVersion": "x"}})).is_err()
        );
    }
}
