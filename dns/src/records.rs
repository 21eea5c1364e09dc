//! Record building: what the cluster zone and its reverse zones answer for
//! a name and type, computed from a [`ClusterView`]. Pure: no IO, no clock.
//!
//! The name scheme follows the Kubernetes DNS specification (as CoreDNS
//! serves it), relative to the cluster domain `<d>`:
//!
//! | name                                   | records                                   |
//! |----------------------------------------|-------------------------------------------|
//! | `<d>`                                  | SOA, NS                                   |
//! | `dns-version.<d>`                      | TXT `1.1.0`                               |
//! | `svc.<d>`, `<ns>.svc.<d>`              | none (empty non-terminals: NODATA)        |
//! | `<svc>.<ns>.svc.<d>`                   | A/AAAA (ClusterIPs, or ready endpoints when headless), CNAME (ExternalName), SRV (all ports) |
//! | `<ep>.<svc>.<ns>.svc.<d>`              | A/AAAA of the endpoint (`<ep>`: hostname, or dashed IP) |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<d>`  | SRV, targets' addresses in the additional section |
//! | `<reversed ip>.in-addr.arpa` / `ip6.arpa` | PTR to the Service or endpoint name    |
//!
//! Names are matched case-insensitively. Answers carry the owner name as
//! the client spelled it.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnetwork::IpNetwork;

use crate::view::{ClusterView, EndpointEntry, PortProtocol, PtrTarget, ServiceEntry, ServiceKind};

/// The schema version of the Kubernetes DNS specification we implement
/// (served as TXT at `dns-version.<domain>`).
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";

/// Errors in record-building settings.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}")]
    InvalidDomain {
        /// The rejected domain.
        domain: String,
        /// Why hickory rejected it.
        #[source]
        source: hickory_proto::ProtoError,
    },
}

/// How records are built: the cluster domain, TTL and naming options.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    domain: Name,
    ttl: u32,
    ns_addrs: Vec<IpAddr>,
    endpoint_pod_names: bool,
}

impl RecordSettings {
    /// Settings for `domain` (e.g. `cluster.local`, trailing dot optional)
    /// with records valid for `ttl` seconds.
    ///
    /// Fails when `domain` is not a valid DNS name.
    pub fn new(domain: &str, ttl: u32) -> Result<Self, RecordError> {
        let mut name = Name::from_ascii(domain).map_err(|source| RecordError::InvalidDomain {
            domain: domain.to_owned(),
            source,
        })?;
        name.set_fqdn(true);
        Ok(Self {
            domain: name.to_lowercase(),
            ttl,
            ns_addrs: Vec::new(),
            endpoint_pod_names: false,
        })
    }

    /// Addresses for the zone's name server name `ns.dns.<domain>` (the
    /// target of the zone's NS record); without any, that name does not
    /// resolve.
    pub fn with_ns_addrs(mut self, addrs: Vec<IpAddr>) -> Self {
        self.ns_addrs = addrs;
        self
    }

    /// Name endpoints without a hostname after their pod (targetRef) rather
    /// than their dashed IP, like CoreDNS's `endpoint_pod_names`.
    pub fn with_endpoint_pod_names(mut self, on: bool) -> Self {
        self.endpoint_pod_names = on;
        self
    }

    /// The cluster domain, lowercase and fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// TTL of every record built.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    fn ns_name(&self) -> Option<Name> {
        under(&["ns", "dns"], &self.domain)
    }

    fn service_name(&self, namespace: &str, service: &str) -> Option<Name> {
        under(&[service, namespace, "svc"], &self.domain)
    }

    fn endpoint_name(&self, label: &str, namespace: &str, service: &str) -> Option<Name> {
        under(&[label, service, namespace, "svc"], &self.domain)
    }

    fn endpoint_label(&self, ep: &EndpointEntry, addr: &IpAddr) -> String {
        label_for(
            ep.hostname.as_deref(),
            ep.target_ref_name.as_deref(),
            addr,
            self.endpoint_pod_names,
        )
    }
}

/// The result of looking a name and type up in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name has records of the type.
    Found {
        /// Answer section.
        answers: Vec<Record>,
        /// Additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// The name exists but has no records of the type (NOERROR, no answers).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

impl Lookup {
    fn found(answers: Vec<Record>) -> Self {
        Self::found_with(answers, Vec::new())
    }

    /// `Found` when there is something to answer, else `NoData`: used once
    /// the name is known to exist.
    fn found_with(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        if answers.is_empty() {
            Self::NoData
        } else {
            Self::Found {
                answers,
                additionals,
            }
        }
    }
}

/// The SOA record of the zone at `origin`: primary `ns.dns.<domain>`,
/// mailbox `hostmaster.<domain>`, the given serial, and the TTL as both
/// record TTL and negative-caching minimum.
pub fn soa_record(settings: &RecordSettings, origin: &Name, serial: u32) -> Record {
    let mname = settings
        .ns_name()
        .unwrap_or_else(|| settings.domain.clone());
    let rname = under(&["hostmaster"], &settings.domain).unwrap_or_else(|| settings.domain.clone());
    Record::from_rdata(
        origin.clone(),
        settings.ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            serial,
            7200,
            1800,
            86400,
            settings.ttl,
        )),
    )
}

/// The SOA serial for a view: its generation, wrapped into 32 bits
/// (serial arithmetic, RFC 1982, tolerates the wrap).
pub fn serial_of(view: &ClusterView) -> u32 {
    // Truncation is the point: serials are compared modulo 2^32.
    (view.generation() & u64::from(u32::MAX)) as u32
}

