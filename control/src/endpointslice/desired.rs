//! Pure computation of the EndpointSlices a Service should have.
//!
//! Follows Kubernetes' EndpointSlice controller:
//! - only Services with a non-empty `spec.selector` (and not of type
//!   ExternalName) get managed slices; for the others the desired set is
//!   empty, so slices this controller made earlier are removed;
//! - one IPv4 endpoint per selected Pod in the Service's namespace that has
//!   an IPv4 pod IP and is not terminal (phase Succeeded/Failed);
//! - `serving` = Pod Ready condition true, `terminating` = deletion
//!   requested, `ready` = serving and not terminating — or always true when
//!   the Service sets `publishNotReadyAddresses`;
//! - ports are resolved per Pod (a named `targetPort` is looked up in the
//!   Pod's container ports) and endpoints are grouped by their resolved
//!   port set: one group of slices per distinct set;
//! - at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints per slice; a Service
//!   whose selector picks nothing keeps one empty placeholder slice.
//!
//! To keep writes minimal the slices that exist are a placement hint: an
//! endpoint stays in the slice that already holds it, new endpoints fill
//! free room, and slices no longer needed are recycled (renamed in place)
//! before new names are made. Given the same inputs the output is the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADDRESS_TYPE_IPV4, HEADLESS_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE,
    SERVICE_NAME_LABEL, ZONE_LABEL,
};
use crate::selector::{Selector, SelectorError};

/// Why desired slices could not be computed for a Service.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The Service object has no `metadata.name`.
    #[error("service has no metadata.name")]
    MissingName,
    /// The Service object has no `metadata.namespace`.
    #[error("service {name} has no metadata.namespace")]
    MissingNamespace {
        /// The Service's name.
        name: String,
    },
    /// `spec.selector` holds keys or values that are not valid label syntax.
    #[error("service {namespace}/{name}: spec.selector is not a valid label selector")]
    InvalidSelector {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// What is wrong with the selector.
        #[source]
        source: Box<SelectorError>,
    },
}

/// The selector whose Pods back `svc`, or `None` when this controller does
/// not manage the Service's endpoints: no `spec`, type ExternalName, or an
/// absent or empty `spec.selector` (Kubernetes leaves such Services'
/// endpoints to the user, so an empty map does *not* mean "all Pods").
///
/// # Errors
/// The selector map is not valid label syntax.
pub fn service_selector(svc: &Service) -> Result<Option<Selector>, SelectorError> {
    let Some(spec) = &svc.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    match &spec.selector {
        Some(map) if !map.is_empty() => Selector::from_map(map).map(Some),
        _ => Ok(None),
    }
}

/// Whether `slice` is one this controller manages for the Service `service_name`.
pub fn is_managed_slice(slice: &EndpointSlice, service_name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(MANAGED_BY_LABEL) == Some(MANAGED_BY) && label(SERVICE_NAME_LABEL) == Some(service_name)
}

