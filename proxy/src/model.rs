//! The service model both dataplanes program: what a node should forward,
//! built from Kubernetes Services and EndpointSlices, plus a pure diff.
//!
//! Everything here is pure data and logic: no IO, no kernel. The eBPF and
//! iptables dataplanes consume a [`DesiredState`] and decide themselves how
//! to realise it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service (set by the endpoint
/// slice controller).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Session affinity timeout Kubernetes applies when `sessionAffinity:
/// ClientIP` is set without `sessionAffinityConfig` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;

/// Transport protocol of a service port. SCTP services are not proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Lower-case name, as iptables, conntrack and kube-proxy's chain hashes
    /// spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Parses a Kubernetes protocol field; `None` means the API default
    /// (TCP). Returns `None` for protocols we do not proxy (SCTP, unknown).
    pub fn from_k8s(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortKey {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Port name; empty for the single unnamed port a Service may have.
    pub port_name: String,
}

impl ServicePortKey {
    /// Builds a key from its three parts.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port_name: impl Into<String>,
    ) -> ServicePortKey {
        ServicePortKey {
            namespace: namespace.into(),
            name: name.into(),
            port_name: port_name.into(),
        }
    }
}

/// `ns/name:port`, or `ns/name` for an unnamed port (kube-proxy's
/// `ServicePortName` spelling, so rule comments read the same).
impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

/// One backend of a service port, with the EndpointSlice conditions that
/// decide whether it receives traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Backend (pod) address.
    pub addr: Ipv4Addr,
    /// Backend port (the resolved target port).
    pub port: u16,
    /// Node the backend runs on, if the slice says.
    pub node_name: Option<String>,
    /// Whether the backend runs on this node.
    pub is_local: bool,
    /// `conditions.ready` (nil counts as ready).
    pub ready: bool,
    /// `conditions.serving` (nil counts as serving).
    pub serving: bool,
    /// `conditions.terminating` (nil counts as not terminating).
    pub terminating: bool,
}

impl Endpoint {
    /// `ip:port`, the form DNAT and rule comments use.
    pub fn addr_port(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Everything a dataplane needs to forward one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Which service port this is.
    pub key: ServicePortKey,
    /// The IPv4 ClusterIP; `None` if the service has none we can serve.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// NodePort, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// `externalTrafficPolicy: Local` (only meaningful with a node port).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` timeout; `None` without affinity.
    pub affinity_timeout_secs: Option<u32>,
    /// All endpoints the slices list for this port, sorted by address.
    pub endpoints: Vec<Endpoint>,
}

impl ServiceEntry {
    /// Endpoints that receive traffic arriving at this node, with
    /// Kubernetes semantics (kube-proxy's `CategorizeEndpoints`):
    ///
    /// - under the Cluster policy: ready endpoints; if none is ready
    ///   anywhere, the serving-and-terminating ones (graceful drain);
    /// - under the Local policy: the same two steps over this node's
    ///   endpoints only.
    ///
    /// The policy is `externalTrafficPolicy` when `for_external` (NodePort
    /// traffic) and `internalTrafficPolicy` otherwise (ClusterIP traffic).
    pub fn usable_endpoints(&self, for_external: bool) -> Vec<&Endpoint> {
        let local = if for_external {
            self.external_local
        } else {
            self.internal_local
        };
        if local {
            self.local_endpoints()
        } else {
            self.cluster_endpoints()
        }
    }

    /// Endpoints the Cluster traffic policy uses: ready ones, else the
    /// serving-terminating ones.
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        pick_ready_else_terminating(self.endpoints.iter())
    }

    /// Endpoints the Local traffic policy uses: this node's ready ones,
    /// else this node's serving-terminating ones.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        pick_ready_else_terminating(self.endpoints.iter().filter(|ep| ep.is_local))
    }

    /// Whether any endpoint anywhere could take traffic. When false, the
    /// service should refuse connections (REJECT) rather than drop them.
    pub fn has_any_usable_endpoint(&self) -> bool {
        self.endpoints
            .iter()
            .any(|ep| ep.ready || ep.serving_terminating())
    }
}

fn pick_ready_else_terminating<'a>(
    endpoints: impl Iterator<Item = &'a Endpoint> + Clone,
) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.clone().filter(|ep| ep.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|ep| ep.serving_terminating()).collect()
}