fn ns_record(settings: &RecordSettings, origin: &Name) -> Option<Record> {
    Some(Record::from_rdata(
        origin.clone(),
        settings.ttl,
        RData::NS(NS(settings.ns_name()?)),
    ))
}

fn apex(settings: &RecordSettings, view: &ClusterView, origin: &Name, qtype: RecordType) -> Lookup {
    let soa = || soa_record(settings, origin, serial_of(view));
    match qtype {
        RecordType::SOA => Lookup::found(vec![soa()]),
        RecordType::NS => Lookup::found(ns_record(settings, origin).into_iter().collect()),
        RecordType::ANY => {
            let mut all = vec![soa()];
            all.extend(ns_record(settings, origin));
            Lookup::found(all)
        }
        _ => Lookup::NoData,
    }
}

/// Answers `qname`/`qtype` in the cluster zone. Names outside the cluster
/// domain give `NxDomain` (the caller routes only names inside it here).
pub fn cluster_lookup(
    view: &ClusterView,
    settings: &RecordSettings,
    qname: &Name,
    qtype: RecordType,
) -> Lookup {
    let Some(labels) = relative_labels(qname, &settings.domain) else {
        return Lookup::NxDomain;
    };
    // Read right to left: the label just under the domain first.
    let rev: Vec<&str> = labels.iter().rev().map(String::as_str).collect();
    let ttl = settings.ttl;
    match rev.as_slice() {
        [] => apex(settings, view, &settings.domain, qtype),
        ["dns-version"] => match qtype {
            RecordType::TXT | RecordType::ANY => Lookup::found(vec![Record::from_rdata(
                qname.clone(),
                ttl,
                RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_owned()])),
            )]),
            _ => Lookup::NoData,
        },
        ["dns"] if !settings.ns_addrs.is_empty() => Lookup::NoData,
        ["dns", "ns"] if !settings.ns_addrs.is_empty() => {
            Lookup::found(address_records(qname, &settings.ns_addrs, qtype, ttl))
        }
        ["svc"] => Lookup::NoData,
        ["svc", ns] => {
            if view.has_namespace(ns) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            }
        }
        ["svc", ns, svc, rest @ ..] => match view.service(ns, svc) {
            None => Lookup::NxDomain,
            Some(service) => service_lookup(settings, service, qname, qtype, rest),
        },
        _ => Lookup::NxDomain,
    }
}

/// Below `<svc>.<ns>.svc.<d>`; `rest` holds the labels under the service
/// name, right to left.
fn service_lookup(
    settings: &RecordSettings,
    service: &ServiceEntry,
    qname: &Name,
    qtype: RecordType,
    rest: &[&str],
) -> Lookup {
    let ttl = settings.ttl;
    match (rest, &service.kind) {
        ([], ServiceKind::ExternalName(target)) => match external_target(target) {
            Some(target) => Lookup::found(vec![Record::from_rdata(
                qname.clone(),
                ttl,
                RData::CNAME(CNAME(target)),
            )]),
            None => Lookup::NoData,
        },
        ([], _) => match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                let addrs: Vec<IpAddr> = match service.kind {
                    ServiceKind::Headless => {
                        let set: BTreeSet<IpAddr> = service
                            .published_endpoints()
                            .flat_map(|e| e.addresses.iter().copied())
                            .collect();
                        set.into_iter().collect()
                    }
                    _ => service.cluster_ips.clone(),
                };
                Lookup::found(address_records(qname, &addrs, qtype, ttl))
            }
            RecordType::SRV => srv_lookup(settings, service, qname, None),
            _ => Lookup::NoData,
        },
        // `_<proto>.<svc>…`: an empty non-terminal when a named port has that protocol.
        ([proto], _) if proto.starts_with('_') => {
            if named_ports(service, None, proto_from_label(proto))
                .next()
                .is_some()
            {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            }
        }
        ([label], ServiceKind::ClusterIp | ServiceKind::Headless) => {
            let mut addrs = BTreeSet::new();
            for ep in service.published_endpoints() {
                for addr in &ep.addresses {
                    if settings.endpoint_label(ep, addr) == *label {
                        addrs.insert(*addr);
                    }
                }
            }
            if addrs.is_empty() {
                return Lookup::NxDomain;
            }
            let addrs: Vec<IpAddr> = addrs.into_iter().collect();
            Lookup::found(address_records(qname, &addrs, qtype, ttl))
        }
        ([proto, port], _) if proto.starts_with('_') && port.starts_with('_') => {
            let Some(protocol) = proto_from_label(proto) else {
                return Lookup::NxDomain;
            };
            let port_name = &port[1..];
            if named_ports(service, Some(port_name), Some(protocol))
                .next()
                .is_none()
            {
                return Lookup::NxDomain;
            }
            match qtype {
                RecordType::SRV | RecordType::ANY => {
                    srv_lookup(settings, service, qname, Some((port_name, protocol)))
                }
                _ => Lookup::NoData,
            }
        }
        _ => Lookup::NxDomain,
    }
}

fn proto_from_label(label: &str) -> Option<PortProtocol> {
    match label {
        "_tcp" => Some(PortProtocol::Tcp),
        "_udp" => Some(PortProtocol::Udp),
        "_sctp" => Some(PortProtocol::Sctp),
        _ => None,
    }
}

