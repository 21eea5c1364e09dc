//! Pure diff of existing against desired EndpointSlices.
//!
//! Slices are matched by name. A slice whose controlled content (labels,
//! owner references, address type, ports, endpoints) already equals the
//! desired one is left alone; ordering of ports and endpoints and
//! server-set metadata (resourceVersion, uid, timestamps, managedFields,
//! annotations, finalizers) are ignored. Updates start from the existing
//! object so its server-set metadata (notably `resourceVersion`, for
//! optimistic concurrency) is carried into the replace.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::desired::PortKey;

/// What to do to make the existing slices the desired ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceChanges {
    /// Slices to create (no server metadata set).
    pub create: Vec<EndpointSlice>,
    /// Slices to replace: the existing object (with its `resourceVersion`)
    /// carrying the desired content.
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl SliceChanges {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Compares `existing` slices (those this controller manages for one
/// Service) with `desired` ones (from
/// [`desired_slices`](super::desired::desired_slices)) and returns the
/// minimal changes. Slices without a name are ignored on both sides.
pub fn diff(existing: &[EndpointSlice], desired: Vec<EndpointSlice>) -> SliceChanges {
    let mut by_name: BTreeMap<&str, &EndpointSlice> = existing
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
        .collect();
    let mut changes = SliceChanges::default();
    for want in desired {
        let Some(name) = want.metadata.name.as_deref() else {
            continue;
        };
        match by_name.remove(name) {
            None => changes.create.push(want),
            Some(have) if same_content(have, &want) => {}
            Some(have) => {
                let mut updated = have.clone();
                updated.metadata.labels = want.metadata.labels;
                updated.metadata.owner_references = want.metadata.owner_references;
                updated.address_type = want.address_type;
                updated.ports = want.ports;
                updated.endpoints = want.endpoints;
                changes.update.push(updated);
            }
        }
    }
    changes.delete = by_name.into_values().cloned().collect();
    changes
}

/// Whether two slices carry the same controlled content, ignoring
/// server-set metadata and the order of ports and endpoints.
pub fn same_content(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    let owners = |s: &EndpointSlice| s.metadata.owner_references.clone().unwrap_or_default();
    a.address_type == b.address_type
        && labels(a) == labels(b)
        && owners(a) == owners(b)
        && PortKey::new(a.ports.as_deref().unwrap_or_default())
            == PortKey::new(b.ports.as_deref().unwrap_or_default())
        && sorted_endpoints(a) == sorted_endpoints(b)
}

fn sorted_endpoints(s: &EndpointSlice) -> Vec<Endpoint> {
    let mut eps = s.endpoints.clone().unwrap_or_default();
    eps.sort_by(|x, y| {
        let key = |e: &Endpoint| {
            (
                e.target_ref.as_ref().and_then(|t| t.name.clone()),
                e.addresses.clone(),
            )
        };
        key(x).cmp(&key(y))
    });
    eps
}

#[cfg(test)]
mod tests {
    use super::super::desired::desired_slices;
    use super::super::desired::tests::{pod, port, service};
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn web() -> Service {
        service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, Some(IntOrString::Int(8080)))],
        )
    }

    /// What an API server hands back after storing `s`.
    fn stored(mut s: EndpointSlice, rv: u32) -> EndpointSlice {
        s.metadata.resource_version = Some(rv.to_string());
        s.metadata.uid = Some(format!("slice-uid-{rv}"));
        s.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        s.metadata.generation = Some(1);
        s
    }

    fn desired(svc: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Vec<EndpointSlice> {
        desired_slices(svc, pods, &[], existing).unwrap()
    }

    #[test]
    fn first_sync_creates() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), true)];
        let d = desired(&web(), &pods, &[]);
        let changes = diff(&[], d.clone());
        assert_eq!(changes.create, d);
        assert!(changes.update.is_empty() && changes.delete.is_empty());
    }

    #[test]
    fn unchanged_is_untouched_despite_server_metadata_and_order() {
        let pods = [
            pod("a", &[("app", "web")], Some("10.0.0.1"), true),
            pod("b", &[("app", "web")], Some("10.0.0.2"), true),
        ];
        let d = desired(&web(), &pods, &[]);
        let mut existing: Vec<EndpointSlice> = d.iter().cloned().map(|s| stored(s, 7)).collect();
        if let Some(eps) = existing[0].endpoints.as_mut() {
            eps.reverse();
        }
        existing[0]
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("note".into(), "kept".into());
        let again = desired(&web(), &pods, &existing);
        assert!(diff(&existing, again).is_empty());
    }

    #[test]
    fn readiness_change_updates_in_place_keeping_resource_version() {
        let mut p = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        let existing: Vec<_> = desired(&web(), std::slice::from_ref(&p), &[])
            .into_iter()
            .map(|s| stored(s, 3))
            .collect();
        p = {
            let mut q = p;
            if let Some(st) = q.status.as_mut() {
                st.conditions = None;
            }
            q
        };
        let changes = diff(&existing, desired(&web(), &[p], &existing));
        assert!(changes.create.is_empty() && changes.delete.is_empty());
        assert_eq!(changes.update.len(), 1);
        let u = &changes.update[0];
        assert_eq!(u.metadata.resource_version.as_deref(), Some("3"));
        assert_eq!(u.metadata.uid.as_deref(), Some("slice-uid-3"));
        let c = u.endpoints.as_ref().unwrap()[0].conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving), (Some(false), Some(false)));
    }

    #[test]
    fn shrinking_deletes_surplus_slices_only() {
        let many: Vec<Pod> = (0..150)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &[("app", "web")],
                    Some(&format!("10.0.{}.{}", i / 200, i % 200 + 1)),
                    true,
                )
            })
            .collect();
        let existing: Vec<_> = desired(&web(), &many, &[])
            .into_iter()
            .enumerate()
            .map(|(i, s)| stored(s, u32::try_from(i).unwrap() + 1))
            .collect();
        assert_eq!(existing.len(), 2);
        // Keep only pods that live in the first slice: the other empties.
        let first_pods: Vec<String> = existing[0]
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| e.target_ref.as_ref()?.name.clone())
            .collect();
        let kept: Vec<Pod> = many
            .into_iter()
            .filter(|p| first_pods.contains(p.metadata.name.as_ref().unwrap()))
            .collect();
        let changes = diff(&existing, desired(&web(), &kept, &existing));
        assert!(changes.create.is_empty());
        assert!(
            changes.update.is_empty(),
            "first slice keeps exactly its pods"
        );
        assert_eq!(changes.delete.len(), 1);
        assert_eq!(changes.delete[0].metadata.name, existing[1].metadata.name);
    }

    #[test]
    fn selector_removed_deletes_everything() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), true)];
        let existing: Vec<_> = desired(&web(), &pods, &[])
            .into_iter()
            .map(|s| stored(s, 1))
            .collect();
        let manual = service("web", &[], vec![port("http", 80, None)]);
        let changes = diff(&existing, desired(&manual, &pods, &existing));
        assert_eq!(changes.delete, existing);
        assert!(changes.create.is_empty() && changes.update.is_empty());
    }

    #[test]
    fn label_drift_is_repaired() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), true)];
        let mut existing: Vec<_> = desired(&web(), &pods, &[])
            .into_iter()
            .map(|s| stored(s, 1))
            .collect();
        existing[0]
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("extra".into(), "x".into());
        let changes = diff(&existing, desired(&web(), &pods, &existing));
        assert_eq!(changes.update.len(), 1);
        assert!(
            !changes.update[0]
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("extra")
        );
    }

    #[test]
    fn pod_going_terminating_flips_conditions() {
        let p = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        let existing: Vec<_> = desired(&web(), std::slice::from_ref(&p), &[])
            .into_iter()
            .map(|s| stored(s, 1))
            .collect();
        let mut t = p;
        t.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let changes = diff(&existing, desired(&web(), &[t], &existing));
        assert_eq!(changes.update.len(), 1);
        let c = changes.update[0].endpoints.as_ref().unwrap()[0]
            .conditions
            .clone()
            .unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
