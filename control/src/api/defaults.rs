//! Defaulting, applied to every decoded body (create, update, patch) before
//! validation, with the values Kubernetes uses. Clients rely on them: a
//! service proxy reads `protocol` and `targetPort` without guessing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Job template label with the job's name (and its legacy form).
pub const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
/// Job template label with the job's uid (and its legacy form); the
/// generated selector matches the first.
pub const JOB_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

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

/// DaemonSet defaults: RollingUpdate with maxUnavailable 1 and maxSurge
/// 0, ten revisions of history; template pod defaults.
pub fn default_daemon_set(daemon_set: &mut DaemonSet) {
    let spec = &mut daemon_set.spec;
    spec.revision_history_limit.get_or_insert(10);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    let type_ = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_owned());
    if type_ == "RollingUpdate" {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
        rolling.max_surge.get_or_insert(IntOrString::Int(0));
    }
    default_template(&mut spec.template);
}

/// StatefulSet defaults: one replica, OrderedReady, RollingUpdate with
/// partition 0, PVCs retained, ten revisions of history; template pod
/// defaults.
pub fn default_stateful_set(stateful_set: &mut StatefulSet) {
    let spec = &mut stateful_set.spec;
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".to_owned());
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    let type_ = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_owned());
    if type_ == "RollingUpdate" {
        strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
            .partition
            .get_or_insert(0);
    }
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    retention
        .when_deleted
        .get_or_insert_with(|| "Retain".to_owned());
    retention
        .when_scaled
        .get_or_insert_with(|| "Retain".to_owned());
    default_template(&mut spec.template);
}

/// Job defaults (batch/v1): completions and parallelism 1 when neither is
/// set, backoffLimit 6, NonIndexed, not suspended, manualSelector false,
/// pod replacement on TerminatingOrFailed, the job's labels from its
/// template when it has none; template pod defaults. The selector is
/// generated at create ([`generate_job_selector`]).
pub fn default_job(job: &mut Job) {
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    let backoff = if spec.backoff_limit_per_index.is_some() {
        i32::MAX
    } else {
        6
    };
    spec.backoff_limit.get_or_insert(backoff);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_owned());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    spec.pod_replacement_policy
        .get_or_insert_with(|| replacement.to_owned());
    if job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty)
        && let Some(labels) = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .filter(|l| !l.is_empty())
    {
        job.metadata.labels = Some(labels);
    }
    default_template(&mut spec.template);
}

/// At create, unless `manualSelector` is true: labels the job's pod
/// template with its name and uid and selects on the uid, so that a job's
/// pods are its own (Kubernetes' `generateSelector`). Labels the user set
/// are left as they are; validation rejects them if they disagree.
pub fn generate_job_selector(job: &mut Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    if spec.manual_selector == Some(true) {
        return;
    }
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for key in JOB_NAME_LABELS {
        labels.entry(key.to_owned()).or_insert_with(|| name.clone());
    }
    for key in JOB_UID_LABELS {
        labels.entry(key.to_owned()).or_insert_with(|| uid.clone());
    }
    spec.selector
        .get_or_insert_with(LabelSelector::default)
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .entry(JOB_UID_LABELS[0].to_owned())
        .or_insert(uid);
}

/// Secret defaults: type Opaque; `stringData` (write-only) merged into
/// `data`, as Kubernetes does on every write.
pub fn default_secret(secret: &mut Secret) {
    secret.type_.get_or_insert_with(|| "Opaque".to_owned());
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in strings {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
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

    #[test]
    fn job_defaults_and_generated_selector() {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
                                  "spec": {"containers": [{"name": "c", "image": "perl"}], "restartPolicy": "Never"}}}
        }))
        .expect("job");
        default_job(&mut job);
        generate_job_selector(&mut job);
        let spec = job.spec.expect("spec");
        assert_eq!((spec.completions, spec.parallelism), (Some(1), Some(1)));
        assert_eq!(spec.backoff_limit, Some(6));
        assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
        assert_eq!(
            job.metadata.labels.expect("labels")["app"],
            "pi",
            "labels from the template"
        );
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("labels");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(labels["job-name"], "pi");
        let selector = spec
            .selector
            .and_then(|s| s.match_labels)
            .expect("selector");
        assert_eq!(
            selector,
            BTreeMap::from([(
                "batch.kubernetes.io/controller-uid".to_owned(),
                "u-1".to_owned()
            )])
        );
    }

    #[test]
    fn secret_string_data_lands_in_data() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                "a".to_owned(),
                ByteString(b"x".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([("b".to_owned(), "hello".to_owned())])),
            ..Secret::default()
        };
        default_secret(&mut secret);
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert!(secret.string_data.is_none());
        let data = secret.data.expect("data");
        assert_eq!(data["b"], ByteString(b"hello".to_vec()));
        assert_eq!(data["a"], ByteString(b"x".to_vec()));
    }

    #[test]
    fn daemon_and_stateful_set_strategies() {
        let mut ds = DaemonSet::default();
        default_daemon_set(&mut ds);
        let rolling = ds
            .spec
            .update_strategy
            .and_then(|s| s.rolling_update)
            .expect("rolling");
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
        let mut sts = StatefulSet::default();
        default_stateful_set(&mut sts);
        assert_eq!(sts.spec.replicas, Some(1));
        assert_eq!(
            sts.spec.pod_management_policy.as_deref(),
            Some("OrderedReady")
        );
        let partition = sts
            .spec
            .update_strategy
            .and_then(|s| s.rolling_update)
            .and_then(|r| r.partition);
        assert_eq!(partition, Some(0));
    }
}