/// Named service ports with the given protocol, and with the given name
/// if one is given. A `None` protocol (an unknown `_proto` label) matches
/// nothing.
fn named_ports<'s>(
    service: &'s ServiceEntry,
    name: Option<&'s str>,
    protocol: Option<PortProtocol>,
) -> impl Iterator<Item = &'s crate::view::PortEntry> {
    service.ports.iter().filter(move |p| {
        p.name
            .as_deref()
            .is_some_and(|n| name.is_none_or(|want| n.eq_ignore_ascii_case(want)))
            && protocol.is_some_and(|want| p.protocol == want)
    })
}

/// One SRV target before weights are known.
struct SrvTarget {
    target: Name,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// SRV targets in order of appearance; one with the same name and port as
/// an earlier one is merged into it (a dual-stack pod appears in one slice
/// per family under one hostname).
#[derive(Default)]
struct SrvTargets {
    list: Vec<SrvTarget>,
    index: HashMap<(Name, u16), usize>,
}

impl SrvTargets {
    fn push(&mut self, target: Name, port: u16, addrs: &[IpAddr]) {
        match self.index.get(&(target.clone(), port)) {
            Some(&i) => {
                let existing = &mut self.list[i];
                for a in addrs {
                    if !existing.addrs.contains(a) {
                        existing.addrs.push(*a);
                    }
                }
            }
            None => {
                self.index.insert((target.clone(), port), self.list.len());
                self.list.push(SrvTarget {
                    target,
                    port,
                    addrs: addrs.to_vec(),
                });
            }
        }
    }
}

/// SRV records at `qname`: for every port (or just `filter`'s), one target
/// per ClusterIP service, or one per endpoint address of a headless one.
/// Priority 0, weight ⌊100/n⌋ for n records, as CoreDNS.
fn srv_lookup(
    settings: &RecordSettings,
    service: &ServiceEntry,
    qname: &Name,
    filter: Option<(&str, PortProtocol)>,
) -> Lookup {
    let matches = |name: Option<&str>, protocol: PortProtocol| match filter {
        None => true,
        Some((want, want_proto)) => {
            protocol == want_proto && name.is_some_and(|n| n.eq_ignore_ascii_case(want))
        }
    };
    let mut targets = SrvTargets::default();
    match &service.kind {
        ServiceKind::ClusterIp => {
            if let Some(target) = settings.service_name(&service.namespace, &service.name) {
                for p in &service.ports {
                    if matches(p.name.as_deref(), p.protocol) {
                        targets.push(target.clone(), p.port, &service.cluster_ips);
                    }
                }
            }
        }
        ServiceKind::ExternalName(name) => {
            if let Some(target) = external_target(name) {
                for p in &service.ports {
                    if matches(p.name.as_deref(), p.protocol) {
                        targets.push(target.clone(), p.port, &[]);
                    }
                }
            }
        }
        ServiceKind::Headless => {
            for ep in service.published_endpoints() {
                for p in ep.ports.iter() {
                    if !matches(p.name.as_deref(), p.protocol) {
                        continue;
                    }
                    // Endpoints with a hostname are one target for all their
                    // addresses; the others are one target per address.
                    if let (Some(_), Some(first)) = (&ep.hostname, ep.addresses.first()) {
                        let label = settings.endpoint_label(ep, first);
                        if let Some(target) =
                            settings.endpoint_name(&label, &service.namespace, &service.name)
                        {
                            targets.push(target, p.port, &ep.addresses);
                        }
                    } else {
                        for addr in &ep.addresses {
                            let label = settings.endpoint_label(ep, addr);
                            if let Some(target) =
                                settings.endpoint_name(&label, &service.namespace, &service.name)
                            {
                                targets.push(target, p.port, &[*addr]);
                            }
                        }
                    }
                }
            }
        }
    }

    let targets = targets.list;
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(0);
    let ttl = settings.ttl;
    let mut answers = Vec::with_capacity(targets.len());
    let mut additionals = Vec::new();
    let mut seen = BTreeSet::new();
    for t in targets {
        answers.push(Record::from_rdata(
            qname.clone(),
            ttl,
            RData::SRV(SRV::new(0, weight, t.port, t.target.clone())),
        ));
        for addr in t.addrs {
            if seen.insert((t.target.clone(), addr)) {
                additionals.extend(address_records(&t.target, &[addr], RecordType::ANY, ttl));
            }
        }
    }
    Lookup::found_with(answers, additionals)
}

/// A/AAAA records at `owner` for those of `addrs` that `qtype` asks for
/// (A: IPv4, AAAA: IPv6, ANY: both; other types: none).
fn address_records(owner: &Name, addrs: &[IpAddr], qtype: RecordType, ttl: u32) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|addr| match (addr, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4))))
            }
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(*v6)),
            )),
            _ => None,
        })
        .collect()
}

