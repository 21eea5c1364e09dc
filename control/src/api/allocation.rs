//! ClusterIP, NodePort and node pod-CIDR allocation for the API server.
//!
//! Two layers:
//! - pure: [`Pools`] (the three `skiff-ipam` allocators) and the functions
//!   that decide what a Service or Node create/update/delete takes from and
//!   gives back to them ([`assign_service`], [`assign_node`], ...), returning
//!   a [`Change`];
//! - persistent: [`Allocations`], which keeps the pools as one JSON document
//!   in the store under [`ALLOCATIONS_KEY`] and changes it only with
//!   conditional writes (retrying on conflict), so two writers never hand
//!   out one value twice.
//!
//! A create or update allocates first ([`Allocations::allocate_service`]),
//! then writes the object; on success it calls [`Allocations::commit`]
//! (returning values the object no longer holds), on failure
//! [`Allocations::abort`] (returning what it took). A crash between the two
//! writes can only leak a value, never double-allocate one, and the leak is
//! repaired at the next start: [`Allocations::rebuild`] recomputes the pools
//! from the Services and Nodes themselves.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::{Node, NodeSpec, Service, ServiceSpec};
use serde::{Deserialize, Serialize};
use skiff_ipam::{
    IpamError, NodeCidrAllocator, NodeCidrSnapshot, PortAllocator, PortRange, PortSnapshot,
    ServiceIpAllocator, ServiceIpSnapshot,
};
use tracing::Instrument;

use super::error::ApiError;
use crate::store::{Store, StoreError};
use crate::validation::{FieldError, quote};

/// Store key of the allocator state.
pub const ALLOCATIONS_KEY: &str = "/registry/ipam/allocations";
/// Conditional-write attempts before giving up (only reached under heavy
/// contention from several writers).
const MAX_ATTEMPTS: usize = 16;

/// The ranges allocations are made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationConfig {
    /// ClusterIP range.
    pub service_cidr: IpNetwork,
    /// NodePort range.
    pub node_port_range: PortRange,
    /// Range split into node pod CIDRs.
    pub cluster_cidr: IpNetwork,
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_prefix: u8,
}

/// Why an allocation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// A requested value is unusable: out of range or taken.
    #[error("invalid requested allocation")]
    Invalid(Vec<FieldError>),
    /// A range has nothing left.
    #[error("failed to allocate {what}: {source}")]
    Exhausted {
        /// What was being allocated.
        what: &'static str,
        /// The allocator's error.
        #[source]
        source: IpamError,
    },
    /// The configured ranges are unusable.
    #[error("invalid allocation range configuration: {0}")]
    Config(#[source] IpamError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored allocator state does not decode.
    #[error("stored allocator state is unreadable: {0}")]
    Corrupt(String),
    /// Too many concurrent writers.
    #[error(
        "allocator state kept changing under concurrent writers; giving up after {MAX_ATTEMPTS} attempts"
    )]
    Contention,
}

/// Values held by one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// ClusterIPs.
    pub ips: BTreeSet<IpAddr>,
    /// NodePorts.
    pub node_ports: BTreeSet<u16>,
    /// Node pod CIDR, keyed by node name.
    pub node_cidr: Option<(String, IpNetwork)>,
}

impl Held {
    fn minus(&self, other: &Held) -> Held {
        Held {
            ips: self.ips.difference(&other.ips).copied().collect(),
            node_ports: self
                .node_ports
                .difference(&other.node_ports)
                .copied()
                .collect(),
            node_cidr: self
                .node_cidr
                .clone()
                .filter(|c| other.node_cidr.as_ref() != Some(c)),
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty() && self.node_cidr.is_none()
    }
}

/// What one create/update did to the pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a Change must be committed or aborted"]
pub struct Change {
    /// Newly taken; returned if the object write fails.
    pub allocated: Held,
    /// Held by the old object only; returned once the write succeeds.
    pub released_on_commit: Held,
}

/// The three allocators.
#[derive(Clone, Debug)]
pub struct Pools {
    /// ClusterIPs.
    pub service_ips: ServiceIpAllocator,
    /// NodePorts.
    pub node_ports: PortAllocator,
    /// Node pod CIDRs.
    pub node_cidrs: NodeCidrAllocator,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedPools {
    service_ips: ServiceIpSnapshot,
    node_ports: PortSnapshot,
    node_cidrs: NodeCidrSnapshot,
}

impl Pools {
    /// Empty pools over the configured ranges.
    ///
    /// # Errors
    /// [`AllocationError::Config`] when a range is unusable.
    pub fn new(config: &AllocationConfig) -> Result<Self, AllocationError> {
        Ok(Pools {
            service_ips: ServiceIpAllocator::new(config.service_cidr)
                .map_err(AllocationError::Config)?,
            node_ports: PortAllocator::new(config.node_port_range),
            node_cidrs: NodeCidrAllocator::new(config.cluster_cidr, config.node_cidr_prefix)
                .map_err(AllocationError::Config)?,
        })
    }

