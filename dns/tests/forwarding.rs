//! Forwarding: names outside the cluster zones go to the upstreams. The
//! upstream here is a second, tiny authoritative hickory server on loopback
//! with an in-memory `example.test.` zone, counting the queries it gets.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{authority_soa, rdata, start, test_config, udp};
use hickory_net::runtime::{Time, TokioRuntimeProvider};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use skiff_dns::{DnsConfig, ViewHandle};
use std::str::FromStr;
use tokio::net::{TcpListener, UdpSocket};

/// The upstream's catalog, counting queries per lowercased name.
struct CountingUpstream {
    catalog: Catalog,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

#[async_trait::async_trait]
impl RequestHandler for CountingUpstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            *self
                .seen
                .lock()
                .expect("lock")
                .entry(info.query.name().to_string())
                .or_default() += 1;
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    server: Server<CountingUpstream>,
}

impl Upstream {
    fn count(&self, name: &str) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        self.server
            .shutdown_gracefully()
            .await
            .expect("upstream stops");
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

/// `example.test.`: www (A 192.0.2.10, TTL 300), short (A 192.0.2.11, TTL 1).
async fn start_upstream() -> Upstream {
    let origin = name("example.test.");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        name("ns.example.test."),
        name("hostmaster.example.test."),
        7,
        3600,
        600,
        86400,
        60,
    );
    for record in [
        Record::from_rdata(origin.clone(), 60, RData::SOA(soa)),
        Record::from_rdata(
            name("www.example.test."),
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 10))),
        ),
        Record::from_rdata(
            name("short.example.test."),
            1,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 11))),
        ),
    ] {
        assert!(zone.upsert_mut(record, 7), "record inserted");
    }
    let mut catalog = Catalog::new();
    catalog.upsert(
        LowerName::new(&origin),
        vec![Arc::new(zone) as Arc<dyn ZoneHandler>],
    );
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut server = Server::new(CountingUpstream {
        catalog,
        seen: seen.clone(),
    });
    // An ephemeral UDP port may be taken for TCP by someone else: retry
    // with another port rather than fail.
    let mut pair = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            pair = Some((udp, tcp, addr));
            break;
        }
    }
    let (udp, tcp, addr) = pair.expect("a port free for both UDP and TCP");
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    Upstream { addr, seen, server }
}

#[tokio::test]
async fn outside_names_are_forwarded_and_cached_within_ttl() {
    let upstream = start_upstream().await;
    let config = DnsConfig {
        upstreams: vec![upstream.addr],
        ..test_config()
    };
    let server = start(config, ViewHandle::with_view(common::cluster_view())).await;

    let resp = udp(server.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&resp.answers), ["192.0.2.10"]);
    assert!(
        !resp.metadata.authoritative,
        "forwarded answers are not ours"
    );
    assert!(resp.metadata.recursion_available);
    assert_eq!(upstream.count("www.example.test."), 1);

    // Within the 300 s TTL: answered from the cache.
    let resp = udp(server.addr, "WWW.example.test.", RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["192.0.2.10"]);
    assert_eq!(
        upstream.count("www.example.test."),
        1,
        "served from the cache"
    );

    // A 1 s TTL expires: the upstream is asked again.
    udp(server.addr, "short.example.test.", RecordType::A).await;
    assert_eq!(upstream.count("short.example.test."), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = udp(server.addr, "short.example.test.", RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["192.0.2.11"]);
    assert_eq!(
        upstream.count("short.example.test."),
        2,
        "expired entry refetched"
    );

    // Cluster names never reach the upstream.
    let resp = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(resp.metadata.authoritative);
    assert!(
        resp.metadata.recursion_available,
        "a forwarding server offers recursion on all answers"
    );
    assert_eq!(rdata(&resp.answers), ["10.96.0.10"]);
    assert!(
        upstream
            .seen
            .lock()
            .expect("lock")
            .keys()
            .all(|k| k.ends_with("example.test.")),
        "only example.test names went upstream"
    );
    assert_eq!(server.metrics.forwarded(), 4);
    assert_eq!(server.metrics.authoritative(), 1);

    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn upstream_nxdomain_is_passed_on_with_its_soa() {
    let upstream = start_upstream().await;
    let config = DnsConfig {
        upstreams: vec![upstream.addr],
        ..test_config()
    };
    let server = start(config, ViewHandle::with_view(common::cluster_view())).await;
    let resp = udp(server.addr, "nothere.example.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(!resp.metadata.authoritative);
    assert_eq!(authority_soa(&resp).0, name("example.test."));
    // PTR outside the configured reverse CIDRs goes upstream too (and the
    // upstream knows nothing of it: it refuses).
    let resp = udp(server.addr, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
    assert_ne!(resp.metadata.response_code, ResponseCode::NoError);
    // (Once over UDP, and again over TCP after the error.)
    assert!(upstream.count("1.2.0.192.in-addr.arpa.") >= 1);
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn failing_upstream_gives_servfail() {
    // A port nothing listens on: bind, note, release.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    };
    let config = DnsConfig {
        upstreams: vec![dead],
        ..test_config()
    };
    let server = start(config, ViewHandle::with_view(common::cluster_view())).await;
    let resp = udp(server.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    // The client may have retransmitted while the upstream timed out, so
    // one or more SERVFAILs went out.
    assert!(server.metrics.responses(ResponseCode::ServFail) >= 1);
    // The cluster zone still answers.
    let resp = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["10.96.0.10"]);
    server.stop().await;
}
