//! Pod status as the API shows it, built from the lifecycle machine (pure).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::lifecycle::{ContainerMachine, ContainerState, Phase, PodMachine, Termination};

/// A Kubernetes `Time` from a chrono time (k8s-openapi 0.29 uses jiff).
pub fn to_k8s(t: DateTime<Utc>) -> Time {
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(t.timestamp(), nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A chrono time from a Kubernetes `Time`.
pub fn from_k8s(t: &Time) -> DateTime<Utc> {
    let nanos = u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(t.0.as_second(), nanos).unwrap_or_default()
}

/// Remembers when each condition last changed, so `lastTransitionTime`
/// moves only on a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionClock {
    last: BTreeMap<String, (String, DateTime<Utc>)>,
}

impl ConditionClock {
    /// Seeds from the conditions the Pod already shows (after an agent
    /// restart), so unchanged conditions keep their times.
    pub fn from_pod(pod: &Pod) -> Self {
        let last = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.type_.clone(),
                    (c.status.clone(), from_k8s(c.last_transition_time.as_ref()?)),
                ))
            })
            .collect();
        Self { last }
    }

    fn stamp(&mut self, type_: &str, status: &str, now: DateTime<Utc>) -> Time {
        let entry = self
            .last
            .entry(type_.to_owned())
            .or_insert_with(|| (status.to_owned(), now));
        if entry.0 != status {
            *entry = (status.to_owned(), now);
        }
        to_k8s(entry.1)
    }
}

/// Inputs beyond the machine.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The pod (for container images and spec order).
    pub pod: &'a Pod,
    /// Pod IP, once the sandbox has one.
    pub pod_ip: Option<Ipv4Addr>,
    /// Node IP.
    pub host_ip: Ipv4Addr,
    /// When the agent first accepted the pod.
    pub start_time: DateTime<Utc>,
    /// Running container pids (for `containerID`).
    pub pids: &'a BTreeMap<String, i32>,
    /// A pod-level problem to show (sandbox failure).
    pub message: Option<String>,
}

/// Builds the status. `now` stamps condition transitions.
pub fn build(
    m: &PodMachine,
    input: &StatusInput<'_>,
    clock: &mut ConditionClock,
    now: DateTime<Utc>,
) -> PodStatus {
    let phase = m.phase();
    let ready = m.containers_ready() && !m.is_terminating();
    let (reason, message) = if phase == Phase::Succeeded {
        (Some("PodCompleted".to_owned()), None)
    } else if ready {
        (None, None)
    } else {
        let unready = m.unready();
        (
            Some("ContainersNotReady".to_owned()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let flag = |b: bool| if b { "True" } else { "False" };
    let mut cond =
        |type_: &str, status: &str, reason: Option<String>, message: Option<String>| PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            last_transition_time: Some(clock.stamp(type_, status, now)),
            reason,
            message,
            ..PodCondition::default()
        };
    let conditions = vec![
        cond("PodScheduled", "True", None, None),
        cond("Initialized", "True", None, None),
        cond(
            "ContainersReady",
            flag(ready),
            reason.clone(),
            message.clone(),
        ),
        cond("Ready", flag(ready), reason, message),
    ];
    let images: BTreeMap<&str, &str> = input
        .pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
        .collect();
    let container_statuses = m
        .containers()
        .iter()
        .map(|c| {
            container_status(
                c,
                images.get(c.name()).copied().unwrap_or(""),
                input.pids.get(c.name()).copied(),
            )
        })
        .collect();
    PodStatus {
        phase: Some(phase.as_str().to_owned()),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_string(),
        }]),
        pod_ip: input.pod_ip.map(|ip| ip.to_string()),
        pod_ips: input.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(to_k8s(input.start_time)),
        container_statuses: Some(container_statuses),
        message: input.message.clone(),
        qos_class: Some(qos_class(input.pod).to_owned()),
        ..PodStatus::default()
    }
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(to_k8s),
        finished_at: Some(to_k8s(t.finished_at)),
        ..ContainerStateTerminated::default()
    }
}