/// The EndpointSlices `svc` should have, sorted by name.
///
/// `pods` may include Pods of other namespaces (they are skipped); `nodes`
/// give endpoint zones; `existing` are the slices in the Service's
/// namespace (only those [`is_managed_slice`] for this Service are looked
/// at) and only steer placement and naming. The result carries `name`,
/// `namespace`, labels and the controller owner reference; server-set
/// metadata is left empty.
///
/// # Errors
/// The Service lacks a name or namespace, or its selector is invalid.
pub fn desired_slices<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
    existing: &[EndpointSlice],
) -> Result<Vec<EndpointSlice>, DesiredError> {
    let name = svc
        .metadata
        .name
        .as_deref()
        .ok_or(DesiredError::MissingName)?;
    let namespace =
        svc.metadata
            .namespace
            .as_deref()
            .ok_or_else(|| DesiredError::MissingNamespace {
                name: name.to_owned(),
            })?;
    let selector = service_selector(svc).map_err(|source| DesiredError::InvalidSelector {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    let Some(selector) = selector else {
        return Ok(Vec::new());
    };

    let zones: HashMap<&str, &str> = nodes
        .into_iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(ZONE_LABEL)?;
            Some((n.metadata.name.as_deref()?, zone.as_str()))
        })
        .collect();
    let spec = svc.spec.as_ref();
    let service_ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);

    // Port set → (pod name → endpoint); BTreeMaps keep everything ordered.
    let mut groups: BTreeMap<PortKey, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != Some(namespace)
            || !selector.matches_opt(pod.metadata.labels.as_ref())
        {
            continue;
        }
        let Some((pod_name, endpoint)) =
            pod_endpoint(name, namespace, pod, &zones, publish_not_ready)
        else {
            continue;
        };
        let key = PortKey::new(&resolve_ports(service_ports, pod));
        groups.entry(key).or_default().insert(pod_name, endpoint);
    }

    let hints: Vec<&EndpointSlice> = {
        let mut h: Vec<&EndpointSlice> = existing
            .iter()
            .filter(|s| is_managed_slice(s, name) && s.address_type == ADDRESS_TYPE_IPV4)
            .filter(|s| s.metadata.name.is_some())
            .collect();
        h.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        h
    };
    let drafts = place(groups, &hints);
    let mut taken: BTreeSet<String> = existing
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let mut recycle: Vec<String> = {
        let claimed: BTreeSet<&str> = drafts.iter().filter_map(|d| d.name.as_deref()).collect();
        hints
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .filter(|n| !claimed.contains(n.as_str()))
            .collect()
    };
    // Pop from the front so the lowest names are reused first.
    recycle.reverse();

    let mut slices: Vec<EndpointSlice> = drafts
        .into_iter()
        .map(|draft| {
            let slice_name = draft
                .name
                .or_else(|| recycle.pop())
                .unwrap_or_else(|| fresh_name(name, &mut taken));
            build_slice(
                svc,
                name,
                namespace,
                slice_name,
                &draft.ports,
                draft.endpoints,
            )
        })
        .collect();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(slices)
}

/// A slice in the making: `name` is `Some` when it keeps an existing slice.
struct Draft {
    name: Option<String>,
    ports: PortKey,
    endpoints: Vec<Endpoint>,
}

/// Puts endpoints into slices, keeping each endpoint where `hints` already
/// hold it. Returns no drafts for emptied hint slices (their names are then
/// free for recycling), and one empty placeholder when there are no
/// endpoints at all.
fn place(
    groups: BTreeMap<PortKey, BTreeMap<String, Endpoint>>,
    hints: &[&EndpointSlice],
) -> Vec<Draft> {
    if groups.is_empty() {
        // Prefer a slice that already is an empty placeholder, then any.
        let is_placeholder = |s: &&&EndpointSlice| {
            s.endpoints.as_ref().is_none_or(Vec::is_empty)
                && s.ports.as_ref().is_none_or(Vec::is_empty)
        };
        let name = hints
            .iter()
            .find(is_placeholder)
            .or_else(|| hints.first())
            .and_then(|s| s.metadata.name.clone());
        return vec![Draft {
            name,
            ports: PortKey::default(),
            endpoints: Vec::new(),
        }];
    }
    let mut drafts = Vec::new();
    for (key, mut remaining) in groups {
        let mut kept: Vec<(String, BTreeMap<String, Endpoint>)> = Vec::new();
        for slice in hints
            .iter()
            .filter(|s| PortKey::new(s.ports.as_deref().unwrap_or_default()) == key)
        {
            let mut here = BTreeMap::new();
            for ep in slice.endpoints.iter().flatten() {
                if here.len() >= MAX_ENDPOINTS_PER_SLICE {
                    break;
                }
                if let Some(pod) = endpoint_pod_name(ep)
                    && let Some(desired) = remaining.remove(pod)
                {
                    here.insert(pod.to_owned(), desired);
                }
            }
            if let Some(name) = &slice.metadata.name {
                kept.push((name.clone(), here));
            }
        }
        // New endpoints fill the room left in kept slices, in name order.
        let mut leftovers = remaining.into_iter().peekable();
        for (_, here) in &mut kept {
            while here.len() < MAX_ENDPOINTS_PER_SLICE {
                let Some((pod, ep)) = leftovers.next() else {
                    break;
                };
                here.insert(pod, ep);
            }
        }
        for (name, here) in kept {
            if !here.is_empty() {
                drafts.push(Draft {
                    name: Some(name),
                    ports: key.clone(),
                    endpoints: here.into_values().collect(),
                });
            }
        }
        while leftovers.peek().is_some() {
            let endpoints: Vec<Endpoint> = leftovers
                .by_ref()
                .take(MAX_ENDPOINTS_PER_SLICE)
                .map(|(_, ep)| ep)
                .collect();
            drafts.push(Draft {
                name: None,
                ports: key.clone(),
                endpoints,
            });
        }
    }
    drafts
}

