//! ownerReferences: which object controls which (Kubernetes'
//! `metav1.GetControllerOf` / `NewControllerRef`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The ownerReference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether the object's controller is the owner with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner` (`controller: true`,
/// `blockOwnerDeletion: true`), or `None` if the owner has no name or uid
/// yet (not stored).
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The object's ownerReferences with `reference` added (replacing one with
/// the same uid).
pub fn with_owner(meta: &ObjectMeta, reference: OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != reference.uid)
        .cloned()
        .collect();
    refs.push(reference);
    refs
}

/// The object's ownerReferences without the one to `uid`.
pub fn without_owner(meta: &ObjectMeta, uid: &str) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    fn reference(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "X".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn finds_the_controller_among_owners() {
        let meta = ObjectMeta {
            owner_references: Some(vec![reference("a", false), reference("b", true)]),
            ..Default::default()
        };
        assert_eq!(controller_of(&meta).map(|r| r.uid.as_str()), Some("b"));
        assert!(is_controlled_by(&meta, "b"));
        assert!(!is_controlled_by(&meta, "a"));
        assert!(controller_of(&ObjectMeta::default()).is_none());
    }

    #[test]
    fn builds_controller_reference_from_typed_owner() {
        let mut rs = ReplicaSet::default();
        assert!(controller_reference(&rs).is_none());
        rs.metadata.name = Some("web".into());
        rs.metadata.uid = Some("u1".into());
        let r = controller_reference(&rs).expect("named");
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.uid.as_str()),
            ("apps/v1", "ReplicaSet", "u1")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn add_and_remove_owner() {
        let meta = ObjectMeta {
            owner_references: Some(vec![reference("a", false)]),
            ..Default::default()
        };
        let added = with_owner(&meta, reference("b", true));
        assert_eq!(
            added.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let meta = ObjectMeta {
            owner_references: Some(added),
            ..Default::default()
        };
        assert_eq!(without_owner(&meta, "b").len(), 1);
        assert_eq!(
            with_owner(&meta, reference("b", true)).len(),
            2,
            "no duplicate"
        );
    }
}
