//! Defaulting, applied to every decoded body (create, update, patch) before
//! validation, with the values Kubernetes uses. Clients rely on them: a
//! service proxy reads `protocol` and `targetPort` without guessing.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn default_container(container: &mut Container) {
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    if container.image_pull_policy.is_none() {
        // Kubernetes: Always for `:latest` or untagged images, else IfNotPresent.
        let image = container.image.as_deref().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        let tagged = last.contains(':') || image.contains('@');
        let latest = image.ends_with(":latest");
        let policy = if !tagged || latest {
            "Always"
        } else {
            "IfNotPresent"
        };
        container.image_pull_policy = Some(policy.to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
}

/// Defaults of a pod spec (also inside workload templates).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
    for c in &mut spec.containers {
        default_container(c);
    }
}

/// Pod defaults.
pub fn default_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        default_pod_spec(spec);
    }
}

fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// Service defaults: type ClusterIP, session affinity None, port protocol
/// TCP, target port = port, traffic policies Cluster.
pub fn default_service(service: &mut Service) {
    let Some(spec) = service.spec.as_mut() else {
        return;
    };
    let type_ = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_owned())
        .clone();
    spec.session_affinity
        .get_or_insert_with(|| "None".to_owned());
    if type_ != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
}

/// EndpointSlice defaults: port protocol TCP.
pub fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
}

/// ReplicaSet defaults: one replica; template pod defaults.
pub fn default_replica_set(replica_set: &mut ReplicaSet) {
    let spec = &mut replica_set.spec;
    spec.replicas.get_or_insert(1);
    if let Some(template) = spec.template.as_mut() {
        default_template(template);
    }
}

/// Deployment defaults: one replica, RollingUpdate 25%/25%, ten revisions
/// of history, 600 s progress deadline; template pod defaults.
pub fn default_deployment(deployment: &mut Deployment) {
    let spec = &mut deployment.spec;
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let type_ = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_owned());
    if type_ == "RollingUpdate" {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        rolling
            .max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
        rolling
            .max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
    }
    default_template(&mut spec.template);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    #[test]
    fn service_ports_get_protocol_and_target_port() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        default_service(&mut svc);
        let spec = svc.spec.expect("spec");
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    }

    #[test]
    fn image_pull_policy_follows_tag() {
        let mut spec = PodSpec {
            containers: vec![
                Container {
                    name: "a".into(),
                    image: Some("registry:5000/nginx".into()),
                    ..Container::default()
                },
                Container {
                    name: "b".into(),
                    image: Some("nginx:1.27".into()),
                    ..Container::default()
                },
            ],
            ..PodSpec::default()
        };
        default_pod_spec(&mut spec);
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn deployment_strategy_defaults() {
        let mut d = Deployment {
            spec: DeploymentSpec::default(),
            ..Deployment::default()
        };
        default_deployment(&mut d);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let rolling = spec
            .strategy
            .and_then(|s| s.rolling_update)
            .expect("rolling");
        assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    }
}