/// An ExternalName target as a fully qualified name; `None` if invalid.
fn external_target(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The label naming an endpoint: its hostname, else (with pod names on)
/// its pod, else its address with `.`/`:` turned into `-` (`10-1-0-5`,
/// `fd00--5`; a leading or trailing `-` gets a `0` so the label stays valid).
pub fn label_for(
    hostname: Option<&str>,
    target_ref_name: Option<&str>,
    addr: &IpAddr,
    endpoint_pod_names: bool,
) -> String {
    if let Some(h) = hostname {
        return h.to_ascii_lowercase();
    }
    if endpoint_pod_names && let Some(pod) = target_ref_name {
        return pod.to_ascii_lowercase();
    }
    dashed(addr)
}

/// An address with `.`/`:` replaced by `-`, padded to a valid label.
pub fn dashed(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.starts_with('-') {
                s.insert(0, '0');
            }
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

/// The labels of `name` below `zone`, lowercased, left to right; `None` when
/// `name` is not in `zone`.
fn relative_labels(name: &Name, zone: &Name) -> Option<Vec<String>> {
    if !zone.zone_of(name) {
        return None;
    }
    let extra = usize::from(name.num_labels()).checked_sub(usize::from(zone.num_labels()))?;
    Some(
        name.iter()
            .take(extra)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect(),
    )
}

/// `labels` (left to right) prepended to `base`; `None` if a label is
/// not valid in a DNS name (too long, empty).
fn under(labels: &[&str], base: &Name) -> Option<Name> {
    let mut name = base.clone();
    for label in labels.iter().rev() {
        name = name.prepend_label(*label).ok()?;
    }
    Some(name)
}

/// A reverse zone served authoritatively: `origin` (e.g.
/// `96.10.in-addr.arpa.`) and the configured CIDR it was cut from, which
/// bounds the addresses answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseZone {
    /// Zone apex.
    pub origin: Name,
    /// The configured CIDR (may be narrower than the zone).
    pub cidr: IpNetwork,
}

/// The reverse zones covering `cidr`: its prefix rounded up to whole octets
/// (IPv4) or nibbles (IPv6), one zone per resulting block; a `/12` gives 16
/// `/16` zones. Prefixes shorter than one octet/nibble are widened to one.
pub fn reverse_zones(cidr: IpNetwork) -> Vec<ReverseZone> {
    let prefix = u32::from(cidr.prefix());
    match cidr {
        IpNetwork::V4(net) => {
            let octets = prefix.div_ceil(8).clamp(1, 4);
            let extra_bits = octets * 8 - prefix.min(octets * 8);
            let base = u32::from(net.network());
            let step = 1u64 << (32 - octets * 8);
            (0..(1u64 << extra_bits))
                .filter_map(|i| {
                    let start = u64::from(base) + i * step;
                    let addr = Ipv4Addr::from(u32::try_from(start).ok()?);
                    let labels: Vec<String> = addr.octets()[..octets as usize]
                        .iter()
                        .rev()
                        .map(u8::to_string)
                        .collect();
                    Some(ReverseZone {
                        origin: arpa_name(&labels, "in-addr")?,
                        cidr,
                    })
                })
                .collect()
        }
        IpNetwork::V6(net) => {
            let nibbles = prefix.div_ceil(4).clamp(1, 32);
            let extra_bits = nibbles * 4 - prefix.min(nibbles * 4);
            let base = u128::from(net.network());
            let shift = 128 - nibbles * 4;
            (0..(1u128 << extra_bits))
                .filter_map(|i| {
                    let start = base.checked_add(i.checked_shl(shift)?)?;
                    let all = nibbles_of(&Ipv6Addr::from(start));
                    let labels: Vec<String> = all[..nibbles as usize]
                        .iter()
                        .rev()
                        .map(|n| format!("{n:x}"))
                        .collect();
                    Some(ReverseZone {
                        origin: arpa_name(&labels, "ip6")?,
                        cidr,
                    })
                })
                .collect()
        }
    }
}

fn nibbles_of(addr: &Ipv6Addr) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in addr.octets().iter().enumerate() {
        out[i * 2] = byte >> 4;
        out[i * 2 + 1] = byte & 0x0f;
    }
    out
}

