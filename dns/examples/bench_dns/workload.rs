//! What both servers serve and what dnsperf asks (pure): N ClusterIP
//! Services `svc-<i>.default`, the [`ClusterView`] Skiff answers from, the
//! equivalent zone file for Knot (rendered from that same view), and a
//! shuffled query file with a fixed share of names that do not exist.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_dns::ClusterView;
use skiff_dns::view::ServiceKind;

/// Namespace of every benchmark Service.
pub const NAMESPACE: &str = "default";
/// The cluster domain both servers serve.
pub const DOMAIN: &str = "cluster.local";
/// Record TTL and SOA minimum, as Skiff's default.
pub const TTL: u32 = 5;
/// One query in this many is for a name that does not exist.
pub const NXDOMAIN_ONE_IN: usize = 10;

/// The ClusterIP of Service `i`: 10.96.0.1 upwards (inside 10.96.0.0/12
/// for up to a million Services).
pub fn service_ip(i: usize) -> Ipv4Addr {
    let offset = u32::try_from(i).unwrap_or(u32::MAX - 1) + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)).saturating_add(offset))
}

/// The Service's fully qualified name.
pub fn service_fqdn(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.{DOMAIN}.")
}

/// `n` ClusterIP Services, as the API would hand them to the feeder.
pub fn services(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let ip = service_ip(i).to_string();
            Service {
                metadata: ObjectMeta {
                    namespace: Some(NAMESPACE.to_owned()),
                    name: Some(format!("svc-{i}")),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: Some(ip.clone()),
                    cluster_ips: Some(vec![ip]),
                    ports: Some(vec![ServicePort {
                        name: Some("http".to_owned()),
                        port: 80,
                        protocol: Some("TCP".to_owned()),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// The view of `n` Services (no endpoints: ClusterIP answers do not use them).
pub fn cluster_view(n: usize) -> ClusterView {
    ClusterView::from_objects(&services(n), [])
}

/// The zone file equivalent to `view` for the cluster domain: the SOA and
/// NS Skiff answers with (primary `ns.dns.<domain>` at `ns_addr`) and one
/// A/AAAA per ClusterIP, sorted.
pub fn zone_file(view: &ClusterView, ns_addr: IpAddr) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "$ORIGIN {DOMAIN}.");
    let _ = writeln!(out, "$TTL {TTL}");
    let _ = writeln!(
        out,
        "@ IN SOA ns.dns.{DOMAIN}. hostmaster.{DOMAIN}. 1 7200 1800 86400 {TTL}"
    );
    let _ = writeln!(out, "@ IN NS ns.dns.{DOMAIN}.");
    let _ = writeln!(out, "ns.dns IN {} {ns_addr}", address_type(ns_addr));
    let mut lines: Vec<String> = view
        .services()
        .filter(|s| s.kind == ServiceKind::ClusterIp)
        .flat_map(|s| {
            s.cluster_ips.iter().map(move |ip| {
                format!(
                    "{}.{}.svc.{DOMAIN}. IN {} {ip}",
                    s.name,
                    s.namespace,
                    address_type(*ip)
                )
            })
        })
        .collect();
    lines.sort();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn address_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "A" } else { "AAAA" }
}

/// A small deterministic generator (SplitMix64): the same query file on
/// every run, without a dependency.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is negligible here).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }
}

/// A dnsperf query file of `lines` A queries over `n` Services: exactly
/// one line in [`NXDOMAIN_ONE_IN`] asks for `svc-<j>` with `j ≥ n` (does
/// not exist), the rest for a uniformly chosen existing Service; shuffled.
pub fn query_file(n: usize, lines: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let missing = lines / NXDOMAIN_ONE_IN;
    let mut names: Vec<usize> = (0..lines)
        .map(|k| {
            if k < missing {
                n + rng.below(n.max(1))
            } else {
                rng.below(n.max(1))
            }
        })
        .collect();
    // Fisher–Yates.
    for k in (1..names.len()).rev() {
        let j = rng.below(k + 1);
        names.swap(k, j);
    }
    let mut out = String::with_capacity(lines * 48);
    for i in names {
        let _ = writeln!(out, "svc-{i}.{NAMESPACE}.svc.{DOMAIN}. A");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RData, RecordType};
    use skiff_dns::records::{self, Lookup, RecordSettings};
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn parse_zone(zone: &str) -> BTreeMap<String, String> {
        zone.lines()
            .filter(|l| l.contains(".svc."))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f[1..3], ["IN", "A"], "line {l}");
                (f[0].to_owned(), f[3].to_owned())
            })
            .collect()
    }

    #[test]
    fn ips_are_distinct_and_in_the_service_cidr() {
        assert_eq!(service_ip(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(service_ip(255), Ipv4Addr::new(10, 96, 1, 0));
        let cidr: ipnetwork::Ipv4Network = "10.96.0.0/12".parse().expect("cidr");
        let ips: std::collections::HashSet<_> = (0..10_000).map(service_ip).collect();
        assert_eq!(ips.len(), 10_000);
        assert!(ips.iter().all(|ip| cidr.contains(*ip)));
    }

    #[test]
    fn zone_file_holds_what_skiff_answers() {
        let n = 300;
        let view = cluster_view(n);
        assert_eq!(view.service_count(), n);
        let zone = zone_file(&view, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(zone.contains(
            "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"
        ));
        assert!(zone.contains("ns.dns IN A 127.0.0.1"));
        let records_in_zone = parse_zone(&zone);
        assert_eq!(records_in_zone.len(), n);

        // Every zone line is what Skiff's record builder answers for that name.
        let settings = RecordSettings::new(DOMAIN, TTL).expect("settings");
        for (name, ip) in &records_in_zone {
            let qname = Name::from_str(name).expect("name");
            match records::cluster_lookup(&view, &settings, &qname, RecordType::A) {
                Lookup::Found { answers, .. } => {
                    let got: Vec<String> = answers
                        .iter()
                        .map(|r| match &r.data {
                            RData::A(a) => a.to_string(),
                            other => panic!("{name}: not an A record: {other:?}"),
                        })
                        .collect();
                    assert_eq!(got, std::slice::from_ref(ip), "{name}");
                    assert_eq!(answers[0].ttl, TTL);
                }
                other => panic!("{name}: Skiff has {other:?}"),
            }
        }
        assert_eq!(
            records_in_zone.get(&service_fqdn(7)).map(String::as_str),
            Some("10.96.0.8")
        );
    }

    #[test]
    fn query_file_has_the_nxdomain_share_and_is_deterministic() {
        let n = 1_000;
        let text = query_file(n, 20_000, 42);
        assert_eq!(text, query_file(n, 20_000, 42), "same seed, same file");
        assert_ne!(text, query_file(n, 20_000, 43));
        let view = cluster_view(n);
        let settings = RecordSettings::new(DOMAIN, TTL).expect("settings");
        let (mut found, mut nx) = (0, 0);
        let mut first_nx_at = None;
        for (k, line) in text.lines().enumerate() {
            let (name, qtype) = line.split_once(' ').expect("name and type");
            assert_eq!(qtype, "A");
            let qname = Name::from_str(name).expect("name");
            match records::cluster_lookup(&view, &settings, &qname, RecordType::A) {
                Lookup::Found { .. } => found += 1,
                Lookup::NxDomain => {
                    nx += 1;
                    first_nx_at.get_or_insert(k);
                }
                Lookup::NoData => panic!("{name}: NODATA is not part of the mix"),
            }
        }
        assert_eq!(nx, 2_000, "exactly one in ten");
        assert_eq!(found, 18_000);
        // Shuffled: the missing names are not all at the front.
        assert!(first_nx_at.expect("some NXDOMAIN") < 100);
        let tail_nx = text
            .lines()
            .skip(10_000)
            .filter(|l| {
                let i: usize = l
                    .trim_start_matches("svc-")
                    .split('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("index");
                i >= n
            })
            .count();
        assert!((800..1_200).contains(&tail_nx), "second half has {tail_nx}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 7];
        for _ in 0..1_000 {
            seen[rng.below(7)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