fn container_status(c: &ContainerMachine, image: &str, pid: Option<i32>) -> ContainerStatus {
    let state = match c.state() {
        ContainerState::Waiting { reason, message } => K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..K8sState::default()
        },
        ContainerState::Running { started_at } => K8sState {
            running: Some(ContainerStateRunning {
                started_at: Some(to_k8s(*started_at)),
            }),
            ..K8sState::default()
        },
        ContainerState::Terminated(t) => K8sState {
            terminated: Some(terminated(t)),
            ..K8sState::default()
        },
    };
    let running = c.is_running();
    ContainerStatus {
        name: c.name().to_owned(),
        state: Some(state),
        last_state: Some(
            c.last_termination()
                .map_or_else(K8sState::default, |t| K8sState {
                    terminated: Some(terminated(t)),
                    ..K8sState::default()
                }),
        ),
        ready: c.ready(),
        restart_count: c.restart_count(),
        started: Some(running && c.started()),
        image: image.to_owned(),
        image_id: String::new(),
        container_id: pid.filter(|_| running).map(|p| format!("skiff://{p}")),
        ..ContainerStatus::default()
    }
}

/// Kubernetes QoS class from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        any |= limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|q| !q.is_empty());
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let q = requests.and_then(|q| q.get(res)).or(l);
            guaranteed &= l.is_some() && q == l;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The merge patch that makes the API's status equal `status`: every
/// field the agent owns is present, `null` when unset, so stale values
/// (an old message, a podIP) are removed rather than left behind.
pub fn merge_patch(status: &PodStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for key in [
            "phase",
            "conditions",
            "hostIP",
            "hostIPs",
            "podIP",
            "podIPs",
            "startTime",
            "containerStatuses",
            "message",
            "reason",
            "qosClass",
        ] {
            map.entry(key).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lifecycle::{Backoff, ContainerSpec, Now, RestartPolicy};
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["x"]}]}
        }))
        .expect("pod")
    }

    #[test]
    fn conditions_transition_only_on_change() {
        let t0 = Now::current();
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut m = PodMachine::new(
            "web",
            RestartPolicy::Always,
            b,
            vec![ContainerSpec {
                name: "a".into(),
                ..Default::default()
            }],
            t0,
        );
        m.sandbox_ready();
        let p = pod();
        let pids = BTreeMap::from([("a".to_owned(), 42)]);
        let input = StatusInput {
            pod: &p,
            pod_ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            host_ip: Ipv4Addr::new(192, 168, 250, 2),
            start_time: t0.wall,
            pids: &pids,
            message: None,
        };
        let mut clock = ConditionClock::default();
        let s0 = build(&m, &input, &mut clock, t0.wall);
        assert_eq!(s0.phase.as_deref(), Some("Pending"));
        let ready0 = s0
            .conditions
            .as_ref()
            .expect("c")
            .iter()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .expect("ready");
        assert_eq!(ready0.status, "False");
        assert_eq!(
            ready0.message.as_deref(),
            Some("containers with unready status: [a]")
        );

        m.due_actions(t0);
        m.started("a", t0);
        let t1 = t0.plus(Duration::from_secs(3));
        let s1 = build(&m, &input, &mut clock, t1.wall);
        assert_eq!(s1.phase.as_deref(), Some("Running"));
        let conds = s1.conditions.as_ref().expect("c");
        let ready1 = conds.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(ready1.status, "True");
        assert_eq!(
            from_k8s(ready1.last_transition_time.as_ref().expect("t")),
            t1.wall,
            "flipped: new time"
        );
        let sched = conds
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .expect("sched");
        assert_eq!(
            from_k8s(sched.last_transition_time.as_ref().expect("t")),
            t0.wall,
            "unchanged: old time"
        );
        let cs = &s1.container_statuses.as_ref().expect("cs")[0];
        assert!(cs.ready && cs.state.as_ref().expect("state").running.is_some());
        assert_eq!(cs.container_id.as_deref(), Some("skiff://42"));
        assert_eq!(cs.image, "busybox");
        assert_eq!(s1.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(s1.qos_class.as_deref(), Some("BestEffort"));
        // Same state, later: identical status, so no push is needed.
        assert_eq!(
            build(&m, &input, &mut clock, t1.plus(Duration::from_secs(9)).wall),
            s1
        );
    }

    #[test]
    fn merge_patch_nulls_unset_fields() {
        let patch = merge_patch(&PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        });
        assert_eq!(patch["status"]["phase"], "Running");
        assert!(patch["status"]["message"].is_null());
        assert!(
            patch["status"]
                .as_object()
                .expect("obj")
                .contains_key("podIP")
        );
    }

    #[test]
    fn qos_classes() {
        let mk = |res: Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {}, "spec": {"containers": [{"name": "a", "resources": res}]}}),
            )
            .expect("pod")
        };
        assert_eq!(qos_class(&mk(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&mk(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&mk(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