/// What this node's proxy should implement, in deterministic (key) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Every proxied service port.
    pub services: BTreeMap<ServicePortKey, ServiceEntry>,
    /// This node's name (decides which endpoints are local).
    pub node_name: String,
    /// This node's IPv4 addresses.
    pub node_ips: Vec<Ipv4Addr>,
    /// Pod CIDR of the whole cluster, when known: traffic from outside it
    /// to a ClusterIP is masqueraded, and pod traffic to a Local-policy
    /// NodePort is treated as cluster traffic (kube-proxy's local detector).
    pub cluster_cidr: Option<Ipv4Network>,
}

impl DesiredState {
    /// Builds the desired state from API objects.
    ///
    /// Slices are matched to services by the `kubernetes.io/service-name`
    /// label within the service's namespace, and slice ports to service
    /// ports by name (and protocol). Only IPv4 is handled: IPv6 slices and
    /// IPv6-only services are skipped, as are headless and ExternalName
    /// services and SCTP ports. An endpoint listed by several slices counts
    /// once. `cluster_cidr` is left `None`; set it afterwards if known.
    pub fn from_k8s(
        node_name: impl Into<String>,
        node_ips: Vec<Ipv4Addr>,
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> DesiredState {
        let node_name = node_name.into();
        // Slices by (namespace, service name), in slice-name order so that
        // duplicate endpoints resolve the same way every time.
        let mut slices_by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            slices_by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
        for list in slices_by_service.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }

        let mut state = DesiredState {
            services: BTreeMap::new(),
            node_name,
            node_ips,
            cluster_cidr: None,
        };
        for service in services {
            let (Some(namespace), Some(name), Some(spec)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
                service.spec.as_ref(),
            ) else {
                continue;
            };
            let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
            if svc_type == "ExternalName" {
                continue;
            }
            let Some(cluster_ip) = service_ipv4(spec) else {
                // Headless, not yet allocated, or IPv6-only.
                continue;
            };
            let has_node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
            let external_local =
                has_node_ports && spec.external_traffic_policy.as_deref() == Some("Local");
            let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
            let affinity_timeout_secs = (spec.session_affinity.as_deref() == Some("ClientIP"))
                .then(|| {
                    spec.session_affinity_config
                        .as_ref()
                        .and_then(|config| config.client_ip.as_ref())
                        .and_then(|client_ip| client_ip.timeout_seconds)
                        .and_then(|secs| u32::try_from(secs).ok())
                        .filter(|secs| *secs > 0)
                        .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS)
                });
            let service_slices = slices_by_service
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or_default();

            for port in spec.ports.iter().flatten() {
                let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
                    continue;
                };
                let Ok(service_port) = u16::try_from(port.port) else {
                    continue;
                };
                let port_name = port.name.clone().unwrap_or_default();
                let node_port = if has_node_ports {
                    port.node_port
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p != 0)
                } else {
                    None
                };
                let key = ServicePortKey::new(namespace, name, port_name);
                let endpoints =
                    endpoints_for_port(service_slices, &key.port_name, protocol, &state.node_name);
                state.services.insert(
                    key.clone(),
                    ServiceEntry {
                        key,
                        cluster_ip: Some(cluster_ip),
                        port: service_port,
                        protocol,
                        node_port,
                        external_local,
                        internal_local,
                        affinity_timeout_secs,
                        endpoints,
                    },
                );
            }
        }
        state
    }

    /// Recomputes the entries of the Services named in `touched`
    /// (namespace, name) and leaves every other entry alone; returns the
    /// keys whose entry appeared, changed or went away. `services` are the
    /// current objects of (at least) the touched Services that still exist;
    /// `slices` the current EndpointSlices (at least all of the touched
    /// Services'). The result equals [`DesiredState::from_k8s`] over all
    /// current objects (it is built with it), so a proxy can follow watch
    /// events in time proportional to what they touched.
    pub fn refresh_services<'a>(
        &mut self,
        touched: &BTreeSet<(String, String)>,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> BTreeSet<ServicePortKey> {
        // Called for every slice of the cluster: looked up by borrowed
        // names, without allocating per call.
        let mut by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (ns, name) in touched {
            by_namespace.entry(ns).or_default().insert(name);
        }
        let is_touched = |namespace: Option<&str>, name: Option<&str>| match (namespace, name) {
            (Some(ns), Some(n)) => by_namespace.get(ns).is_some_and(|names| names.contains(n)),
            _ => false,
        };
        let services: Vec<Service> = services
            .into_iter()
            .filter(|s| is_touched(s.metadata.namespace.as_deref(), s.metadata.name.as_deref()))
            .cloned()
            .collect();
        let slices: Vec<EndpointSlice> = slices
            .into_iter()
            .filter(|s| {
                let service = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
                is_touched(s.metadata.namespace.as_deref(), service.map(String::as_str))
            })
            .cloned()
            .collect();
        let mut fresh =
            DesiredState::from_k8s(self.node_name.clone(), Vec::new(), &services, &slices).services;

        let mut changed = BTreeSet::new();
        for (namespace, name) in touched {
            let first = ServicePortKey::new(namespace.as_str(), name.as_str(), "");
            let old: Vec<ServicePortKey> = self
                .services
                .range(first..)
                .take_while(|(k, _)| &k.namespace == namespace && &k.name == name)
                .map(|(k, _)| k.clone())
                .collect();
            for key in old {
                let entry = self.services.remove(&key);
                match fresh.remove(&key) {
                    Some(new) => {
                        if entry.as_ref() != Some(&new) {
                            changed.insert(key.clone());
                        }
                        self.services.insert(key, new);
                    }
                    None => {
                        changed.insert(key);
                    }
                }
            }
        }
        // Ports that did not exist before.
        for (key, entry) in fresh {
            changed.insert(key.clone());
            self.services.insert(key, entry);
        }
        changed
    }

    /// Whether the node-wide settings (everything but the services) match.
    /// Dataplanes re-render everything when these change.
    pub fn same_node_config(&self, other: &DesiredState) -> bool {
        self.node_name == other.node_name
            && self.node_ips == other.node_ips
            && self.cluster_cidr == other.cluster_cidr
    }
}