    fn to_bytes(&self) -> Result<Vec<u8>, AllocationError> {
        serde_json::to_vec(&PersistedPools {
            service_ips: self.service_ips.snapshot(),
            node_ports: self.node_ports.snapshot(),
            node_cidrs: self.node_cidrs.snapshot(),
        })
        .map_err(|e| AllocationError::Corrupt(e.to_string()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, AllocationError> {
        let persisted: PersistedPools =
            serde_json::from_slice(bytes).map_err(|e| AllocationError::Corrupt(e.to_string()))?;
        Ok(Pools {
            service_ips: ServiceIpAllocator::from_snapshot(&persisted.service_ips)
                .map_err(|e| AllocationError::Corrupt(e.to_string()))?,
            node_ports: PortAllocator::from_snapshot(&persisted.node_ports)
                .map_err(|e| AllocationError::Corrupt(e.to_string()))?,
            node_cidrs: NodeCidrAllocator::from_snapshot(&persisted.node_cidrs)
                .map_err(|e| AllocationError::Corrupt(e.to_string()))?,
        })
    }

    /// Pools holding exactly what `services` and `nodes` hold. Values that
    /// fall outside the configured ranges (the ranges were changed) or clash
    /// are skipped and reported.
    ///
    /// # Errors
    /// [`AllocationError::Config`] when a range is unusable.
    pub fn rebuild(
        config: &AllocationConfig,
        services: &[Service],
        nodes: &[Node],
    ) -> Result<(Self, Vec<String>), AllocationError> {
        let mut pools = Pools::new(config)?;
        let mut problems = Vec::new();
        for service in services {
            let name = object_id(
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            );
            let held = service_holdings(service);
            for ip in held.ips {
                if let Err(e) = pools.service_ips.allocate_specific(ip) {
                    problems.push(format!("service {name}: clusterIP {ip}: {e}"));
                }
            }
            for port in held.node_ports {
                if let Err(e) = pools.node_ports.allocate_specific(port) {
                    problems.push(format!("service {name}: nodePort {port}: {e}"));
                }
            }
        }
        for node in nodes {
            if let Some((name, cidr)) = node_holdings(node).node_cidr
                && let Err(e) = pools.node_cidrs.allocate_specific(name.clone(), cidr)
            {
                problems.push(format!("node {name}: podCIDR {cidr}: {e}"));
            }
        }
        Ok((pools, problems))
    }

    /// Returns everything in `held` to the pools.
    pub fn release(&mut self, held: &Held) {
        for ip in &held.ips {
            // Out-of-range values were never taken from this pool.
            let _was_held = self.service_ips.release(*ip);
        }
        for port in &held.node_ports {
            let _was_held = self.node_ports.release(*port);
        }
        if let Some((node, _)) = &held.node_cidr {
            self.node_cidrs.release(node);
        }
    }
}

fn object_id(namespace: Option<&str>, name: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{}", name.unwrap_or_default()),
        None => name.unwrap_or_default().to_owned(),
    }
}

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

/// Whether a service of this spec gets NodePorts.
fn needs_node_ports(spec: &ServiceSpec) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

/// Whether a service of this spec gets a ClusterIP.
fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    service_type(spec) != "ExternalName" && spec.cluster_ip.as_deref() != Some("None")
}

/// The ClusterIPs and NodePorts a stored Service holds.
pub fn service_holdings(service: &Service) -> Held {
    let mut held = Held::default();
    let Some(spec) = &service.spec else {
        return held;
    };
    if service_type(spec) != "ExternalName" {
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        held.ips.extend(ips);
    }
    if needs_node_ports(spec) {
        for port in spec.ports.iter().flatten() {
            if let Some(np) = port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            {
                held.node_ports.insert(np);
            }
        }
    }
    held
}

/// The pod CIDR a stored Node holds.
pub fn node_holdings(node: &Node) -> Held {
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr = node
        .spec
        .as_ref()
        .and_then(|s| {
            s.pod_cidrs
                .as_ref()
                .and_then(|c| c.first())
                .or(s.pod_cidr.as_ref())
        })
        .and_then(|c| c.parse::<IpNetwork>().ok());
    Held {
        node_cidr: cidr.map(|c| (name, c)),
        ..Held::default()
    }
}

/// Before validation of a Service update: carries values the server
/// allocated (ClusterIP, NodePorts) into a replacement that left them out,
/// and drops NodePorts the new type does not use, as Kubernetes does; so a
/// client can PUT a manifest without copying allocated fields.
pub fn carry_service_allocations(old: &Service, new: &mut Service) {
    let (Some(old_spec), Some(new_spec)) = (&old.spec, new.spec.as_mut()) else {
        return;
    };
    if needs_cluster_ip(new_spec)
        && service_type(old_spec) != "ExternalName"
        && new_spec
            .cluster_ip
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        new_spec.cluster_ip.clone_from(&old_spec.cluster_ip);
        if new_spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            new_spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        }
        if new_spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            new_spec.ip_families.clone_from(&old_spec.ip_families);
        }
        if new_spec.ip_family_policy.is_none() {
            new_spec
                .ip_family_policy
                .clone_from(&old_spec.ip_family_policy);
        }
    }
    if needs_node_ports(new_spec) {
        for port in new_spec.ports.iter_mut().flatten() {
            if port.node_port.unwrap_or(0) != 0 {
                continue;
            }
            let same = old_spec.ports.iter().flatten().find(|p| {
                p.port == port.port
                    && p.protocol.as_deref().unwrap_or("TCP")
                        == port.protocol.as_deref().unwrap_or("TCP")
            });
            if let Some(old_port) = same {
                port.node_port = old_port.node_port;
            }
        }
    } else {
        for port in new_spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
    }
    if !matches!(service_type(new_spec), "NodePort" | "LoadBalancer")
        && new_spec.external_traffic_policy == old_spec.external_traffic_policy
    {
        // Left over from the old type, not chosen by the client.
        new_spec.external_traffic_policy = None;
    }
    if service_type(new_spec) == "ExternalName" {
        new_spec.cluster_ip = None;
        new_spec.cluster_ips = None;
    }
}

