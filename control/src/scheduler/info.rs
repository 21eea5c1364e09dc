//! What the scheduler knows about a node ([`NodeInfo`]: the node's own
//! facts plus the totals of the pods bound to it) and about a pod waiting
//! to be placed ([`PodInfo`]), both extracted once from the API objects so
//! that filtering and scoring do no parsing.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, NodeSelector, Pod, Taint, Toleration};

use super::resources::{self, PodRequests, QuantityError, Resources};
use crate::selector::{Selector, SelectorError};

/// Pods a node admits when its status does not say (`allocatable.pods`
/// absent): the kubelet's default `--max-pods`.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// A node's scheduling-relevant facts, independent of the pods on it.
/// Two values compare equal when a scheduling decision could not differ,
/// which is how the runner tells a heartbeat from a real change.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `status.allocatable` (falling back to `status.capacity`) cpu/memory.
    pub allocatable: Resources,
    /// `status.allocatable.pods`, or [`DEFAULT_MAX_PODS`].
    pub allowed_pods: i64,
}

impl NodeFacts {
    /// Extracts the facts of `node`. Unparseable allocatable quantities
    /// count as zero (the node then fits only pods that request nothing),
    /// since a node's bad status must not stop the scheduler.
    pub fn from_node(node: &Node) -> NodeFacts {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let list = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let mut allocatable = Resources::ZERO;
        let mut allowed_pods = DEFAULT_MAX_PODS;
        if let Some(list) = list {
            if let Some(q) = list.get("cpu") {
                allocatable.milli_cpu = resources::milli_cpu(q).unwrap_or(0);
            }
            if let Some(q) = list.get("memory") {
                allocatable.memory = resources::value(q).unwrap_or(0);
            }
            if let Some(q) = list.get("pods") {
                allowed_pods = resources::value(q).unwrap_or(0);
            }
        }
        let spec = node.spec.as_ref();
        NodeFacts {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            allocatable,
            allowed_pods,
        }
    }
}

/// What one bound pod adds to its node's totals. Kept per pod so removing
/// the pod subtracts exactly what adding it added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    /// Effective and non-zero requests.
    pub requests: PodRequests,
    /// uid of the pod's controller owner, for spreading.
    pub owner_uid: Option<String>,
}

impl PodUsage {
    /// The usage of `pod`. A pod whose quantities do not parse counts as
    /// requesting nothing: it is already bound, and refusing to account
    /// for it would not unbind it.
    pub fn of(pod: &Pod) -> PodUsage {
        PodUsage {
            requests: resources::pod_requests(pod).unwrap_or_default(),
            owner_uid: controller_uid(pod),
        }
    }
}

/// A node with the totals of the pods bound to it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's own facts.
    pub facts: NodeFacts,
    /// Sum of the effective requests of bound pods.
    pub requested: Resources,
    /// Sum of the non-zero requests of bound pods (for scoring).
    pub non_zero_requested: Resources,
    /// Number of bound pods.
    pub pod_count: i64,
    /// Bound pods per controller-owner uid.
    pub owner_counts: HashMap<String, usize>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(facts: NodeFacts) -> NodeInfo {
        NodeInfo {
            facts,
            requested: Resources::ZERO,
            non_zero_requested: Resources::ZERO,
            pod_count: 0,
            owner_counts: HashMap::new(),
        }
    }

    /// Counts a pod bound to this node.
    pub fn add(&mut self, usage: &PodUsage) {
        self.requested += usage.requests.requests;
        self.non_zero_requested += usage.requests.non_zero;
        self.pod_count += 1;
        if let Some(uid) = &usage.owner_uid {
            *self.owner_counts.entry(uid.clone()).or_default() += 1;
        }
    }

    /// Stops counting a pod previously [`add`](NodeInfo::add)ed.
    pub fn remove(&mut self, usage: &PodUsage) {
        self.requested = self.requested - usage.requests.requests;
        self.non_zero_requested = self.non_zero_requested - usage.requests.non_zero;
        self.pod_count -= 1;
        if let Some(uid) = &usage.owner_uid
            && let Some(n) = self.owner_counts.get_mut(uid)
        {
            *n -= 1;
            if *n == 0 {
                self.owner_counts.remove(uid);
            }
        }
    }

    /// Bound pods with the controller owner `uid`.
    pub fn owner_count(&self, uid: &str) -> usize {
        self.owner_counts.get(uid).copied().unwrap_or(0)
    }
}

/// Why a pod cannot be considered for scheduling at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodInfoError {
    /// A container request does not parse.
    #[error("invalid resource request")]
    Quantity(#[from] QuantityError),
    /// `spec.nodeSelector` is not valid label syntax.
    #[error("invalid nodeSelector")]
    NodeSelector(#[from] SelectorError),
}

/// A pod waiting to be placed, pre-digested.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Effective and non-zero requests.
    pub requests: PodRequests,
    /// `spec.nodeSelector` as a selector (`None`: no constraint).
    pub node_selector: Option<Selector>,
    /// `spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Option<NodeSelector>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// uid of the pod's controller owner, for spreading.
    pub owner_uid: Option<String>,
}

impl PodInfo {
    /// Digests `pod`.
    ///
    /// # Errors
    /// [`PodInfoError`] when a request quantity or the node selector is
    /// malformed (the API server's validation normally prevents both).
    pub fn from_pod(pod: &Pod) -> Result<PodInfo, PodInfoError> {
        let spec = pod.spec.as_ref();
        let node_selector = match spec.and_then(|s| s.node_selector.as_ref()) {
            Some(map) if !map.is_empty() => Some(Selector::from_map(map)?),
            _ => None,
        };
        Ok(PodInfo {
            requests: resources::pod_requests(pod)?,
            node_selector,
            required_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|na| {
                    na.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            owner_uid: controller_uid(pod),
        })
    }

    /// What binding this pod adds to a node's totals.
    pub fn usage(&self) -> PodUsage {
        PodUsage {
            requests: self.requests,
            owner_uid: self.owner_uid.clone(),
        }
    }
}

/// uid of the ownerReference with `controller: true`, if any.
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// Whether a pod still occupies its node: bound and not finished. Pods in
/// phase `Succeeded` or `Failed` hold no resources (kube-scheduler's cache
/// leaves them out the same way).
pub fn occupies_node(pod: &Pod) -> Option<&str> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}
