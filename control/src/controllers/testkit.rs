//! Builders of API objects for the controllers' unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// A time `secs` seconds after the Unix epoch.
pub fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid time"))
}

/// `app=web`.
pub fn web_labels() -> BTreeMap<String, String> {
    [("app".to_owned(), "web".to_owned())].into()
}

/// A pending pod in `default` with label `app=web`, created at t=0.
pub fn pod_named(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            labels: Some(web_labels()),
            creation_timestamp: Some(at(0)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                image: Some("img:1".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Sets `status.phase`.
pub fn set_phase(pod: &mut Pod, phase: &str) {
    pod.status.get_or_insert_default().phase = Some(phase.to_owned());
}

/// Makes the pod bound, Running and Ready since `secs`.
pub fn set_ready(pod: &mut Pod, secs: i64) {
    pod.spec
        .get_or_insert_default()
        .node_name
        .get_or_insert_with(|| "n1".to_owned());
    let status = pod.status.get_or_insert_default();
    status.phase = Some("Running".to_owned());
    let mut conditions: Vec<PodCondition> = status
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "Ready")
        .collect();
    conditions.push(PodCondition {
        type_: "Ready".to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(at(secs)),
        ..Default::default()
    });
    status.conditions = Some(conditions);
}

/// A pod template with `labels` and one container running `image`.
pub fn template(labels: BTreeMap<String, String>, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                image: Some(image.to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A ReplicaSet `name` in `default` selecting and templating `app=web`.
pub fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(web_labels()),
                ..Default::default()
            },
            template: Some(template(web_labels(), "img:1")),
            min_ready_seconds: None,
        },
        status: None,
    }
}
