//! The cluster as DNS sees it: an immutable snapshot of Services and their
//! endpoints, built from Kubernetes objects, and a handle that swaps
//! snapshots without ever blocking readers.
//!
//! Building a [`ClusterView`] is pure ([`ClusterView::from_objects`]); the
//! feeder (`crate::feeder`) builds the next one off to the side and
//! [`ViewHandle::publish`]es it with one atomic pointer swap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label on an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What kind of DNS records a Service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP (or one per family): A/AAAA answer with the ClusterIP(s).
    ClusterIp,
    /// `clusterIP: None`: A/AAAA answer with the endpoints themselves.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// Transport protocol of a port, as it appears in SRV names (`_tcp`, `_udp`, `_sctp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProtocol {
    /// TCP (the Kubernetes default when `protocol` is unset).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl PortProtocol {
    /// Parses a Kubernetes protocol string; unset means TCP, as in the API.
    /// Returns `None` for values Kubernetes does not define.
    pub fn from_k8s(protocol: Option<&str>) -> Option<Self> {
        match protocol {
            None => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("TCP") => Some(Self::Tcp),
            Some(p) if p.eq_ignore_ascii_case("UDP") => Some(Self::Udp),
            Some(p) if p.eq_ignore_ascii_case("SCTP") => Some(Self::Sctp),
            Some(_) => None,
        }
    }

    /// The SRV label for this protocol, without the underscore.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A port of a Service (service port) or of an EndpointSlice (target port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// The port's name; `None` when unnamed (no SRV name for it).
    pub name: Option<String>,
    /// Its protocol.
    pub protocol: PortProtocol,
    /// Port number.
    pub port: u16,
}

/// One endpoint of a Service, merged across the Service's EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    /// The endpoint's addresses (normally one).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready` (unset counts as ready, per the API's advice).
    pub ready: bool,
    /// `conditions.serving` (unset falls back to `ready`).
    pub serving: bool,
    /// `hostname`, which gives the endpoint a name under a headless Service.
    pub hostname: Option<String>,
    /// `targetRef.name` (normally the pod's name).
    pub target_ref_name: Option<String>,
    /// The ports of the slice this endpoint came from (target port numbers).
    pub ports: Arc<[PortEntry]>,
}

/// A Service and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// ClusterIPs (v4 and/or v6), empty unless `kind` is `ClusterIp`.
    pub cluster_ips: Vec<IpAddr>,
    /// Service ports.
    pub ports: Vec<PortEntry>,
    /// Endpoints from all of the Service's slices, sorted by first address.
    pub endpoints: Vec<EndpointEntry>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready_addresses: bool,
}

impl ServiceEntry {
    /// The endpoints DNS publishes: the ready ones, or all of them when the
    /// Service sets `publishNotReadyAddresses`.
    pub fn published_endpoints(&self) -> impl Iterator<Item = &EndpointEntry> {
        let all = self.publish_not_ready_addresses;
        self.endpoints.iter().filter(move |e| all || e.ready)
    }
}

/// Where a reverse (PTR) lookup of an address leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PtrTarget {
    /// The address is a ClusterIP of this Service (`svc.ns.svc.<domain>`).
    Service {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
    },
    /// The address is a published endpoint of this Service, named by its
    /// hostname, else (in pod-names mode) its pod, else its dashed address.
    Endpoint {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
        /// The endpoint's hostname, if it has one.
        hostname: Option<String>,
        /// The endpoint's targetRef name, if it has one.
        target_ref_name: Option<String>,
    },
}

/// An immutable snapshot of everything the DNS zone is built from.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    generation: u64,
    services: HashMap<String, HashMap<String, ServiceEntry>>,
    by_ip: HashMap<IpAddr, Vec<PtrTarget>>,
}