fn arpa_name(labels: &[String], kind: &str) -> Option<Name> {
    let mut all: Vec<&str> = labels.iter().map(String::as_str).collect();
    all.push(kind);
    all.push("arpa");
    let mut name = Name::from_labels(all).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The reverse-lookup name of an address (`1.0.96.10.in-addr.arpa.`).
pub fn reverse_name(addr: &IpAddr) -> Option<Name> {
    match addr {
        IpAddr::V4(v4) => {
            let labels: Vec<String> = v4.octets().iter().rev().map(u8::to_string).collect();
            arpa_name(&labels, "in-addr")
        }
        IpAddr::V6(v6) => {
            let labels: Vec<String> = nibbles_of(v6)
                .iter()
                .rev()
                .map(|n| format!("{n:x}"))
                .collect();
            arpa_name(&labels, "ip6")
        }
    }
}

/// The address a complete reverse name stands for; `None` for partial or
/// malformed names.
pub fn address_of_reverse_name(name: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    match labels.as_slice() {
        [d, c, b, a, arpa_kind, arpa] if arpa_kind == "in-addr" && arpa == "arpa" => {
            let octet = |s: &String| s.parse::<u8>().ok().filter(|_| s.len() <= 3);
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., arpa_kind, arpa]
            if nibbles.len() == 32 && arpa_kind == "ip6" && arpa == "arpa" =>
        {
            let mut value: u128 = 0;
            for n in nibbles.iter().rev() {
                if n.len() != 1 {
                    return None;
                }
                value = (value << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// Answers `qname`/`qtype` in a reverse zone: PTR records for ClusterIPs
/// and published endpoint addresses inside the zone's CIDR.
pub fn reverse_lookup(
    view: &ClusterView,
    settings: &RecordSettings,
    zone: &ReverseZone,
    qname: &Name,
    qtype: RecordType,
) -> Lookup {
    if !zone.origin.zone_of(qname) {
        return Lookup::NxDomain;
    }
    if qname.num_labels() == zone.origin.num_labels() {
        return apex(settings, view, &zone.origin, qtype);
    }
    if let Some(addr) = address_of_reverse_name(qname) {
        if !zone.cidr.contains(addr) {
            return Lookup::NxDomain;
        }
        let targets = view.ptr_targets(&addr);
        if targets.is_empty() {
            return Lookup::NxDomain;
        }
        return match qtype {
            RecordType::PTR | RecordType::ANY => {
                let mut names = BTreeSet::new();
                for t in targets {
                    let name = match t {
                        PtrTarget::Service { namespace, service } => {
                            settings.service_name(namespace, service)
                        }
                        PtrTarget::Endpoint {
                            namespace,
                            service,
                            hostname,
                            target_ref_name,
                        } => {
                            let label = label_for(
                                hostname.as_deref(),
                                target_ref_name.as_deref(),
                                &addr,
                                settings.endpoint_pod_names,
                            );
                            settings.endpoint_name(&label, namespace, service)
                        }
                    };
                    names.extend(name);
                }
                // Service names first (targets are sorted that way), then
                // endpoint names; BTreeSet dedups and keeps a stable order.
                Lookup::found(
                    names
                        .into_iter()
                        .map(|n| {
                            Record::from_rdata(qname.clone(), settings.ttl, RData::PTR(PTR(n)))
                        })
                        .collect(),
                )
            }
            _ => Lookup::NoData,
        };
    }
    // A partial name between the apex and a full address exists only if
    // some answered address lies below it.
    let exists = view
        .ptr_addresses()
        .filter(|a| zone.cidr.contains(**a))
        .filter_map(reverse_name)
        .any(|full| qname.zone_of(&full));
    if exists {
        Lookup::NoData
    } else {
        Lookup::NxDomain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ClusterView, SERVICE_NAME_LABEL, ViewHandle};
    use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::str::FromStr;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(spec),
            status: None,
        }
    }

    fn sport(name: &str, proto: &str, port: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            protocol: Some(proto.into()),
            port,
            ..ServicePort::default()
        }
    }

    fn endpoint(addr: &str, ready: bool, hostname: Option<&str>, pod: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: None,
            }),
            hostname: hostname.map(Into::into),
            target_ref: pod.map(|p| ObjectReference {
                name: Some(p.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(ns: &str, svc: &str, family: &str, eps: Vec<Endpoint>) -> EndpointSlice {
        let mut m = meta(ns, &format!("{svc}-{family}"));
        m.labels = Some([(SERVICE_NAME_LABEL.to_owned(), svc.to_owned())].into());
        EndpointSlice {
            metadata: m,
            address_type: family.into(),
            endpoints: Some(eps),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }
    }

    /// default/web: ClusterIP 10.96.0.10 + fd00::10, ports http/80 tcp, dns/53 udp.
    /// default/db: headless, ready db-0 (hostname) and 10.1.0.6, not-ready 10.1.0.7.
    /// default/ext: ExternalName → db.example.com., port pg/5432.
    /// other/web: ClusterIP 10.96.0.20 (same name, other namespace).
    fn view() -> ClusterView {
        let web = service(
            "default",
            "web",
            ServiceSpec {
                cluster_ips: Some(vec!["10.96.0.10".into(), "fd00::10".into()]),
                ports: Some(vec![sport("http", "TCP", 80), sport("dns", "UDP", 53)]),
                ..ServiceSpec::default()
            },
        );
        let web_slice = slice(
            "default",
            "web",
            "IPv4",
            vec![endpoint("10.1.0.2", true, None, Some("web-abc"))],
        );
        let db = service(
            "default",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![sport("http", "TCP", 8080)]),
                ..ServiceSpec::default()
            },
        );
        let db_slice = slice(
            "default",
            "db",
            "IPv4",
            vec![
                endpoint("10.1.0.5", true, Some("db-0"), Some("db-0")),
                endpoint("10.1.0.6", true, None, Some("db-1")),
                endpoint("10.1.0.7", false, None, Some("db-2")),
            ],
        );
        let db_slice6 = slice(
            "default",
            "db",
            "IPv6",
            vec![endpoint("fd00:1::5", true, Some("db-0"), Some("db-0"))],
        );
        let ext = service(
            "default",
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("db.example.com".into()),
                ports: Some(vec![sport("pg", "TCP", 5432)]),
                ..ServiceSpec::default()
            },
        );
        let other = service(
            "other",
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                ..ServiceSpec::default()
            },
        );
        let handle = ViewHandle::new();
        handle.publish(ClusterView::default());
        handle.publish(ClusterView::from_objects(
            [&web, &db, &ext, &other],
            [&web_slice, &db_slice, &db_slice6],
        ));
        ClusterView::clone(&handle.load())
    }

    fn settings() -> RecordSettings {
        RecordSettings::new("cluster.local", 5).expect("valid domain")
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("valid name")
    }

    fn q(qname: &str, qtype: RecordType) -> Lookup {
        cluster_lookup(&view(), &settings(), &name(qname), qtype)
    }

    fn answers(l: Lookup) -> (Vec<Record>, Vec<Record>) {
        match l {
            Lookup::Found {
                answers,
                additionals,
            } => (answers, additionals),
            other => panic!("expected records, got {other:?}"),
        }
    }

    fn rdata_strings(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_a_and_aaaa() {
        let (a, _) = answers(q("web.default.svc.cluster.local.", RecordType::A));
        assert_eq!(rdata_strings(&a), ["10.96.0.10"]);
        assert_eq!(a[0].ttl, 5);
        assert_eq!(a[0].name, name("web.default.svc.cluster.local."));
        let (aaaa, _) = answers(q("web.default.svc.cluster.local.", RecordType::AAAA));
        assert_eq!(rdata_strings(&aaaa), ["fd00::10"]);
        let (other, _) = answers(q("web.other.svc.cluster.local.", RecordType::A));
        assert_eq!(rdata_strings(&other), ["10.96.0.20"]);
    }

    #[test]
    fn names_are_case_insensitive_and_keep_the_clients_spelling() {
        // from_ascii keeps case (from_str would lowercase through IDNA).
        let mixed = Name::from_ascii("WeB.DeFault.SVC.Cluster.Local.").expect("name");
        let (a, _) = answers(cluster_lookup(&view(), &settings(), &mixed, RecordType::A));
        assert_eq!(rdata_strings(&a), ["10.96.0.10"]);
        assert_eq!(a[0].name.to_string(), "WeB.DeFault.SVC.Cluster.Local.");
    }

    #[test]
    fn single_stack_service_has_no_aaaa() {
        assert_eq!(
            q("web.other.svc.cluster.local.", RecordType::AAAA),
            Lookup::NoData
        );
    }

    #[test]
    fn headless_gives_ready_endpoints_only() {
        let (a, _) = answers(q("db.default.svc.cluster.local.", RecordType::A));
        assert_eq!(rdata_strings(&a), ["10.1.0.5", "10.1.0.6"]);
        let (aaaa, _) = answers(q("db.default.svc.cluster.local.", RecordType::AAAA));
        assert_eq!(rdata_strings(&aaaa), ["fd00:1::5"]);
    }

    #[test]
    fn headless_with_publish_not_ready_gives_all_endpoints() {
        let db = service(
            "default",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                ..ServiceSpec::default()
            },
        );
        let sl = slice(
            "default",
            "db",
            "IPv4",
            vec![
                endpoint("10.1.0.5", true, None, None),
                endpoint("10.1.0.7", false, None, None),
            ],
        );
        let v = ClusterView::from_objects([&db], [&sl]);
        let (a, _) = answers(cluster_lookup(
            &v,
            &settings(),
            &name("db.default.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(rdata_strings(&a), ["10.1.0.5", "10.1.0.7"]);
    }

    #[test]
    fn headless_without_endpoints_is_nodata() {
        let db = service(
            "default",
            "lonely",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            },
        );
        let v = ClusterView::from_objects([&db], []);
        assert_eq!(
            cluster_lookup(
                &v,
                &settings(),
                &name("lonely.default.svc.cluster.local."),
                RecordType::A
            ),
            Lookup::NoData
        );
    }

    #[test]
    fn endpoint_hostname_and_dashed_ip_names() {
        let (a, _) = answers(q("db-0.db.default.svc.cluster.local.", RecordType::A));
        assert_eq!(rdata_strings(&a), ["10.1.0.5"]);
        let (aaaa, _) = answers(q("db-0.db.default.svc.cluster.local.", RecordType::AAAA));
        assert_eq!(rdata_strings(&aaaa), ["fd00:1::5"]);
        let (a, _) = answers(q("10-1-0-6.db.default.svc.cluster.local.", RecordType::A));
        assert_eq!(rdata_strings(&a), ["10.1.0.6"]);
        // A not-ready endpoint has no name; neither does an endpoint under its
        // dashed IP when it has a hostname.
        assert_eq!(
            q("10-1-0-7.db.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            q("10-1-0-5.db.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            q("nope.db.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        // Exists, but has no TXT.
        assert_eq!(
            q("db-0.db.default.svc.cluster.local.", RecordType::TXT),
            Lookup::NoData
        );
    }

    #[test]
    fn endpoint_pod_names_mode_uses_target_ref() {
        let s = settings().with_endpoint_pod_names(true);
        let (a, _) = answers(cluster_lookup(
            &view(),
            &s,
            &name("db-1.db.default.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(rdata_strings(&a), ["10.1.0.6"]);
    }

    #[test]
    fn srv_for_cluster_ip_service_targets_the_service() {
        let (srv, add) = answers(q(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        assert_eq!(srv.len(), 1);
        let RData::SRV(rec) = &srv[0].data else {
            panic!("not SRV: {:?}", srv[0]);
        };
        assert_eq!(
            (rec.priority, rec.weight, rec.port),
            (0, 100, 80),
            "priority 0, all weight to the only target"
        );
        assert_eq!(rec.target, name("web.default.svc.cluster.local."));
        assert_eq!(rdata_strings(&add), ["10.96.0.10", "fd00::10"]);
        assert!(
            add.iter()
                .all(|r| r.name == name("web.default.svc.cluster.local."))
        );
        let (udp, _) = answers(q(
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        let RData::SRV(rec) = &udp[0].data else {
            panic!("not SRV");
        };
        assert_eq!(rec.port, 53);
    }

    #[test]
    fn srv_for_headless_targets_each_endpoint_with_shared_weight() {
        let (srv, add) = answers(q(
            "_http._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        let mut targets: Vec<(String, u16, u16)> = srv
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.target.to_string(), s.weight, s.port),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                (
                    "10-1-0-6.db.default.svc.cluster.local.".to_owned(),
                    50,
                    8080
                ),
                ("db-0.db.default.svc.cluster.local.".to_owned(), 50, 8080),
            ],
            "the dual-stack db-0 is one target with both addresses as glue"
        );
        let mut glue: Vec<(String, String)> = add
            .iter()
            .map(|r| (r.name.to_string(), r.data.to_string()))
            .collect();
        glue.sort();
        assert_eq!(
            glue,
            [
                (
                    "10-1-0-6.db.default.svc.cluster.local.".to_owned(),
                    "10.1.0.6".to_owned()
                ),
                (
                    "db-0.db.default.svc.cluster.local.".to_owned(),
                    "10.1.0.5".to_owned()
                ),
                (
                    "db-0.db.default.svc.cluster.local.".to_owned(),
                    "fd00:1::5".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn srv_at_service_name_lists_all_ports() {
        let (srv, _) = answers(q("web.default.svc.cluster.local.", RecordType::SRV));
        let mut ports: Vec<u16> = srv
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => {
                    assert_eq!(s.weight, 50);
                    s.port
                }
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        ports.sort();
        assert_eq!(ports, [53, 80]);
    }

    #[test]
    fn srv_name_existence() {
        // Wrong protocol for the port, unknown port: NXDOMAIN.
        assert_eq!(
            q("_http._udp.web.default.svc.cluster.local.", RecordType::SRV),
            Lookup::NxDomain
        );
        assert_eq!(
            q("_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV),
            Lookup::NxDomain
        );
        // The SRV name exists without an A.
        assert_eq!(
            q("_http._tcp.web.default.svc.cluster.local.", RecordType::A),
            Lookup::NoData
        );
        // `_tcp.<svc>` is an empty non-terminal; `_quic.<svc>` is not.
        assert_eq!(
            q("_tcp.web.default.svc.cluster.local.", RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            q("_quic.web.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn external_name_is_a_cname_for_any_type() {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let (c, _) = answers(q("ext.default.svc.cluster.local.", qtype));
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].data, RData::CNAME(CNAME(name("db.example.com."))));
        }
        let (srv, add) = answers(q(
            "_pg._tcp.ext.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        let RData::SRV(s) = &srv[0].data else {
            panic!("not SRV");
        };
        assert_eq!((s.port, s.target.clone()), (5432, name("db.example.com.")));
        assert!(add.is_empty());
    }

    #[test]
    fn empty_non_terminals_are_nodata_and_unknown_names_nxdomain() {
        assert_eq!(q("svc.cluster.local.", RecordType::A), Lookup::NoData);
        assert_eq!(
            q("default.svc.cluster.local.", RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            q("nons.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            q("nosvc.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(q("pod.cluster.local.", RecordType::A), Lookup::NxDomain);
        assert_eq!(
            q("a.b.c.web.default.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(q("web.default.svc.other.", RecordType::A), Lookup::NxDomain);
        // An existing service without the asked type.
        assert_eq!(
            q("web.default.svc.cluster.local.", RecordType::TXT),
            Lookup::NoData
        );
        assert_eq!(
            q("web.default.svc.cluster.local.", RecordType::CNAME),
            Lookup::NoData
        );
    }

    #[test]
    fn apex_soa_ns_and_dns_version() {
        let v = view();
        let (soa, _) = answers(cluster_lookup(
            &v,
            &settings(),
            &name("cluster.local."),
            RecordType::SOA,
        ));
        let RData::SOA(s) = &soa[0].data else {
            panic!("not SOA");
        };
        assert_eq!(s.serial, 2, "serial follows the view generation");
        assert_eq!(s.minimum, 5);
        assert_eq!(s.mname, name("ns.dns.cluster.local."));
        assert_eq!(s.rname, name("hostmaster.cluster.local."));
        let (ns, _) = answers(q("cluster.local.", RecordType::NS));
        assert_eq!(ns[0].data, RData::NS(NS(name("ns.dns.cluster.local."))));
        assert_eq!(q("cluster.local.", RecordType::A), Lookup::NoData);
        let (txt, _) = answers(q("dns-version.cluster.local.", RecordType::TXT));
        assert_eq!(rdata_strings(&txt), ["1.1.0"]);
        // Without configured addresses the NS target does not resolve.
        assert_eq!(q("ns.dns.cluster.local.", RecordType::A), Lookup::NxDomain);
        let with_ns = settings().with_ns_addrs(vec!["10.96.0.53".parse().expect("ip")]);
        let (a, _) = answers(cluster_lookup(
            &v,
            &with_ns,
            &name("ns.dns.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(rdata_strings(&a), ["10.96.0.53"]);
    }

    #[test]
    fn custom_domain_and_ttl() {
        let s = RecordSettings::new("Corp.Example", 30).expect("valid");
        assert_eq!(s.domain(), &name("corp.example."));
        let (a, _) = answers(cluster_lookup(
            &view(),
            &s,
            &name("web.default.svc.corp.example."),
            RecordType::A,
        ));
        assert_eq!(a[0].ttl, 30);
        assert_eq!(
            cluster_lookup(
                &view(),
                &s,
                &name("web.default.svc.cluster.local."),
                RecordType::A
            ),
            Lookup::NxDomain
        );
        assert!(RecordSettings::new("bad..domain", 5).is_err());
    }

    #[test]
    fn dashed_labels() {
        assert_eq!(dashed(&"10.1.2.3".parse().expect("ip")), "10-1-2-3");
        assert_eq!(dashed(&"fd00::1".parse().expect("ip")), "fd00--1");
        assert_eq!(dashed(&"::1".parse().expect("ip")), "0--1");
        assert_eq!(dashed(&"fd00::".parse().expect("ip")), "fd00--0");
    }

    #[test]
    fn reverse_zone_expansion() {
        let zones = reverse_zones("10.96.0.0/12".parse().expect("cidr"));
        assert_eq!(zones.len(), 16);
        assert_eq!(zones[0].origin, name("96.10.in-addr.arpa."));
        assert_eq!(zones[15].origin, name("111.10.in-addr.arpa."));
        let zones = reverse_zones("10.96.0.0/16".parse().expect("cidr"));
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].origin, name("96.10.in-addr.arpa."));
        let zones = reverse_zones("192.168.1.0/24".parse().expect("cidr"));
        assert_eq!(zones[0].origin, name("1.168.192.in-addr.arpa."));
        let zones = reverse_zones("fd00::/108".parse().expect("cidr"));
        assert_eq!(zones.len(), 1);
        // 108 bits = 27 nibbles: f, d and 25 zeros.
        assert_eq!(
            zones[0].origin,
            name(&format!("{}d.f.ip6.arpa.", "0.".repeat(25)))
        );
        let zones = reverse_zones("fd00::/106".parse().expect("cidr"));
        assert_eq!(zones.len(), 4);
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.96.0.10", "fd00::10", "255.0.1.2", "::"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let n = reverse_name(&ip).expect("name");
            assert_eq!(address_of_reverse_name(&n), Some(ip));
        }
        assert_eq!(
            reverse_name(&"10.96.0.10".parse().expect("ip")),
            Some(name("10.0.96.10.in-addr.arpa."))
        );
        assert_eq!(
            address_of_reverse_name(&name("0.96.10.in-addr.arpa.")),
            None,
            "partial"
        );
        assert_eq!(
            address_of_reverse_name(&name("300.0.96.10.in-addr.arpa.")),
            None
        );
    }

    fn zone_for(cidr: &str, ip: &str) -> ReverseZone {
        let ip: IpAddr = ip.parse().expect("ip");
        reverse_zones(cidr.parse().expect("cidr"))
            .into_iter()
            .find(|z| z.origin.zone_of(&reverse_name(&ip).expect("name")))
            .expect("zone covering ip")
    }

    fn rq(cidr: &str, qname: &str, qtype: RecordType) -> Lookup {
        let ip_for_zone = if cidr.contains(':') {
            "fd00::1"
        } else {
            "10.96.0.1"
        };
        let zone = zone_for(cidr, ip_for_zone);
        reverse_lookup(&view(), &settings(), &zone, &name(qname), qtype)
    }

    #[test]
    fn ptr_for_cluster_ips_and_endpoints() {
        let (ptr, _) = answers(rq(
            "10.96.0.0/12",
            "10.0.96.10.in-addr.arpa.",
            RecordType::PTR,
        ));
        assert_eq!(rdata_strings(&ptr), ["web.default.svc.cluster.local."]);
        let (ptr6, _) = answers(rq(
            "fd00::/108",
            &reverse_name(&"fd00::10".parse().expect("ip"))
                .expect("name")
                .to_string(),
            RecordType::PTR,
        ));
        assert_eq!(rdata_strings(&ptr6), ["web.default.svc.cluster.local."]);

        let pods = zone_for("10.1.0.0/16", "10.1.0.5");
        let l = |ip: &str, qtype| {
            reverse_lookup(
                &view(),
                &settings(),
                &pods,
                &reverse_name(&ip.parse().expect("ip")).expect("name"),
                qtype,
            )
        };
        let (p, _) = answers(l("10.1.0.5", RecordType::PTR));
        assert_eq!(rdata_strings(&p), ["db-0.db.default.svc.cluster.local."]);
        let (p, _) = answers(l("10.1.0.6", RecordType::PTR));
        assert_eq!(
            rdata_strings(&p),
            ["10-1-0-6.db.default.svc.cluster.local."]
        );
        // Endpoint of a ClusterIP service.
        let (p, _) = answers(l("10.1.0.2", RecordType::PTR));
        assert_eq!(
            rdata_strings(&p),
            ["10-1-0-2.web.default.svc.cluster.local."]
        );
        // Not ready: unknown.
        assert_eq!(l("10.1.0.7", RecordType::PTR), Lookup::NxDomain);
        assert_eq!(l("10.1.0.5", RecordType::A), Lookup::NoData);
    }

    #[test]
    fn reverse_zone_existence_and_bounds() {
        // Apex has SOA; an unknown address is NXDOMAIN.
        let (soa, _) = answers(rq("10.96.0.0/12", "96.10.in-addr.arpa.", RecordType::SOA));
        assert_eq!(soa[0].name, name("96.10.in-addr.arpa."));
        assert_eq!(
            rq("10.96.0.0/12", "99.0.96.10.in-addr.arpa.", RecordType::PTR),
            Lookup::NxDomain
        );
        // A partial name above a known address exists; one above nothing does not.
        assert_eq!(
            rq("10.96.0.0/12", "0.96.10.in-addr.arpa.", RecordType::PTR),
            Lookup::NoData
        );
        assert_eq!(
            rq("10.96.0.0/12", "7.96.10.in-addr.arpa.", RecordType::PTR),
            Lookup::NxDomain
        );
        // Rounding up to whole octets keeps every zone inside its CIDR: a
        // /29 is eight one-address zones, none holding 10.96.0.10.
        let zones = reverse_zones("10.96.0.0/29".parse().expect("cidr"));
        assert_eq!(zones.len(), 8);
        assert_eq!(zones[0].origin, name("0.0.96.10.in-addr.arpa."));
        let web = name("10.0.96.10.in-addr.arpa.");
        assert!(zones.iter().all(|z| !z.origin.zone_of(&web)));
        assert_eq!(
            reverse_lookup(&view(), &settings(), &zones[0], &web, RecordType::PTR),
            Lookup::NxDomain
        );
    }
}