/// The Pod an endpoint points at, if its `targetRef` is a Pod.
pub(crate) fn endpoint_pod_name(ep: &Endpoint) -> Option<&str> {
    let target = ep.target_ref.as_ref()?;
    if target.kind.as_deref().is_some_and(|k| k != "Pod") {
        return None;
    }
    target.name.as_deref()
}

/// The endpoint for `pod`, or `None` when the Pod must not be an endpoint:
/// no name, terminal phase, or no IPv4 address.
fn pod_endpoint(
    service_name: &str,
    namespace: &str,
    pod: &Pod,
    zones: &HashMap<&str, &str>,
    publish_not_ready: bool,
) -> Option<(String, Endpoint)> {
    let pod_name = pod.metadata.name.as_deref()?;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let address = pod_ipv4(pod)?;
    let serving = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // As Kubernetes: a terminating Pod is never "ready" unless the Service
    // publishes not-ready addresses, but may still be "serving".
    let ready = publish_not_ready || (serving && !terminating);
    let spec = pod.spec.as_ref();
    let node_name = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node_name
        .as_deref()
        .and_then(|n| zones.get(n))
        .filter(|z| !z.is_empty())
        .map(|z| (*z).to_owned());
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(service_name))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    let endpoint = Endpoint {
        addresses: vec![address.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name,
        zone,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(pod_name.to_owned()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    };
    Some((pod_name.to_owned(), endpoint))
}

/// The Pod's IPv4 address: the first IPv4 entry of `status.podIPs`, else
/// `status.podIP` if it is IPv4.
fn pod_ipv4(pod: &Pod) -> Option<Ipv4Addr> {
    let status = pod.status.as_ref()?;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

/// The Service ports that resolve on `pod`, in Service order. A port whose
/// named `targetPort` the Pod does not declare (with the same protocol) is
/// left out, as Kubernetes does.
fn resolve_ports(service_ports: &[ServicePort], pod: &Pod) -> Vec<EndpointPort> {
    service_ports
        .iter()
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            let port = match &sp.target_port {
                None | Some(IntOrString::Int(0)) => sp.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => find_named_port(pod, name, &protocol)?,
            };
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// Looks a named port up in the Pod's containers and sidecars (init
/// containers with `restartPolicy: Always`, which keep running).
fn find_named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// A resolved port set in canonical (sorted) form, so that slices can be
/// grouped and compared whatever order their ports were written in.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PortKey(Vec<(String, String, i32, Option<String>)>);

impl PortKey {
    /// Canonical form of `ports`: missing name is "", missing protocol TCP.
    pub(crate) fn new(ports: &[EndpointPort]) -> Self {
        let mut key: Vec<_> = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    p.port.unwrap_or(0),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        key.sort();
        Self(key)
    }

    fn to_ports(&self) -> Vec<EndpointPort> {
        self.0
            .iter()
            .map(|(name, protocol, port, app_protocol)| EndpointPort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some(protocol.clone()),
                app_protocol: app_protocol.clone(),
            })
            .collect()
    }
}

fn build_slice(
    svc: &Service,
    service_name: &str,
    namespace: &str,
    slice_name: String,
    ports: &PortKey,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name),
            namespace: Some(namespace.to_owned()),
            labels: Some(slice_labels(svc, service_name)),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Service".to_owned(),
                name: service_name.to_owned(),
                uid: svc.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: ADDRESS_TYPE_IPV4.to_owned(),
        endpoints: Some(endpoints),
        ports: Some(ports.to_ports()),
    }
}