impl ClusterView {
    /// Builds a view from Services and EndpointSlices (pure).
    ///
    /// Objects without a namespace or name are skipped, as are unparsable
    /// IPs, FQDN-type slices, ports outside 1..=65535, and slices whose
    /// Service is not in `services`. The generation is 0 until the view is
    /// published through a [`ViewHandle`].
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut by_ns: HashMap<String, HashMap<String, ServiceEntry>> = HashMap::new();
        for svc in services {
            if let Some(entry) = service_entry(svc) {
                by_ns
                    .entry(entry.namespace.clone())
                    .or_default()
                    .insert(entry.name.clone(), entry);
            }
        }

        // Endpoints keyed by address so that one pod listed in two slices
        // (as happens while the controller moves it) appears once.
        let mut endpoints: HashMap<(String, String), BTreeMap<IpAddr, EndpointEntry>> =
            HashMap::new();
        for slice in slices {
            let Some(namespace) = slice.metadata.namespace.as_deref() else {
                continue;
            };
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            if !by_ns
                .get(namespace)
                .is_some_and(|m| m.contains_key(service.as_str()))
            {
                continue;
            }
            if !(slice.address_type == "IPv4" || slice.address_type == "IPv6") {
                continue;
            }
            let ports: Arc<[PortEntry]> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| port_entry(p.name.as_deref(), p.protocol.as_deref(), p.port?))
                .collect();
            let merged = endpoints
                .entry((namespace.to_owned(), service.clone()))
                .or_default();
            for ep in slice.endpoints.iter().flatten() {
                let addresses: Vec<IpAddr> =
                    ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                let Some(first) = addresses.first().copied() else {
                    continue;
                };
                let conditions = ep.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let entry = EndpointEntry {
                    addresses,
                    ready,
                    serving,
                    hostname: ep.hostname.clone().filter(|h| !h.is_empty()),
                    target_ref_name: ep.target_ref.as_ref().and_then(|r| r.name.clone()),
                    ports: ports.clone(),
                };
                merged
                    .entry(first)
                    .and_modify(|existing| {
                        existing.ready |= entry.ready;
                        existing.serving |= entry.serving;
                    })
                    .or_insert(entry);
            }
        }
        for ((ns, name), eps) in endpoints {
            if let Some(svc) = by_ns.get_mut(&ns).and_then(|m| m.get_mut(&name)) {
                svc.endpoints = eps.into_values().collect();
            }
        }

        let mut by_ip: HashMap<IpAddr, BTreeSet<PtrTarget>> = HashMap::new();
        for svc in by_ns.values().flat_map(|m| m.values()) {
            for ip in &svc.cluster_ips {
                by_ip.entry(*ip).or_default().insert(PtrTarget::Service {
                    namespace: svc.namespace.clone(),
                    service: svc.name.clone(),
                });
            }
            for ep in svc.published_endpoints() {
                for ip in &ep.addresses {
                    by_ip.entry(*ip).or_default().insert(PtrTarget::Endpoint {
                        namespace: svc.namespace.clone(),
                        service: svc.name.clone(),
                        hostname: ep.hostname.clone(),
                        target_ref_name: ep.target_ref_name.clone(),
                    });
                }
            }
        }

        Self {
            generation: 0,
            services: by_ns,
            by_ip: by_ip
                .into_iter()
                .map(|(ip, targets)| (ip, targets.into_iter().collect()))
                .collect(),
        }
    }

    /// The snapshot's generation: 0 for an unpublished view, then 1, 2, …
    /// in publication order. Used as the zone's SOA serial.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The Service `namespace/name`, if it exists.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.services.get(namespace)?.get(name)
    }

    /// Whether any Service lives in `namespace` (which makes
    /// `<namespace>.svc.<domain>` an existing name).
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.services.get(namespace).is_some_and(|m| !m.is_empty())
    }

    /// All Services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values().flat_map(|m| m.values())
    }

    /// Number of Services.
    pub fn service_count(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }

    /// What a PTR lookup of `ip` leads to: ClusterIP owners first, then
    /// endpoint owners, each sorted; empty when the address is unknown.
    pub fn ptr_targets(&self, ip: &IpAddr) -> &[PtrTarget] {
        self.by_ip.get(ip).map(Vec::as_slice).unwrap_or(&[])
    }

    /// All addresses that have PTR targets.
    pub fn ptr_addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.by_ip.keys()
    }
}

