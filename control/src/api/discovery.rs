//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`)
//! and `/version`, built from the kinds registry. kubectl and client
//! libraries read these to map `kubectl get deploy` to a URL.

use serde_json::{Value, json};

use crate::kinds::{KindInfo, Kinds};

/// Kubernetes release whose API this server follows, for `/version`.
pub const KUBERNETES_MAJOR: &str = "1";
/// Minor release reported by `/version`.
pub const KUBERNETES_MINOR: &str = "34";

/// Verbs of a main resource.
const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of the status and scale subresources.
const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`: the named groups.
pub fn api_group_list(kinds: &Kinds) -> Value {
    let groups: Vec<Value> = kinds
        .group_versions()
        .iter()
        .filter(|gv| !gv.group.is_empty())
        .map(|gv| group_entry(gv.group, gv.version))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if the group is served.
pub fn api_group(kinds: &Kinds, group: &str) -> Option<Value> {
    let gv = kinds
        .group_versions()
        .into_iter()
        .find(|gv| gv.group == group && !group.is_empty())?;
    let mut entry = group_entry(gv.group, gv.version);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

fn resource_entries(kind: &KindInfo) -> Vec<Value> {
    let mut main = json!({
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": RESOURCE_VERBS,
    });
    if !kind.short_names.is_empty() {
        main["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        main["categories"] = json!(kind.categories);
    }
    let mut entries = vec![main];
    if kind.status_subresource {
        entries.push(json!({
            "name": format!("{}/status", kind.plural),
            "singularName": "",
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": SUBRESOURCE_VERBS,
        }));
    }
    if kind.scale_subresource {
        entries.push(json!({
            "name": format!("{}/scale", kind.plural),
            "singularName": "",
            "namespaced": kind.namespaced,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": SUBRESOURCE_VERBS,
        }));
    }
    if kind.group.is_empty() && kind.kind == "Pod" {
        entries.push(json!({
            "name": "pods/binding",
            "singularName": "",
            "namespaced": true,
            "kind": "Binding",
            "verbs": ["create"],
        }));
    }
    entries
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn api_resource_list(kinds: &Kinds, group: &str, version: &str) -> Option<Value> {
    if !kinds.serves(group, version) {
        return None;
    }
    let resources: Vec<Value> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .flat_map(|k| resource_entries(k))
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+skiff-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_short_names_and_subresources() {
        let kinds = Kinds::builtin();
        let list = api_resource_list(&kinds, "", "v1").expect("core served");
        assert_eq!(list["groupVersion"], "v1");
        let resources = list["resources"].as_array().expect("array");
        let find = |name: &str| resources.iter().find(|r| r["name"] == name).cloned();
        let pods = find("pods").expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["singularName"], "pod");
        assert!(
            pods["verbs"]
                .as_array()
                .expect("verbs")
                .contains(&json!("watch"))
        );
        assert!(find("pods/status").is_some());
        assert!(find("pods/binding").is_some());
        assert_eq!(find("nodes").expect("nodes")["namespaced"], false);
        assert_eq!(find("services").expect("svc")["shortNames"], json!(["svc"]));
        assert_eq!(find("namespaces").expect("ns")["shortNames"], json!(["ns"]));
    }

    #[test]
    fn apps_list_has_scale() {
        let kinds = Kinds::builtin();
        let list = api_resource_list(&kinds, "apps", "v1").expect("apps served");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "daemonsets",
                "daemonsets/status",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale"
            ]
        );
        assert!(api_resource_list(&kinds, "policy", "v1").is_none());
    }

    #[test]
    fn group_list_and_group() {
        let kinds = Kinds::builtin();
        let list = api_group_list(&kinds);
        let names: Vec<&str> = list["groups"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"]
        );
        let apps = api_group(&kinds, "apps").expect("apps");
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
        assert!(api_group(&kinds, "").is_none());
    }
}