/// The Service's own labels (so consumers can filter slices as they filter
/// Services) plus the service-name, managed-by and headless labels, which
/// the Service cannot override.
fn slice_labels(svc: &Service, service_name: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), service_name.to_owned());
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    labels
}

/// generateName's alphabet (no vowels, no look-alikes): 27 characters.
const SUFFIX_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: u32 = 5;
const SUFFIX_SPACE: u64 = 27u64.pow(SUFFIX_LEN);
/// Coprime to 27^5 (not a multiple of 3), so `n ↦ start + n·STEP` visits
/// every suffix once before repeating.
const SUFFIX_STEP: u64 = 7_368_787;

/// A deterministic generateName-like slice name `<service>-<5 chars>` not in
/// `taken` (which it is added to). Distinct `n` give distinct suffixes, so
/// one of the first `taken.len() + 1` candidates is free.
fn fresh_name(service_name: &str, taken: &mut BTreeSet<String>) -> String {
    let start = fnv1a(service_name.as_bytes()) % SUFFIX_SPACE;
    let candidate = |n: u64| {
        let mut index = (start + n % SUFFIX_SPACE * SUFFIX_STEP) % SUFFIX_SPACE;
        let mut suffix = String::with_capacity(SUFFIX_LEN as usize);
        for _ in 0..SUFFIX_LEN {
            suffix.push(char::from(SUFFIX_ALPHABET[(index % 27) as usize]));
            index /= 27;
        }
        format!("{service_name}-{suffix}")
    };
    let bound = taken.len() as u64 + 1;
    let name = (0..bound)
        .map(candidate)
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| candidate(bound));
    taken.insert(name.clone());
    name
}