fn ip_family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Gives a Service (being created, or replacing `old`) its ClusterIP and
/// NodePorts: requested values are taken exactly or rejected, missing ones
/// allocated; values `old` already holds are kept.
///
/// # Errors
/// [`AllocationError::Invalid`] for unusable requested values,
/// [`AllocationError::Exhausted`] when a range is full. The pools are left
/// partly changed on error: call it on a copy.
pub fn assign_service(
    pools: &mut Pools,
    old: Option<&Service>,
    new: &mut Service,
) -> Result<Change, AllocationError> {
    let old_held = old.map(service_holdings).unwrap_or_default();
    let Some(spec) = new.spec.as_mut() else {
        return Ok(Change {
            allocated: Held::default(),
            released_on_commit: old_held,
        });
    };
    let mut errors = Vec::new();
    let mut new_held = Held::default();

    if needs_cluster_ip(spec) {
        let requested = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
        let ip = match requested {
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) if old_held.ips.contains(&ip) => Some(ip),
                Ok(ip) => match pools.service_ips.allocate_specific(ip) {
                    Ok(()) => Some(ip),
                    Err(e) => {
                        errors.push(cluster_ip_error(&text, &e, pools.service_ips.cidr()));
                        None
                    }
                },
                // Syntax is validation's business; nothing to allocate.
                Err(_) => None,
            },
            None => Some(pools.service_ips.allocate_next().map_err(|source| {
                AllocationError::Exhausted {
                    what: "a ClusterIP",
                    source,
                }
            })?),
        };
        if let Some(ip) = ip {
            new_held.ips.insert(ip);
            spec.cluster_ip = Some(ip.to_string());
            spec.cluster_ips = Some(vec![ip.to_string()]);
            spec.ip_families = Some(vec![ip_family(ip).to_owned()]);
            spec.ip_family_policy
                .get_or_insert_with(|| "SingleStack".to_owned());
        }
    } else if spec.cluster_ip.as_deref() == Some("None") {
        spec.cluster_ips = Some(vec!["None".to_owned()]);
    }

    if needs_node_ports(spec) {
        let range = pools.node_ports.range();
        let mut used_here: Vec<(u16, String)> = Vec::new();
        for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            let field = format!("spec.ports[{i}].nodePort");
            let requested = port.node_port.filter(|p| *p != 0);
            let assigned = match requested {
                Some(np) => match u16::try_from(np) {
                    Err(_) => None, // out of u16: validation reports it
                    Ok(np)
                        if used_here
                            .iter()
                            .any(|(p, proto)| *p == np && *proto == protocol) =>
                    {
                        errors.push(FieldError::duplicate(field, np.to_string()));
                        None
                    }
                    // One node port may serve both TCP and UDP of a service.
                    Ok(np)
                        if used_here.iter().any(|(p, _)| *p == np)
                            || old_held.node_ports.contains(&np) =>
                    {
                        Some(np)
                    }
                    Ok(np) => match pools.node_ports.allocate_specific(np) {
                        Ok(()) => Some(np),
                        Err(e) => {
                            errors.push(node_port_error(&field, np, &e, range));
                            None
                        }
                    },
                },
                None => Some(pools.node_ports.allocate_next().map_err(|source| {
                    AllocationError::Exhausted {
                        what: "a NodePort",
                        source,
                    }
                })?),
            };
            if let Some(np) = assigned {
                used_here.push((np, protocol));
                new_held.node_ports.insert(np);
                port.node_port = Some(i32::from(np));
            }
        }
    }
    if !errors.is_empty() {
        return Err(AllocationError::Invalid(errors));
    }
    Ok(Change {
        allocated: new_held.minus(&old_held),
        released_on_commit: old_held.minus(&new_held),
    })
}

