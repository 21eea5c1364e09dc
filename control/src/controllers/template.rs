//! Pods from a workload's pod template, as Kubernetes'
//! `GetPodFromTemplate`: the template's labels, annotations and spec, a
//! `generateName`, and a controller ownerReference.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// A pod to create in `namespace` from `template`, named by the API server
/// from `generate_name`, controlled by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.as_ref();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: meta.and_then(|m| m.labels.clone()),
            annotations: meta.and_then(|m| m.annotations.clone()),
            finalizers: meta.and_then(|m| m.finalizers.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Kubernetes' generateName prefix for a controller's pods: `<name>-`,
/// cut so that the generated name (prefix + 5 random characters) stays
/// within 63 characters.
pub fn generate_name_prefix(owner_name: &str) -> String {
    const MAX_PREFIX: usize = 63 - 5;
    let mut prefix = format!("{owner_name}-");
    if prefix.len() > MAX_PREFIX {
        let mut cut = MAX_PREFIX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_template_and_sets_owner() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                annotations: Some([("a".to_owned(), "b".to_owned())].into()),
                name: Some("ignored".to_owned()),
                ..Default::default()
            }),
            spec: Some(Default::default()),
        };
        let owner = OwnerReference {
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let pod = pod_from_template(&template, "ns", "web-", owner.clone());
        assert_eq!(pod.metadata.name, None);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            pod.metadata.labels,
            template.metadata.as_ref().and_then(|m| m.labels.clone())
        );
        assert_eq!(pod.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(pod.metadata.owner_references, Some(vec![owner]));
        assert_eq!(pod.spec, template.spec);
    }

    #[test]
    fn prefix_is_bounded() {
        assert_eq!(generate_name_prefix("web"), "web-");
        let long = "x".repeat(80);
        assert_eq!(generate_name_prefix(&long).len(), 58);
    }
}
