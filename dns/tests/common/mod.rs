//! Shared fixtures for the integration tests: a cluster built from
//! Kubernetes objects, a running server on loopback, and a hickory client.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixtures"
)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::DnsResponse;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_dns::view::SERVICE_NAME_LABEL;
use skiff_dns::{ClusterView, DnsConfig, Metrics, ViewHandle};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(10);

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

pub fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(spec),
        status: None,
    }
}

pub fn port(name: &str, proto: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port,
        ..ServicePort::default()
    }
}

pub fn endpoint(addr: &str, ready: bool, hostname: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![addr.into()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: None,
        }),
        hostname: hostname.map(Into::into),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(format!("pod-{}", addr.replace(['.', ':'], "-"))),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

pub fn slice(ns: &str, svc: &str, name: &str, port: i32, eps: Vec<Endpoint>) -> EndpointSlice {
    let mut m = meta(ns, name);
    m.labels = Some([(SERVICE_NAME_LABEL.to_owned(), svc.to_owned())].into());
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(eps),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

/// The test cluster:
/// - default/web: ClusterIP 10.96.0.10 + fd00::10, ports http 80/TCP, dns 53/UDP,
///   one endpoint 10.1.0.2;
/// - default/db: headless, port http 8080; db-0 (10.1.0.5, hostname), 10.1.0.6
///   ready, 10.1.0.7 not ready;
/// - default/ext: ExternalName db.example.com;
/// - default/big: headless with 100 ready endpoints 10.2.0.1 … 10.2.0.100.
pub fn cluster_objects() -> (Vec<Service>, Vec<EndpointSlice>) {
    let services = vec![
        service(
            "default",
            "web",
            ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into(), "fd00::10".into()]),
                ports: Some(vec![port("http", "TCP", 80), port("dns", "UDP", 53)]),
                ..ServiceSpec::default()
            },
        ),
        service(
            "default",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![port("http", "TCP", 8080)]),
                ..ServiceSpec::default()
            },
        ),
        service(
            "default",
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("db.example.com".into()),
                ..ServiceSpec::default()
            },
        ),
        service(
            "default",
            "big",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![port("http", "TCP", 8080)]),
                ..ServiceSpec::default()
            },
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            "web-1",
            8080,
            vec![endpoint("10.1.0.2", true, None)],
        ),
        slice(
            "default",
            "db",
            "db-1",
            8080,
            vec![
                endpoint("10.1.0.5", true, Some("db-0")),
                endpoint("10.1.0.6", true, None),
                endpoint("10.1.0.7", false, None),
            ],
        ),
        slice(
            "default",
            "big",
            "big-1",
            8080,
            (1..=100)
                .map(|i| endpoint(&format!("10.2.0.{i}"), true, None))
                .collect(),
        ),
    ];
    (services, slices)
}

pub fn cluster_view() -> ClusterView {
    let (services, slices) = cluster_objects();
    ClusterView::from_objects(&services, &slices)
}

/// A server running in the background until dropped or stopped.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub view: ViewHandle,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), skiff_dns::DnsError>>>,
}

impl Running {
    /// Stops the server and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("server stops in time")
                .expect("server task did not panic")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The default test config: loopback, ephemeral port, service and pod CIDRs
/// as reverse zones.
pub fn test_config() -> DnsConfig {
    DnsConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        reverse_cidrs: vec![
            "10.96.0.0/12".parse().expect("cidr"),
            "10.1.0.0/16".parse().expect("cidr"),
            "fd00::/108".parse().expect("cidr"),
        ],
        upstream_timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    }
}

pub async fn start(config: DnsConfig, view: ViewHandle) -> Running {
    let server = config.build(view.clone()).await.expect("server builds");
    let addr = server.local_addr();
    let metrics = server.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    Running {
        addr,
        metrics,
        view,
        shutdown,
        task: Some(task),
    }
}

/// Starts the cluster server over the test cluster (generation 1).
pub async fn start_cluster() -> Running {
    start(test_config(), ViewHandle::with_view(cluster_view())).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// UDP without EDNS: the classic 512-byte limit.
    UdpNoEdns,
}

/// Sends one query with hickory's client and returns the raw response.
pub async fn query(
    addr: SocketAddr,
    transport: Transport,
    name: &str,
    qtype: RecordType,
) -> DnsResponse {
    // from_ascii keeps the caller's case (from_str would lowercase).
    let name = Name::from_ascii(name).expect("valid name");
    let provider = TokioRuntimeProvider::default();
    let fut = async {
        let mut client = match transport {
            Transport::Udp | Transport::UdpNoEdns => {
                let conn = UdpClientStream::builder(addr, provider).build();
                let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
                tokio::spawn(bg);
                if transport == Transport::UdpNoEdns {
                    client.disable_edns();
                }
                client
            }
            Transport::Tcp => {
                let (connect, sender) = TcpClientStream::new(addr, None, Some(TIMEOUT), provider);
                let stream = connect.await.expect("tcp connect");
                let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
                tokio::spawn(bg);
                client
            }
        };
        client
            .query(name.clone(), DNSClass::IN, qtype)
            .await
            .unwrap_or_else(|e| panic!("query {name} {qtype} over {transport:?}: {e}"))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("query answered in time")
}

pub async fn udp(addr: SocketAddr, name: &str, qtype: RecordType) -> DnsResponse {
    query(addr, Transport::Udp, name, qtype).await
}

/// The answer records' data as strings, sorted.
pub fn rdata(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// The SOA in the authority section (panics if absent).
pub fn authority_soa(resp: &DnsResponse) -> (Name, hickory_proto::rr::rdata::SOA) {
    resp.authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.name.clone(), soa.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SOA in authority: {:?}", resp.authorities))
}