fn cluster_ip_error(text: &str, error: &IpamError, cidr: IpNetwork) -> FieldError {
    let detail = match error {
        IpamError::AlreadyAllocated { .. } => {
            "failed to allocate IP: provided IP is already allocated".to_owned()
        }
        IpamError::OutOfRange { .. } | IpamError::ReservedAddress { .. } => format!(
            "failed to allocate IP: provided IP is not in the valid range. The range of valid IPs is {cidr}"
        ),
        other => format!("failed to allocate IP: {other}"),
    };
    FieldError::invalid("spec.clusterIP", quote(text), detail)
}

fn node_port_error(field: &str, port: u16, error: &IpamError, range: PortRange) -> FieldError {
    let detail = match error {
        IpamError::PortAlreadyAllocated { .. } => "provided port is already allocated".to_owned(),
        IpamError::PortOutOfRange { .. } => {
            format!("provided port is not in the valid range. The range of valid ports is {range}")
        }
        other => other.to_string(),
    };
    FieldError::invalid(field, port.to_string(), detail)
}

/// Gives a Node its pod CIDR: a `spec.podCIDR` the client set is taken
/// exactly (or rejected), otherwise the node keeps what `old` had or gets
/// the next free one.
///
/// # Errors
/// As [`assign_service`].
pub fn assign_node(
    pools: &mut Pools,
    old: Option<&Node>,
    new: &mut Node,
) -> Result<Change, AllocationError> {
    let old_held = old.map(node_holdings).unwrap_or_default();
    let name = new.metadata.name.clone().unwrap_or_default();
    let spec = new.spec.get_or_insert_with(NodeSpec::default);
    let requested = spec
        .pod_cidrs
        .as_ref()
        .and_then(|c| c.first())
        .or(spec.pod_cidr.as_ref())
        .filter(|c| !c.is_empty())
        .cloned();
    let cidr = match requested {
        Some(text) => {
            let Ok(cidr) = text.parse::<IpNetwork>() else {
                return Ok(Change::default()); // validation reports the syntax
            };
            let already = old_held.node_cidr.as_ref().is_some_and(|(_, c)| *c == cidr);
            if !already && let Err(e) = pools.node_cidrs.allocate_specific(name.clone(), cidr) {
                return Err(AllocationError::Invalid(vec![FieldError::invalid(
                    "spec.podCIDR",
                    quote(&text),
                    format!("failed to allocate pod CIDR: {e}"),
                )]));
            }
            cidr
        }
        None => pools
            .node_cidrs
            .allocate(&name)
            .map_err(|source| AllocationError::Exhausted {
                what: "a node pod CIDR",
                source,
            })?,
    };
    spec.pod_cidr = Some(cidr.to_string());
    spec.pod_cidrs = Some(vec![cidr.to_string()]);
    let new_held = Held {
        node_cidr: Some((name, cidr)),
        ..Held::default()
    };
    Ok(Change {
        allocated: new_held.minus(&old_held),
        released_on_commit: old_held.minus(&new_held),
    })
}