fn port_entry(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<PortEntry> {
    Some(PortEntry {
        name: name.filter(|n| !n.is_empty()).map(str::to_owned),
        protocol: PortProtocol::from_k8s(protocol)?,
        port: u16::try_from(port).ok().filter(|p| *p != 0)?,
    })
}

fn service_entry(svc: &Service) -> Option<ServiceEntry> {
    let namespace = svc.metadata.namespace.clone()?;
    let name = svc.metadata.name.clone()?;
    let spec = svc.spec.as_ref();
    let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref());

    let mut cluster_ips = Vec::new();
    let kind = if type_ == "ExternalName" {
        let target = spec
            .and_then(|s| s.external_name.as_deref())
            .filter(|n| !n.is_empty())?;
        ServiceKind::ExternalName(target.to_owned())
    } else if cluster_ip == Some("None") {
        ServiceKind::Headless
    } else {
        // clusterIPs (dual stack) when set, else the single clusterIP.
        let listed = spec.and_then(|s| s.cluster_ips.as_ref());
        let raw: Vec<&str> = match listed {
            Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
            _ => cluster_ip.into_iter().collect(),
        };
        for ip in raw {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !cluster_ips.contains(&ip)
            {
                cluster_ips.push(ip);
            }
        }
        ServiceKind::ClusterIp
    };

    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| port_entry(p.name.as_deref(), p.protocol.as_deref(), p.port))
        .collect();

    Some(ServiceEntry {
        namespace,
        name,
        kind,
        cluster_ips,
        ports,
        endpoints: Vec::new(),
        publish_not_ready_addresses: spec
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false),
    })
}

/// Shared handle to the current [`ClusterView`]: one writer publishes, any
/// number of readers load, and a reader never waits for a writer.
#[derive(Clone, Default)]
pub struct ViewHandle {
    shared: Arc<ViewShared>,
}

#[derive(Default)]
struct ViewShared {
    current: ArcSwap<ClusterView>,
    generations: AtomicU64,
}

impl ViewHandle {
    /// A handle holding an empty view (generation 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that starts with `view` already published.
    pub fn with_view(view: ClusterView) -> Self {
        let handle = Self::new();
        handle.publish(view);
        handle
    }

    /// The current snapshot. Cheap (an atomic load and a refcount bump).
    pub fn load(&self) -> Arc<ClusterView> {
        self.shared.current.load_full()
    }

    /// Makes `view` the current snapshot, stamping it with the next
    /// generation, which is returned. Readers see either the old or the new
    /// snapshot, never a mix.
    pub fn publish(&self, mut view: ClusterView) -> u64 {
        let generation = self.shared.generations.fetch_add(1, Ordering::AcqRel) + 1;
        view.generation = generation;
        self.shared.current.store(Arc::new(view));
        generation
    }
}