/// FNV-1a, 64 bit: a hash that is stable across builds and Rust versions,
/// unlike `DefaultHasher`, because names must not change on upgrade.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(crate) fn service(
        name: &str,
        selector: &[(&str, &str)],
        ports: Vec<ServicePort>,
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: (!selector.is_empty()).then(|| labels(selector)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    pub(crate) fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        }
    }

    pub(crate) fn pod(
        name: &str,
        pod_labels: &[(&str, &str)],
        ip: Option<&str>,
        ready: bool,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(labels(pod_labels)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "main".into(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(Into::into),
                pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn with_named_port(mut p: Pod, name: &str, container_port: i32) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0]
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    name: Some(name.into()),
                    container_port,
                    ..ContainerPort::default()
                });
        }
        p
    }

    fn node(name: &str, zone: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(&[(ZONE_LABEL, zone)])),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn desired(svc: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Vec<EndpointSlice> {
        desired_slices(svc, pods, &[node("node-a", "zone-1")], existing).unwrap()
    }

    /// (address, ready, serving, terminating) of every endpoint, in order.
    fn endpoints_of(slice: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
        slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                )
            })
            .collect()
    }

    fn ports_of(slice: &EndpointSlice) -> Vec<(String, i32)> {
        slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
            .collect()
    }

    fn web() -> Service {
        service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, Some(IntOrString::Int(8080)))],
        )
    }

    #[test]
    fn selected_pods_become_endpoints() {
        let pods = [
            pod("a", &[("app", "web")], Some("10.0.0.1"), true),
            pod("b", &[("app", "db")], Some("10.0.0.2"), true),
            pod("c", &[("app", "web"), ("x", "y")], Some("10.0.0.3"), true),
        ];
        let slices = desired(&web(), &pods, &[]);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(
            endpoints_of(s),
            vec![
                ("10.0.0.1".into(), true, true, false),
                ("10.0.0.3".into(), true, true, false)
            ]
        );
        assert_eq!(ports_of(s), vec![("http".into(), 8080)]);
        assert_eq!(s.address_type, "IPv4");
        let name = s.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        let l = s.metadata.labels.clone().unwrap();
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
        assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
        assert!(!l.contains_key(HEADLESS_LABEL));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Service", "web", "uid-web", Some(true))
        );
        let ep = &s.endpoints.as_ref().unwrap()[0];
        assert_eq!(ep.node_name.as_deref(), Some("node-a"));
        assert_eq!(ep.zone.as_deref(), Some("zone-1"));
        let target = ep.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        assert_eq!(ep.hostname, None);
    }

    #[test]
    fn no_match_gives_placeholder() {
        let pods = [pod("b", &[("app", "db")], Some("10.0.0.2"), true)];
        let slices = desired(&web(), &pods, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.as_ref().unwrap().is_empty());
        assert!(slices[0].ports.as_ref().unwrap().is_empty());
    }

    #[test]
    fn pods_of_other_namespaces_are_ignored() {
        let mut p = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        p.metadata.namespace = Some("other".into());
        assert!(endpoints_of(&desired(&web(), &[p], &[])[0]).is_empty());
    }

    #[test]
    fn label_change_moves_pod_out() {
        let mut p = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        let before = desired(&web(), std::slice::from_ref(&p), &[]);
        assert_eq!(endpoints_of(&before[0]).len(), 1);
        p.metadata.labels = Some(labels(&[("app", "web-v2")]));
        let after = desired(&web(), std::slice::from_ref(&p), &before);
        assert_eq!(after.len(), 1);
        assert!(endpoints_of(&after[0]).is_empty());
        // The same slice is reused as the placeholder rather than replaced.
        assert_eq!(after[0].metadata.name, before[0].metadata.name);
    }

    #[test]
    fn unready_pod_is_neither_ready_nor_serving() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), false)];
        assert_eq!(
            endpoints_of(&desired(&web(), &pods, &[])[0]),
            vec![("10.0.0.1".into(), false, false, false)]
        );
    }

    #[test]
    fn terminating_pod_serves_but_is_not_ready() {
        let mut ready = pod("a", &[("app", "web")], Some("10.0.0.1"), true);
        ready.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let mut unready = pod("b", &[("app", "web")], Some("10.0.0.2"), false);
        unready.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(
            endpoints_of(&desired(&web(), &[ready, unready], &[])[0]),
            vec![
                ("10.0.0.1".into(), false, true, true),
                ("10.0.0.2".into(), false, false, true)
            ]
        );
    }

    #[test]
    fn publish_not_ready_addresses_marks_all_ready() {
        let mut svc = web();
        if let Some(spec) = svc.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let mut terminating = pod("b", &[("app", "web")], Some("10.0.0.2"), true);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let pods = [
            pod("a", &[("app", "web")], Some("10.0.0.1"), false),
            terminating,
        ];
        assert_eq!(
            endpoints_of(&desired(&svc, &pods, &[])[0]),
            vec![
                ("10.0.0.1".into(), true, false, false),
                ("10.0.0.2".into(), true, true, true)
            ]
        );
    }

    #[test]
    fn pods_without_ipv4_or_terminal_are_skipped() {
        let mut succeeded = pod("s", &[("app", "web")], Some("10.0.0.4"), false);
        if let Some(st) = succeeded.status.as_mut() {
            st.phase = Some("Succeeded".into());
        }
        let mut failed = pod("f", &[("app", "web")], Some("10.0.0.5"), false);
        if let Some(st) = failed.status.as_mut() {
            st.phase = Some("Failed".into());
        }
        let pods = [
            pod("a", &[("app", "web")], Some("10.0.0.1"), true),
            pod("noip", &[("app", "web")], None, false),
            pod("v6", &[("app", "web")], Some("fd00::1"), true),
            succeeded,
            failed,
        ];
        assert_eq!(
            endpoints_of(&desired(&web(), &pods, &[])[0]),
            vec![("10.0.0.1".into(), true, true, false)]
        );
    }

    #[test]
    fn dual_stack_pod_uses_its_ipv4() {
        let mut p = pod("a", &[("app", "web")], Some("fd00::1"), true);
        if let Some(st) = p.status.as_mut() {
            st.pod_ips = Some(vec![
                PodIP {
                    ip: "fd00::1".into(),
                },
                PodIP {
                    ip: "10.0.0.9".into(),
                },
            ]);
        }
        assert_eq!(
            endpoints_of(&desired(&web(), &[p], &[])[0])[0].0,
            "10.0.0.9"
        );
    }

    #[test]
    fn named_target_port_resolution_and_grouping() {
        let svc = service(
            "web",
            &[("app", "web")],
            vec![
                port("http", 80, Some(IntOrString::String("web".into()))),
                port("metrics", 9000, Some(IntOrString::Int(9100))),
                port("plain", 81, None),
            ],
        );
        let pods = [
            with_named_port(
                pod("a", &[("app", "web")], Some("10.0.0.1"), true),
                "web",
                8080,
            ),
            with_named_port(
                pod("b", &[("app", "web")], Some("10.0.0.2"), true),
                "web",
                8080,
            ),
            with_named_port(
                pod("c", &[("app", "web")], Some("10.0.0.3"), true),
                "web",
                9090,
            ),
            // Lacks the named port: only in the group without "http".
            pod("d", &[("app", "web")], Some("10.0.0.4"), true),
        ];
        let slices = desired(&svc, &pods, &[]);
        assert_eq!(slices.len(), 3);
        type Group = (Vec<(String, i32)>, Vec<String>);
        let mut groups: Vec<Group> = slices
            .iter()
            .map(|s| {
                (
                    ports_of(s),
                    endpoints_of(s).into_iter().map(|e| e.0).collect(),
                )
            })
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            vec![
                (
                    vec![
                        ("http".into(), 8080),
                        ("metrics".into(), 9100),
                        ("plain".into(), 81)
                    ],
                    vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()]
                ),
                (
                    vec![
                        ("http".into(), 9090),
                        ("metrics".into(), 9100),
                        ("plain".into(), 81)
                    ],
                    vec!["10.0.0.3".to_owned()]
                ),
                (
                    vec![("metrics".into(), 9100), ("plain".into(), 81)],
                    vec!["10.0.0.4".to_owned()]
                ),
            ]
        );
        let names: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names.len(), 3, "slice names must be distinct");
    }

    #[test]
    fn named_port_protocol_must_match() {
        let mut sp = port("dns", 53, Some(IntOrString::String("dns".into())));
        sp.protocol = Some("UDP".into());
        let svc = service("dns", &[("app", "dns")], vec![sp]);
        // The container's "dns" port is TCP (default): no UDP port resolves.
        let p = with_named_port(
            pod("a", &[("app", "dns")], Some("10.0.0.1"), true),
            "dns",
            53,
        );
        let slices = desired(&svc, &[p], &[]);
        assert!(ports_of(&slices[0]).is_empty());
        assert_eq!(endpoints_of(&slices[0]).len(), 1);
    }

    #[test]
    fn headless_service_with_hostnames() {
        let mut svc = service("db", &[("app", "db")], vec![]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some("None".into());
        }
        let mut p0 = pod("db-0", &[("app", "db")], Some("10.0.0.1"), true);
        if let Some(spec) = p0.spec.as_mut() {
            spec.hostname = Some("db-0".into());
            spec.subdomain = Some("db".into());
        }
        let mut p1 = pod("db-1", &[("app", "db")], Some("10.0.0.2"), true);
        if let Some(spec) = p1.spec.as_mut() {
            spec.hostname = Some("db-1".into());
            spec.subdomain = Some("elsewhere".into());
        }
        let slices = desired(&svc, &[p0, p1], &[]);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.metadata.labels.as_ref().unwrap()[HEADLESS_LABEL], "");
        assert!(ports_of(s).is_empty());
        let hostnames: Vec<_> = s
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.hostname.clone())
            .collect();
        assert_eq!(hostnames, vec![Some("db-0".to_owned()), None]);
    }

    fn many_pods(n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                pod(
                    &format!("p{i:04}"),
                    &[("app", "web")],
                    Some(&format!("10.1.{}.{}", i / 250, i % 250 + 1)),
                    true,
                )
            })
            .collect()
    }

    #[test]
    fn more_than_max_endpoints_split() {
        let pods = many_pods(250);
        let slices = desired(&web(), &pods, &[]);
        let mut sizes: Vec<usize> = slices.iter().map(|s| endpoints_of(s).len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![50, 100, 100]);
        let all: BTreeSet<String> = slices
            .iter()
            .flat_map(|s| endpoints_of(s).into_iter().map(|e| e.0))
            .collect();
        assert_eq!(all.len(), 250);
        let names: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn existing_placement_is_kept() {
        let pods = many_pods(250);
        let first = desired(&web(), &pods, &[]);
        // Same inputs, same output.
        assert_eq!(desired(&web(), &pods, &first), first);
        // Dropping one pod changes only the slice that held it.
        let fewer: Vec<Pod> = pods
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some("p0123"))
            .cloned()
            .collect();
        let second = desired(&web(), &fewer, &first);
        let changed: Vec<_> = first
            .iter()
            .zip(&second)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.metadata.name.clone())
            .collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(
            second.iter().map(|s| &s.metadata.name).collect::<Vec<_>>(),
            first.iter().map(|s| &s.metadata.name).collect::<Vec<_>>()
        );
        // A new pod fills the free room instead of creating a slice.
        let mut more = fewer.clone();
        more.push(pod("zz", &[("app", "web")], Some("10.9.9.9"), true));
        let third = desired(&web(), &more, &second);
        assert_eq!(third.len(), 3);
        let holder = third
            .iter()
            .find(|s| endpoints_of(s).iter().any(|e| e.0 == "10.9.9.9"))
            .unwrap();
        assert_eq!(holder.metadata.name, changed[0]);
    }

    #[test]
    fn port_change_recycles_slice_names() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), true)];
        let before = desired(&web(), &pods, &[]);
        let svc = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, Some(IntOrString::Int(9999)))],
        );
        let after = desired(&svc, &pods, &before);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].metadata.name, before[0].metadata.name);
        assert_eq!(ports_of(&after[0]), vec![("http".into(), 9999)]);
    }

    #[test]
    fn services_without_selector_get_nothing() {
        let pods = [pod("a", &[("app", "web")], Some("10.0.0.1"), true)];
        let none = service("manual", &[], vec![port("http", 80, None)]);
        assert!(desired(&none, &pods, &[]).is_empty());
        let mut empty = none.clone();
        if let Some(spec) = empty.spec.as_mut() {
            spec.selector = Some(BTreeMap::new());
        }
        assert!(desired(&empty, &pods, &[]).is_empty());
        let mut external = web();
        if let Some(spec) = external.spec.as_mut() {
            spec.type_ = Some("ExternalName".into());
        }
        assert!(desired(&external, &pods, &[]).is_empty());
    }

    #[test]
    fn service_labels_are_copied_but_reserved_ones_win() {
        let mut svc = web();
        svc.metadata.labels = Some(labels(&[("team", "a"), (SERVICE_NAME_LABEL, "spoof")]));
        let slices = desired(&svc, &[], &[]);
        let l = slices[0].metadata.labels.clone().unwrap();
        assert_eq!(l["team"], "a");
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
    }

    #[test]
    fn invalid_selector_and_missing_metadata_are_errors() {
        let bad = service("web", &[("app", "not valid")], vec![]);
        assert!(matches!(
            desired_slices(&bad, &[], &[], &[]),
            Err(DesiredError::InvalidSelector { .. })
        ));
        let mut nameless = web();
        nameless.metadata.name = None;
        assert!(matches!(
            desired_slices(&nameless, &[], &[], &[]),
            Err(DesiredError::MissingName)
        ));
        let mut nsless = web();
        nsless.metadata.namespace = None;
        assert!(matches!(
            desired_slices(&nsless, &[], &[], &[]),
            Err(DesiredError::MissingNamespace { .. })
        ));
    }

    #[test]
    fn fresh_names_are_distinct_and_skip_taken() {
        let mut taken = BTreeSet::new();
        let a = fresh_name("web", &mut taken);
        let b = fresh_name("web", &mut taken);
        assert_ne!(a, b);
        let mut taken2: BTreeSet<String> = [a.clone()].into();
        assert_eq!(fresh_name("web", &mut taken2), b);
        // Pinned: names must not change across builds or upgrades, or a
        // restarted controller would churn every slice.
        assert_eq!(a, "web-5tksz");
        assert_eq!(b, "web-6wwnj");
        let mut many = BTreeSet::new();
        for _ in 0..500 {
            fresh_name("svc", &mut many);
        }
        assert_eq!(many.len(), 500);
    }
}