/// The store-backed allocator state shared by all requests.
pub struct Allocations {
    store: Arc<dyn Store>,
    config: AllocationConfig,
    /// Serialises this server's transactions so they do not conflict with
    /// each other; other writers are handled by conditional writes.
    lock: tokio::sync::Mutex<()>,
}

impl Allocations {
    /// Allocation state over `store`.
    ///
    /// # Errors
    /// [`AllocationError::Config`] when a configured range is unusable.
    pub fn new(store: Arc<dyn Store>, config: AllocationConfig) -> Result<Self, AllocationError> {
        Pools::new(&config)?;
        Ok(Allocations {
            store,
            config,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured ranges.
    pub fn config(&self) -> &AllocationConfig {
        &self.config
    }

    /// The current pools, as stored.
    ///
    /// # Errors
    /// Store failures or unreadable state.
    pub async fn snapshot(&self) -> Result<Pools, AllocationError> {
        let (kv, _) = self.store.get(ALLOCATIONS_KEY).await?;
        match kv {
            Some(kv) => Pools::from_bytes(&kv.value),
            None => Pools::new(&self.config),
        }
    }

    /// Runs `f` on the stored pools and writes the result back
    /// conditionally, retrying on concurrent change. `f` may run several
    /// times and must start afresh each time.
    async fn transact<R>(
        &self,
        mut f: impl FnMut(&mut Pools) -> Result<R, AllocationError>,
    ) -> Result<R, AllocationError> {
        let _guard = self.lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (kv, _) = self.store.get(ALLOCATIONS_KEY).await?;
            let mut pools = match &kv {
                Some(kv) => Pools::from_bytes(&kv.value)?,
                None => Pools::new(&self.config)?,
            };
            let result = f(&mut pools)?;
            let bytes = pools.to_bytes()?;
            let written = match &kv {
                Some(kv) if kv.value == bytes => return Ok(result),
                Some(kv) => self
                    .store
                    .update(ALLOCATIONS_KEY, bytes, Some(kv.mod_revision))
                    .await
                    .map(|_| ()),
                None => self.store.create(ALLOCATIONS_KEY, bytes).await.map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(result),
                Err(
                    StoreError::Conflict { .. }
                    | StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. },
                ) => {
                    tracing::debug!("allocator state changed concurrently; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AllocationError::Contention)
    }

    /// Allocates for a Service being created (`old` = None) or updated.
    /// Returns the Service with its allocations filled in.
    ///
    /// # Errors
    /// See [`assign_service`]; store failures.
    pub async fn allocate_service(
        &self,
        old: Option<&Service>,
        new: &Service,
    ) -> Result<(Service, Change), AllocationError> {
        self.transact(|pools| {
            let mut candidate = new.clone();
            let change = assign_service(pools, old, &mut candidate)?;
            Ok((candidate, change))
        })
        .instrument(tracing::debug_span!(
            "allocate_service",
            name = new.metadata.name.as_deref().unwrap_or_default()
        ))
        .await
    }

    /// Allocates for a Node being created or updated.
    ///
    /// # Errors
    /// See [`assign_node`]; store failures.
    pub async fn allocate_node(
        &self,
        old: Option<&Node>,
        new: &Node,
    ) -> Result<(Node, Change), AllocationError> {
        self.transact(|pools| {
            let mut candidate = new.clone();
            let change = assign_node(pools, old, &mut candidate)?;
            Ok((candidate, change))
        })
        .instrument(tracing::debug_span!(
            "allocate_node",
            name = new.metadata.name.as_deref().unwrap_or_default()
        ))
        .await
    }

    /// Returns `held` to the pools.
    ///
    /// # Errors
    /// Store failures.
    pub async fn release(&self, held: &Held) -> Result<(), AllocationError> {
        if held.is_empty() {
            return Ok(());
        }
        self.transact(|pools| {
            pools.release(held);
            Ok(())
        })
        .await
    }

    /// The object write succeeded: return what the old object held only.
    pub async fn commit(&self, change: Change) {
        if let Err(error) = self.release(&change.released_on_commit).await {
            // Leaked until the next start rebuilds the pools.
            tracing::warn!(%error, released = ?change.released_on_commit, "could not release allocations");
        }
    }

    /// The object write failed: return what was taken for it.
    pub async fn abort(&self, change: Change) {
        if let Err(error) = self.release(&change.allocated).await {
            tracing::warn!(%error, allocated = ?change.allocated, "could not return allocations");
        }
    }

    /// Replaces the stored pools with ones rebuilt from the objects that
    /// hold allocations, keeping each allocator's search cursor so recently
    /// freed values are not handed out again at once.
    ///
    /// # Errors
    /// Store failures.
    pub async fn rebuild(
        &self,
        services: &[Service],
        nodes: &[Node],
    ) -> Result<(), AllocationError> {
        let (rebuilt, problems) = Pools::rebuild(&self.config, services, nodes)?;
        for problem in &problems {
            tracing::warn!(problem = problem.as_str(), "allocation not restored");
        }
        self.transact(|pools| {
            let mut next = rebuilt.clone();
            keep_cursors(pools, &mut next);
            *pools = next;
            Ok(())
        })
        .await?;
        tracing::info!(
            services = services.len(),
            nodes = nodes.len(),
            "allocator state rebuilt from objects"
        );
        Ok(())
    }
}

fn keep_cursors(stored: &Pools, rebuilt: &mut Pools) {
    let mut ips = rebuilt.service_ips.snapshot();
    ips.next = stored.service_ips.snapshot().next;
    if let Ok(alloc) = ServiceIpAllocator::from_snapshot(&ips) {
        rebuilt.service_ips = alloc;
    }
    let mut ports = rebuilt.node_ports.snapshot();
    ports.next = stored.node_ports.snapshot().next;
    if let Ok(alloc) = PortAllocator::from_snapshot(&ports) {
        rebuilt.node_ports = alloc;
    }
    let mut cidrs = rebuilt.node_cidrs.snapshot();
    cidrs.next = stored.node_cidrs.snapshot().next;
    if let Ok(alloc) = NodeCidrAllocator::from_snapshot(&cidrs) {
        rebuilt.node_cidrs = alloc;
    }
}

impl From<AllocationError> for ApiError {
    fn from(error: AllocationError) -> Self {
        match error {
            AllocationError::Invalid(_) => ApiError::Internal(
                "allocation field errors must be reported against their object".to_owned(),
            ),
            AllocationError::Store(e) => ApiError::from(e),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use k8s_openapi::api::core::v1::ServicePort;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config() -> AllocationConfig {
        AllocationConfig {
            service_cidr: "10.96.0.0/28".parse().expect("cidr"),
            node_port_range: PortRange::new(30000, 30002).expect("range"),
            cluster_cidr: "10.244.0.0/22".parse().expect("cidr"),
            node_cidr_prefix: 24,
        }
    }

    fn service(type_: &str, cluster_ip: Option<&str>, node_ports: &[Option<i32>]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: cluster_ip.map(str::to_owned),
                ports: Some(
                    node_ports
                        .iter()
                        .enumerate()
                        .map(|(i, np)| ServicePort {
                            name: Some(format!("p{i}")),
                            port: 80 + i32::try_from(i).expect("small"),
                            protocol: Some("TCP".into()),
                            node_port: *np,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn spec(s: &Service) -> &ServiceSpec {
        s.spec.as_ref().expect("spec")
    }

    #[test]
    fn cluster_ip_dynamic_requested_and_conflicting() {
        let mut pools = Pools::new(&config()).expect("pools");
        let mut a = service("ClusterIP", None, &[None]);
        let change = assign_service(&mut pools, None, &mut a).expect("allocates");
        let ip = spec(&a).cluster_ip.clone().expect("ip");
        assert_eq!(spec(&a).cluster_ips, Some(vec![ip.clone()]));
        assert_eq!(spec(&a).ip_families, Some(vec!["IPv4".to_owned()]));
        assert_eq!(change.allocated.ips.len(), 1);
        let mut b = service("ClusterIP", Some(&ip), &[None]);
        match assign_service(&mut pools, None, &mut b) {
            Err(AllocationError::Invalid(errors)) => {
                assert_eq!(errors[0].field, "spec.clusterIP");
                assert!(
                    errors[0].detail.contains("already allocated"),
                    "{}",
                    errors[0]
                );
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        let mut c = service("ClusterIP", Some("10.1.0.1"), &[None]);
        match assign_service(&mut pools, None, &mut c) {
            Err(AllocationError::Invalid(errors)) => {
                assert!(
                    errors[0]
                        .to_string()
                        .contains("The range of valid IPs is 10.96.0.0/28"),
                    "{}",
                    errors[0]
                );
            }
            other => panic!("expected range error, got {other:?}"),
        }
        let mut d = service("ClusterIP", Some("10.96.0.9"), &[None]);
        let _ = assign_service(&mut pools, None, &mut d).expect("free requested ip");
        assert!(
            pools
                .service_ips
                .is_allocated("10.96.0.9".parse().expect("ip"))
        );
    }

    #[test]
    fn headless_and_external_name_take_nothing() {
        let mut pools = Pools::new(&config()).expect("pools");
        let mut headless = service("ClusterIP", Some("None"), &[None]);
        let change = assign_service(&mut pools, None, &mut headless).expect("ok");
        assert!(change.allocated.is_empty());
        assert_eq!(spec(&headless).cluster_ips, Some(vec!["None".to_owned()]));
        let mut external = service("ExternalName", None, &[]);
        assert!(
            assign_service(&mut pools, None, &mut external)
                .expect("ok")
                .allocated
                .is_empty()
        );
        assert_eq!(pools.service_ips.used(), 0);
    }

    #[test]
    fn node_ports_dynamic_requested_range_and_exhaustion() {
        let mut pools = Pools::new(&config()).expect("pools");
        let mut a = service("NodePort", None, &[Some(30001), None]);
        let _ = assign_service(&mut pools, None, &mut a).expect("allocates");
        let ports: Vec<Option<i32>> = spec(&a)
            .ports
            .iter()
            .flatten()
            .map(|p| p.node_port)
            .collect();
        assert_eq!(ports[0], Some(30001));
        assert!(ports[1].is_some_and(|p| p != 30001));
        let mut b = service("NodePort", None, &[Some(31000)]);
        match assign_service(&mut pools, None, &mut b) {
            Err(AllocationError::Invalid(errors)) => assert_eq!(
                errors[0].to_string(),
                "spec.ports[0].nodePort: Invalid value: 31000: provided port is not in the valid range. The range of valid ports is 30000-30002"
            ),
            other => panic!("expected range error, got {other:?}"),
        }
        let mut c = service("NodePort", None, &[Some(30001)]);
        assert!(matches!(
            assign_service(&mut pools, None, &mut c),
            Err(AllocationError::Invalid(_))
        ));
        let mut pools2 = pools.clone();
        let mut d = service("NodePort", None, &[None, None]);
        assert!(matches!(
            assign_service(&mut pools2, None, &mut d),
            Err(AllocationError::Exhausted { .. })
        ));
    }

    #[test]
    fn update_keeps_held_values_and_releases_dropped_ones() {
        let mut pools = Pools::new(&config()).expect("pools");
        let mut old = service("NodePort", None, &[None]);
        let _ = assign_service(&mut pools, None, &mut old).expect("allocates");
        // PUT without allocated fields, changing type to ClusterIP.
        let mut new = service("ClusterIP", None, &[None]);
        carry_service_allocations(&old, &mut new);
        assert_eq!(spec(&new).cluster_ip, spec(&old).cluster_ip);
        let change = assign_service(&mut pools, Some(&old), &mut new).expect("ok");
        assert!(change.allocated.is_empty());
        assert_eq!(change.released_on_commit.node_ports.len(), 1);
        assert!(change.released_on_commit.ips.is_empty());
        pools.release(&change.released_on_commit);
        assert_eq!(pools.node_ports.used(), 0);
        assert_eq!(pools.service_ips.used(), 1);
        // Same manifest again, NodePort: keeps the IP, takes a port.
        let mut again = service("NodePort", None, &[None]);
        carry_service_allocations(&new, &mut again);
        let change = assign_service(&mut pools, Some(&new), &mut again).expect("ok");
        assert_eq!(change.allocated.node_ports.len(), 1);
        assert!(change.allocated.ips.is_empty());
    }

    #[test]
    fn node_cidrs() {
        let mut pools = Pools::new(&config()).expect("pools");
        let mut n1 = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let change = assign_node(&mut pools, None, &mut n1).expect("allocates");
        let cidr = n1
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .expect("cidr");
        assert!(cidr.starts_with("10.244.") && cidr.ends_with("/24"));
        assert!(change.allocated.node_cidr.is_some());
        let mut n2 = Node {
            metadata: ObjectMeta {
                name: Some("n2".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.clone()),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        assert!(matches!(
            assign_node(&mut pools, None, &mut n2),
            Err(AllocationError::Invalid(_))
        ));
        let mut n1_again = n1.clone();
        let change = assign_node(&mut pools, Some(&n1), &mut n1_again).expect("keeps");
        assert!(change.allocated.is_empty() && change.released_on_commit.is_empty());
    }

    #[test]
    fn rebuild_restores_holdings_and_reports_clashes() {
        let mut a = service("NodePort", Some("10.96.0.5"), &[Some(30000)]);
        let mut pools = Pools::new(&config()).expect("pools");
        let _ = assign_service(&mut pools, None, &mut a).expect("ok");
        let clash = service("ClusterIP", Some("10.96.0.5"), &[None]);
        let (rebuilt, problems) = Pools::rebuild(&config(), &[a, clash], &[]).expect("rebuilds");
        assert!(
            rebuilt
                .service_ips
                .is_allocated("10.96.0.5".parse().expect("ip"))
        );
        assert!(rebuilt.node_ports.is_allocated(30000));
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[tokio::test]
    async fn persisted_transactions_survive_and_abort_returns() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let allocations = Allocations::new(store.clone(), config()).expect("allocations");
        let (a, change_a) = allocations
            .allocate_service(None, &service("ClusterIP", None, &[None]))
            .await
            .expect("allocates");
        allocations.commit(change_a).await;
        // A second handle over the same store sees the allocation.
        let other = Allocations::new(store.clone(), config()).expect("allocations");
        let (b, change_b) = other
            .allocate_service(None, &service("ClusterIP", None, &[None]))
            .await
            .expect("allocates");
        assert_ne!(spec(&a).cluster_ip, spec(&b).cluster_ip);
        other.abort(change_b).await;
        let pools = allocations.snapshot().await.expect("snapshot");
        assert_eq!(pools.service_ips.used(), 1);
        allocations
            .release(&service_holdings(&a))
            .await
            .expect("releases");
        assert_eq!(
            allocations
                .snapshot()
                .await
                .expect("snapshot")
                .service_ips
                .used(),
            0
        );
    }
}