impl std::fmt::Debug for ViewHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.load();
        f.debug_struct("ViewHandle")
            .field("generation", &view.generation)
            .field("services", &view.service_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn svc(ns: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(spec),
            status: None,
        }
    }

    fn port(name: Option<&str>, proto: Option<&str>, port: i32) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            protocol: proto.map(Into::into),
            port,
            ..ServicePort::default()
        }
    }

    fn slice(
        ns: &str,
        name: &str,
        service: &str,
        family: &str,
        ports: Vec<EndpointPort>,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        let mut m = meta(ns, name);
        m.labels = Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into());
        EndpointSlice {
            metadata: m,
            address_type: family.into(),
            endpoints: Some(endpoints),
            ports: Some(ports),
        }
    }

    fn ep(addr: &str, ready: Option<bool>, hostname: Option<&str>, pod: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving: None,
                terminating: None,
            }),
            hostname: hostname.map(Into::into),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn eport(name: &str, port: i32) -> EndpointPort {
        EndpointPort {
            name: Some(name.into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    #[test]
    fn cluster_ip_service_with_dual_stack_ips_and_ports() {
        let s = svc(
            "default",
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into(), "fd00::10".into()]),
                ports: Some(vec![
                    port(Some("http"), None, 80),
                    port(Some("dns"), Some("UDP"), 53),
                    port(None, Some("SCTP"), 9),
                ]),
                ..ServiceSpec::default()
            },
        );
        let view = ClusterView::from_objects([&s], []);
        let entry = view.service("default", "web").expect("service present");
        assert_eq!(entry.kind, ServiceKind::ClusterIp);
        assert_eq!(
            entry.cluster_ips,
            vec![
                "10.96.0.10".parse::<IpAddr>().expect("ip"),
                "fd00::10".parse().expect("ip")
            ]
        );
        assert_eq!(
            entry.ports,
            vec![
                PortEntry {
                    name: Some("http".into()),
                    protocol: PortProtocol::Tcp,
                    port: 80
                },
                PortEntry {
                    name: Some("dns".into()),
                    protocol: PortProtocol::Udp,
                    port: 53
                },
                PortEntry {
                    name: None,
                    protocol: PortProtocol::Sctp,
                    port: 9
                },
            ]
        );
        assert!(view.has_namespace("default"));
        assert!(!view.has_namespace("other"));
        assert_eq!(view.generation(), 0);
    }

    #[test]
    fn node_port_and_load_balancer_services_are_cluster_ip_services() {
        let spec = |t: &str| ServiceSpec {
            type_: Some(t.into()),
            cluster_ip: Some("10.0.0.7".into()),
            ..ServiceSpec::default()
        };
        let np = svc("a", "np", spec("NodePort"));
        let lb = svc("a", "lb", spec("LoadBalancer"));
        let view = ClusterView::from_objects([&np, &lb], []);
        for name in ["np", "lb"] {
            let entry = view.service("a", name).expect("present");
            assert_eq!(entry.kind, ServiceKind::ClusterIp);
            assert_eq!(entry.cluster_ips, vec![IpAddr::from([10, 0, 0, 7])]);
        }
    }

    #[test]
    fn serving_falls_back_to_ready_when_unset() {
        let s = svc(
            "ns",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            },
        );
        let mut terminating = ep("10.1.0.1", Some(false), None, None);
        terminating.conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
        });
        let sl = slice(
            "ns",
            "db-1",
            "db",
            "IPv4",
            vec![],
            vec![terminating, ep("10.1.0.2", Some(false), None, None)],
        );
        let view = ClusterView::from_objects([&s], [&sl]);
        let db = view.service("ns", "db").expect("db");
        assert!(db.endpoints[0].serving && !db.endpoints[0].ready);
        assert!(!db.endpoints[1].serving, "unset serving follows ready");
        assert_eq!(db.published_endpoints().count(), 0);
    }

    #[test]
    fn single_cluster_ip_used_when_cluster_ips_missing() {
        let s = svc(
            "a",
            "b",
            ServiceSpec {
                cluster_ip: Some("10.0.0.1".into()),
                ..ServiceSpec::default()
            },
        );
        let view = ClusterView::from_objects([&s], []);
        let entry = view.service("a", "b").expect("present");
        assert_eq!(
            entry.cluster_ips,
            vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn headless_and_external_name_kinds() {
        let headless = svc(
            "ns",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                cluster_ips: Some(vec!["None".into()]),
                ..ServiceSpec::default()
            },
        );
        let ext = svc(
            "ns",
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("db.example.com".into()),
                ..ServiceSpec::default()
            },
        );
        let ext_without_target = svc(
            "ns",
            "broken",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                ..ServiceSpec::default()
            },
        );
        let view = ClusterView::from_objects([&headless, &ext, &ext_without_target], []);
        let db = view.service("ns", "db").expect("db");
        assert_eq!(db.kind, ServiceKind::Headless);
        assert!(db.cluster_ips.is_empty());
        assert_eq!(
            view.service("ns", "ext").expect("ext").kind,
            ServiceKind::ExternalName("db.example.com".into())
        );
        assert!(view.service("ns", "broken").is_none());
    }

    #[test]
    fn endpoints_are_joined_by_label_and_namespace() {
        let s = svc(
            "ns",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            },
        );
        let good = slice(
            "ns",
            "db-abc",
            "db",
            "IPv4",
            vec![eport("pg", 5432)],
            vec![
                ep("10.1.0.2", Some(true), Some("db-0"), Some("db-0")),
                ep("10.1.0.1", None, None, Some("db-1")),
                ep("10.1.0.3", Some(false), None, None),
            ],
        );
        // Same service name in another namespace: must not be joined.
        let other_ns = slice(
            "elsewhere",
            "db-x",
            "db",
            "IPv4",
            vec![],
            vec![ep("10.9.9.9", Some(true), None, None)],
        );
        // FQDN slices are not addresses.
        let fqdn = slice(
            "ns",
            "db-fqdn",
            "db",
            "FQDN",
            vec![],
            vec![ep("example.com", Some(true), None, None)],
        );
        let mut unlabelled = slice("ns", "db-y", "db", "IPv4", vec![], vec![]);
        unlabelled.metadata.labels = None;
        unlabelled.endpoints = Some(vec![ep("10.8.8.8", Some(true), None, None)]);

        let view = ClusterView::from_objects([&s], [&good, &other_ns, &fqdn, &unlabelled]);
        let db = view.service("ns", "db").expect("db");
        let addrs: Vec<String> = db
            .endpoints
            .iter()
            .map(|e| e.addresses[0].to_string())
            .collect();
        assert_eq!(addrs, ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        // Unset ready counts as ready.
        assert!(db.endpoints[0].ready);
        assert!(db.endpoints[0].serving);
        assert_eq!(db.endpoints[0].target_ref_name.as_deref(), Some("db-1"));
        assert_eq!(db.endpoints[1].hostname.as_deref(), Some("db-0"));
        assert!(!db.endpoints[2].ready);
        assert_eq!(
            db.endpoints[1].ports.to_vec(),
            vec![PortEntry {
                name: Some("pg".into()),
                protocol: PortProtocol::Tcp,
                port: 5432
            }]
        );
        let published: Vec<_> = db.published_endpoints().collect();
        assert_eq!(published.len(), 2, "not-ready endpoint hidden");
    }

    #[test]
    fn publish_not_ready_addresses_publishes_all() {
        let s = svc(
            "ns",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                ..ServiceSpec::default()
            },
        );
        let sl = slice(
            "ns",
            "db-1",
            "db",
            "IPv4",
            vec![],
            vec![
                ep("10.1.0.1", Some(false), None, None),
                ep("10.1.0.2", Some(true), None, None),
            ],
        );
        let view = ClusterView::from_objects([&s], [&sl]);
        let db = view.service("ns", "db").expect("db");
        assert!(db.publish_not_ready_addresses);
        assert_eq!(db.published_endpoints().count(), 2);
        // Not-ready endpoints get PTRs too when published.
        let ip: IpAddr = "10.1.0.1".parse().expect("ip");
        assert_eq!(view.ptr_targets(&ip).len(), 1);
    }

    #[test]
    fn duplicate_endpoint_across_slices_is_merged() {
        let s = svc(
            "ns",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            },
        );
        let a = slice(
            "ns",
            "a",
            "db",
            "IPv4",
            vec![],
            vec![ep("10.1.0.1", Some(false), None, None)],
        );
        let b = slice(
            "ns",
            "b",
            "db",
            "IPv4",
            vec![],
            vec![ep("10.1.0.1", Some(true), None, None)],
        );
        let view = ClusterView::from_objects([&s], [&a, &b]);
        let db = view.service("ns", "db").expect("db");
        assert_eq!(db.endpoints.len(), 1);
        assert!(db.endpoints[0].ready);
    }

    #[test]
    fn v6_slices_and_bad_values_are_handled() {
        let s = svc(
            "ns",
            "v6",
            ServiceSpec {
                cluster_ips: Some(vec!["not-an-ip".into(), "fd00::1".into()]),
                ports: Some(vec![
                    port(Some("bad-proto"), Some("HTTP"), 80),
                    port(Some("too-big"), None, 70000),
                    port(Some("ok"), None, 8080),
                ]),
                ..ServiceSpec::default()
            },
        );
        let sl = slice(
            "ns",
            "v6-1",
            "v6",
            "IPv6",
            vec![eport("ok", 8080)],
            vec![
                ep("fd00:1::5", Some(true), None, None),
                ep("garbage", Some(true), None, None),
            ],
        );
        let view = ClusterView::from_objects([&s], [&sl]);
        let v6 = view.service("ns", "v6").expect("v6");
        assert_eq!(
            v6.cluster_ips,
            vec!["fd00::1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(v6.ports.len(), 1);
        assert_eq!(v6.ports[0].name.as_deref(), Some("ok"));
        assert_eq!(v6.endpoints.len(), 1);
    }

    #[test]
    fn objects_without_names_or_namespaces_are_skipped() {
        let mut nameless = svc("ns", "x", ServiceSpec::default());
        nameless.metadata.name = None;
        let mut nsless = svc("ns", "y", ServiceSpec::default());
        nsless.metadata.namespace = None;
        let view = ClusterView::from_objects([&nameless, &nsless], []);
        assert_eq!(view.service_count(), 0);
    }

    #[test]
    fn ptr_index_covers_cluster_ips_and_published_endpoints() {
        let web = svc(
            "default",
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ..ServiceSpec::default()
            },
        );
        let web_slice = slice(
            "default",
            "web-1",
            "web",
            "IPv4",
            vec![],
            vec![
                ep("10.1.0.7", Some(true), Some("w0"), Some("web-abc")),
                ep("10.1.0.8", Some(false), None, None),
            ],
        );
        let view = ClusterView::from_objects([&web], [&web_slice]);
        let vip: IpAddr = "10.96.0.10".parse().expect("ip");
        assert_eq!(
            view.ptr_targets(&vip),
            [PtrTarget::Service {
                namespace: "default".into(),
                service: "web".into()
            }]
        );
        let pod: IpAddr = "10.1.0.7".parse().expect("ip");
        assert_eq!(
            view.ptr_targets(&pod),
            [PtrTarget::Endpoint {
                namespace: "default".into(),
                service: "web".into(),
                hostname: Some("w0".into()),
                target_ref_name: Some("web-abc".into()),
            }]
        );
        let not_ready: IpAddr = "10.1.0.8".parse().expect("ip");
        assert!(view.ptr_targets(&not_ready).is_empty());
        assert_eq!(view.ptr_addresses().count(), 2);
    }

    #[test]
    fn handle_publishes_with_increasing_generations() {
        let handle = ViewHandle::new();
        assert_eq!(handle.load().generation(), 0);
        let reader = handle.clone();
        let old = reader.load();
        let s = svc(
            "a",
            "b",
            ServiceSpec {
                cluster_ip: Some("10.0.0.1".into()),
                ..ServiceSpec::default()
            },
        );
        assert_eq!(handle.publish(ClusterView::from_objects([&s], [])), 1);
        assert_eq!(handle.publish(ClusterView::from_objects([&s], [])), 2);
        // A reader holding the old snapshot keeps it intact.
        assert_eq!(old.service_count(), 0);
        let now = reader.load();
        assert_eq!(now.generation(), 2);
        assert!(now.service("a", "b").is_some());
    }
}