/// The service's IPv4 ClusterIP, or `None` when headless, unallocated or
/// IPv6-only.
fn service_ipv4(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Option<Ipv4Addr> {
    let primary = spec.cluster_ip.as_deref();
    if matches!(primary, None | Some("") | Some("None")) {
        return None;
    }
    primary
        .into_iter()
        .chain(spec.cluster_ips.iter().flatten().map(String::as_str))
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

fn endpoints_for_port(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut seen: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
    let mut endpoints = Vec::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::from_k8s(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            // kube-proxy uses only the first address of an endpoint.
            let Some(addr) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if !seen.insert((addr, port)) {
                continue;
            }
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            endpoints.push(Endpoint {
                addr,
                port,
                node_name: ep.node_name.clone(),
                is_local: ep.node_name.as_deref() == Some(node_name),
                ready,
                serving,
                terminating,
            });
        }
    }
    endpoints.sort_by_key(|ep| (ep.addr, ep.port));
    endpoints
}

/// Service ports that differ between two desired states, each list sorted
/// by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceChanges {
    /// Keys only in the new state.
    pub added: Vec<ServicePortKey>,
    /// Keys in both whose entries differ.
    pub updated: Vec<ServicePortKey>,
    /// Keys only in the old state.
    pub removed: Vec<ServicePortKey>,
}

impl ServiceChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// Number of service ports touched.
    pub fn len(&self) -> usize {
        self.added.len() + self.updated.len() + self.removed.len()
    }

    /// Every touched key, in key order.
    pub fn keys(&self) -> BTreeSet<&ServicePortKey> {
        self.added
            .iter()
            .chain(&self.updated)
            .chain(&self.removed)
            .collect()
    }
}

/// Compares two states service by service (node-wide settings are not
/// compared; see [`DesiredState::same_node_config`]).
pub fn diff(old: &DesiredState, new: &DesiredState) -> ServiceChanges {
    let mut changes = ServiceChanges::default();
    for (key, entry) in &new.services {
        match old.services.get(key) {
            None => changes.added.push(key.clone()),
            Some(previous) if previous != entry => changes.updated.push(key.clone()),
            Some(_) => {}
        }
    }
    for key in old.services.keys() {
        if !new.services.contains_key(key) {
            changes.removed.push(key.clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort, ServiceSpec, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ep(addr: [u8; 4], local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::from(addr),
            port: 8080,
            node_name: Some(if local { "n1" } else { "n2" }.to_string()),
            is_local: local,
            ready,
            serving,
            terminating,
        }
    }

    fn entry(endpoints: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry {
            key: ServicePortKey::new("default", "web", "http"),
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: Some(30080),
            external_local: false,
            internal_local: false,
            affinity_timeout_secs: None,
            endpoints,
        }
    }

    fn addrs(eps: Vec<&Endpoint>) -> Vec<Ipv4Addr> {
        eps.into_iter().map(|e| e.addr).collect()
    }

    #[test]
    fn key_display_matches_kube_proxy() {
        assert_eq!(
            ServicePortKey::new("ns", "svc", "http").to_string(),
            "ns/svc:http"
        );
        assert_eq!(ServicePortKey::new("ns", "svc", "").to_string(), "ns/svc");
    }

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let e = entry(vec![
            ep([10, 0, 0, 1], false, true, true, false),
            ep([10, 0, 0, 2], false, false, true, true),
            ep([10, 0, 0, 3], false, false, false, false),
        ]);
        assert_eq!(
            addrs(e.usable_endpoints(false)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert_eq!(
            addrs(e.usable_endpoints(true)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
    }

    #[test]
    fn serving_terminating_used_only_when_nothing_ready() {
        let e = entry(vec![
            ep([10, 0, 0, 1], false, false, true, true),
            ep([10, 0, 0, 2], false, false, false, true),
            ep([10, 0, 0, 3], false, false, false, false),
        ]);
        assert_eq!(
            addrs(e.usable_endpoints(false)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert!(e.has_any_usable_endpoint());
        let none = entry(vec![ep([10, 0, 0, 3], false, false, false, false)]);
        assert!(none.usable_endpoints(false).is_empty());
        assert!(!none.has_any_usable_endpoint());
    }

    #[test]
    fn external_local_policy_uses_only_local_endpoints() {
        let mut e = entry(vec![
            ep([10, 0, 0, 1], true, true, true, false),
            ep([10, 0, 0, 2], false, true, true, false),
        ]);
        e.external_local = true;
        assert_eq!(
            addrs(e.usable_endpoints(true)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        // Cluster traffic keeps using every ready endpoint.
        assert_eq!(e.usable_endpoints(false).len(), 2);
    }

    #[test]
    fn local_policy_falls_back_to_local_terminating_not_remote_ready() {
        let mut e = entry(vec![
            ep([10, 0, 0, 1], true, false, true, true),
            ep([10, 0, 0, 2], false, true, true, false),
        ]);
        e.external_local = true;
        assert_eq!(
            addrs(e.usable_endpoints(true)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        // Cluster policy: a ready endpoint exists, so the terminating one is not used.
        assert_eq!(
            addrs(e.usable_endpoints(false)),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn internal_local_policy_applies_to_cluster_traffic() {
        let mut e = entry(vec![
            ep([10, 0, 0, 1], true, true, true, false),
            ep([10, 0, 0, 2], false, true, true, false),
        ]);
        e.internal_local = true;
        assert_eq!(
            addrs(e.usable_endpoints(false)),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert_eq!(e.usable_endpoints(true).len(), 2);
    }

    fn service(name: &str, type_: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(
        name: Option<&str>,
        port: i32,
        protocol: Option<&str>,
        node_port: Option<i32>,
    ) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            protocol: protocol.map(Into::into),
            node_port,
            ..Default::default()
        }
    }

    /// (address, node, ready, serving, terminating)
    type SliceEndpointSpec<'a> = (
        &'a str,
        Option<&'a str>,
        Option<bool>,
        Option<bool>,
        Option<bool>,
    );

    fn slice(
        name: &str,
        service: &str,
        address_type: &str,
        ports: Vec<(Option<&str>, i32, Option<&str>)>,
        endpoints: Vec<SliceEndpointSpec<'_>>,
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                labels: Some(
                    [(SERVICE_NAME_LABEL.to_string(), service.to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: name.map(Into::into),
                        port: Some(port),
                        protocol: protocol.map(Into::into),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: Some(
                endpoints
                    .into_iter()
                    .map(|(addr, node, ready, serving, terminating)| SliceEndpoint {
                        addresses: vec![addr.into()],
                        node_name: node.map(Into::into),
                        conditions: Some(EndpointConditions {
                            ready,
                            serving,
                            terminating,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn refresh_follows_touched_services_like_a_full_rebuild() {
        let ready = |addr: &'static str| (addr, Some("n1"), Some(true), None, None);
        let http = |np| vec![port(Some("http"), 80, None, np)];
        let mut services = vec![
            service("a", "ClusterIP", "10.96.0.1", http(None)),
            service("b", "NodePort", "10.96.0.2", http(Some(30002))),
            service("c", "ClusterIP", "10.96.0.3", http(None)),
        ];
        let mut slices = vec![
            slice(
                "a-1",
                "a",
                "IPv4",
                vec![(Some("http"), 8080, None)],
                vec![ready("10.244.0.1")],
            ),
            slice(
                "b-1",
                "b",
                "IPv4",
                vec![(Some("http"), 8080, None)],
                vec![ready("10.244.0.2")],
            ),
            slice(
                "c-1",
                "c",
                "IPv4",
                vec![(Some("http"), 8080, None)],
                vec![ready("10.244.0.3")],
            ),
        ];
        let mut state = DesiredState::from_k8s("n1", vec![], &services, &slices);

        // a: an endpoint added; b: deleted with its slice; c: untouched;
        // d: new, with two ports.
        slices[0] = slice(
            "a-1",
            "a",
            "IPv4",
            vec![(Some("http"), 8080, None)],
            vec![ready("10.244.0.1"), ready("10.244.0.9")],
        );
        services.remove(1);
        slices.remove(1);
        services.push(service(
            "d",
            "ClusterIP",
            "10.96.0.4",
            vec![
                port(Some("http"), 80, None, None),
                port(Some("dns"), 53, Some("UDP"), None),
            ],
        ));
        let touched: BTreeSet<(String, String)> = ["a", "b", "d"]
            .iter()
            .map(|n| ("default".to_owned(), (*n).to_owned()))
            .collect();
        let changed = state.refresh_services(&touched, &services, &slices);
        assert_eq!(
            state,
            DesiredState::from_k8s("n1", vec![], &services, &slices)
        );
        let names: Vec<String> = changed.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "default/a:http",
                "default/b:http",
                "default/d:dns",
                "default/d:http"
            ]
        );

        // Touching a service that did not change reports nothing.
        let only_c = BTreeSet::from([("default".to_owned(), "c".to_owned())]);
        assert!(
            state
                .refresh_services(&only_c, &services, &slices)
                .is_empty()
        );
    }

    #[test]
    fn from_k8s_matches_slices_by_label_and_port_name() {
        let mut web = service(
            "web",
            "NodePort",
            "10.96.0.10",
            vec![
                port(Some("http"), 80, None, Some(30080)),
                port(Some("dns"), 53, Some("UDP"), Some(30053)),
                port(Some("sctp"), 99, Some("SCTP"), None),
            ],
        );
        if let Some(spec) = web.spec.as_mut() {
            spec.external_traffic_policy = Some("Local".into());
            spec.session_affinity = Some("ClientIP".into());
            spec.session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(60),
                }),
            });
        }
        let slices = vec![
            // Listed out of name order on purpose; the duplicate endpoint
            // 10.244.1.5 must count once.
            slice(
                "web-b",
                "web",
                "IPv4",
                vec![(Some("http"), 8080, None)],
                vec![("10.244.1.5", Some("n1"), Some(true), None, None)],
            ),
            slice(
                "web-a",
                "web",
                "IPv4",
                vec![
                    (Some("http"), 8080, Some("TCP")),
                    (Some("dns"), 5353, Some("UDP")),
                ],
                vec![
                    (
                        "10.244.2.7",
                        Some("n2"),
                        Some(false),
                        Some(true),
                        Some(true),
                    ),
                    ("10.244.1.5", Some("n1"), None, None, None),
                ],
            ),
            slice(
                "web-v6",
                "web",
                "IPv6",
                vec![(Some("http"), 8080, None)],
                vec![("fd00::1", Some("n1"), Some(true), None, None)],
            ),
            slice(
                "other",
                "other",
                "IPv4",
                vec![(Some("http"), 9999, None)],
                vec![("10.244.9.9", Some("n1"), Some(true), None, None)],
            ),
        ];
        let state =
            DesiredState::from_k8s("n1", vec![Ipv4Addr::new(192, 168, 1, 1)], &[web], &slices);
        assert_eq!(state.services.len(), 2, "SCTP port skipped: {state:#?}");

        let http = &state.services[&ServicePortKey::new("default", "web", "http")];
        assert_eq!(http.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(
            (http.port, http.protocol, http.node_port),
            (80, Protocol::Tcp, Some(30080))
        );
        assert!(http.external_local);
        assert!(!http.internal_local);
        assert_eq!(http.affinity_timeout_secs, Some(60));
        assert_eq!(
            http.endpoints,
            vec![
                Endpoint {
                    addr: Ipv4Addr::new(10, 244, 1, 5),
                    port: 8080,
                    node_name: Some("n1".into()),
                    is_local: true,
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                Endpoint {
                    addr: Ipv4Addr::new(10, 244, 2, 7),
                    port: 8080,
                    node_name: Some("n2".into()),
                    is_local: false,
                    ready: false,
                    serving: true,
                    terminating: true,
                },
            ]
        );

        let dns = &state.services[&ServicePortKey::new("default", "web", "dns")];
        assert_eq!(
            (dns.port, dns.protocol, dns.node_port),
            (53, Protocol::Udp, Some(30053))
        );
        assert_eq!(dns.endpoints.len(), 2);
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
    }

    #[test]
    fn from_k8s_skips_headless_external_name_and_ipv6() {
        let services = vec![
            service(
                "headless",
                "ClusterIP",
                "None",
                vec![port(None, 80, None, None)],
            ),
            service("ext", "ExternalName", "", vec![port(None, 80, None, None)]),
            service(
                "v6",
                "ClusterIP",
                "fd00::10",
                vec![port(None, 80, None, None)],
            ),
            service(
                "plain",
                "ClusterIP",
                "10.96.0.1",
                vec![port(None, 443, None, Some(30443))],
            ),
        ];
        let state = DesiredState::from_k8s("n1", vec![], &services, &[]);
        let keys: Vec<String> = state.services.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["default/plain"]);
        let plain = &state.services[&ServicePortKey::new("default", "plain", "")];
        assert_eq!(plain.node_port, None, "ClusterIP services get no node port");
        assert_eq!(plain.affinity_timeout_secs, None);
        assert!(plain.endpoints.is_empty());
    }

    #[test]
    fn from_k8s_defaults_affinity_timeout() {
        let mut svc = service(
            "s",
            "ClusterIP",
            "10.96.0.2",
            vec![port(None, 80, None, None)],
        );
        if let Some(spec) = svc.spec.as_mut() {
            spec.session_affinity = Some("ClientIP".into());
        }
        let state = DesiredState::from_k8s("n1", vec![], &[svc], &[]);
        let entry = state.services.values().next().expect("one service");
        assert_eq!(
            entry.affinity_timeout_secs,
            Some(DEFAULT_AFFINITY_TIMEOUT_SECS)
        );
    }

    #[test]
    fn from_k8s_is_deterministic_under_input_order() {
        let services = vec![
            service(
                "b",
                "ClusterIP",
                "10.96.0.2",
                vec![port(None, 80, None, None)],
            ),
            service(
                "a",
                "ClusterIP",
                "10.96.0.1",
                vec![port(None, 80, None, None)],
            ),
        ];
        let slices = vec![
            slice(
                "a-1",
                "a",
                "IPv4",
                vec![(None, 80, None)],
                vec![("10.1.0.9", None, None, None, None)],
            ),
            slice(
                "a-2",
                "a",
                "IPv4",
                vec![(None, 80, None)],
                vec![("10.1.0.3", None, None, None, None)],
            ),
        ];
        let forward = DesiredState::from_k8s("n1", vec![], &services, &slices);
        let mut rev_services = services.clone();
        rev_services.reverse();
        let mut rev_slices = slices.clone();
        rev_slices.reverse();
        let backward = DesiredState::from_k8s("n1", vec![], &rev_services, &rev_slices);
        assert_eq!(forward, backward);
        let a = &forward.services[&ServicePortKey::new("default", "a", "")];
        assert_eq!(
            a.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(10, 1, 0, 9)]
        );
    }

    #[test]
    fn diff_classifies_by_key() {
        let mut old = DesiredState::default();
        let mut new = DesiredState::default();
        let keep = entry(vec![ep([10, 0, 0, 1], false, true, true, false)]);
        let mut changed = keep.clone();
        changed.key = ServicePortKey::new("default", "changed", "");
        let mut changed_new = changed.clone();
        changed_new.endpoints[0].ready = false;
        let mut gone = keep.clone();
        gone.key = ServicePortKey::new("default", "gone", "");
        let mut fresh = keep.clone();
        fresh.key = ServicePortKey::new("default", "fresh", "");
        for e in [&keep, &changed, &gone] {
            old.services.insert(e.key.clone(), e.clone());
        }
        for e in [&keep, &changed_new, &fresh] {
            new.services.insert(e.key.clone(), e.clone());
        }
        let changes = diff(&old, &new);
        assert_eq!(changes.added, [fresh.key.clone()]);
        assert_eq!(changes.updated, [changed.key.clone()]);
        assert_eq!(changes.removed, [gone.key.clone()]);
        assert_eq!(changes.len(), 3);
        assert!(diff(&new, &new).is_empty());
    }
}
