//! A real server on loopback, answering from a view built from Kubernetes
//! objects, queried with hickory's client over UDP and TCP.

mod common;

use common::{
    Transport, authority_soa, cluster_view, query, rdata, start, start_cluster, test_config, udp,
};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use skiff_dns::{ClusterView, DnsConfig, ViewHandle};
use std::str::FromStr;

fn name(s: &str) -> Name {
    Name::from_str(s).expect("valid name")
}

#[tokio::test]
async fn a_record_for_cluster_ip_service() {
    let server = start_cluster().await;
    let resp = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(
        resp.metadata.authoritative,
        "cluster names are answered authoritatively"
    );
    assert_eq!(rdata(&resp.answers), ["10.96.0.10"]);
    assert_eq!(resp.answers[0].ttl, 5, "default TTL");
    assert!(
        !resp.metadata.recursion_available,
        "no upstreams: no recursion offered"
    );
    server.stop().await;
}

#[tokio::test]
async fn aaaa_record_for_dual_stack_service() {
    let server = start_cluster().await;
    let resp = udp(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(rdata(&resp.answers), ["fd00::10"]);
    assert!(resp.metadata.authoritative);
    server.stop().await;
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let server = start_cluster().await;
    let resp = udp(server.addr, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["10.96.0.10"]);
    server.stop().await;
}

#[tokio::test]
async fn headless_service_gives_one_a_per_ready_endpoint() {
    let server = start_cluster().await;
    let resp = udp(server.addr, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        rdata(&resp.answers),
        ["10.1.0.5", "10.1.0.6"],
        "10.1.0.7 is not ready"
    );
    server.stop().await;
}

#[tokio::test]
async fn endpoint_hostname_a_record() {
    let server = start_cluster().await;
    let resp = udp(
        server.addr,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&resp.answers), ["10.1.0.5"]);
    let resp = udp(
        server.addr,
        "10-1-0-6.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&resp.answers), ["10.1.0.6"]);
    server.stop().await;
}

#[tokio::test]
async fn srv_with_targets_in_additional_section() {
    let server = start_cluster().await;
    // ClusterIP service: one target, the service name, with its addresses.
    let resp = udp(
        server.addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        rdata(&resp.answers),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    let glue: Vec<(String, String)> = resp
        .additionals
        .iter()
        .filter(|r| matches!(r.data, RData::A(_) | RData::AAAA(_)))
        .map(|r| (r.name.to_string(), r.data.to_string()))
        .collect();
    assert_eq!(
        glue,
        [
            (
                "web.default.svc.cluster.local.".to_owned(),
                "10.96.0.10".to_owned()
            ),
            (
                "web.default.svc.cluster.local.".to_owned(),
                "fd00::10".to_owned()
            ),
        ]
    );

    // Headless: one target per ready endpoint, weight shared.
    let resp = udp(
        server.addr,
        "_http._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        rdata(&resp.answers),
        [
            "0 50 8080 10-1-0-6.db.default.svc.cluster.local.",
            "0 50 8080 db-0.db.default.svc.cluster.local.",
        ]
    );
    let mut glue: Vec<(String, String)> = resp
        .additionals
        .iter()
        .filter(|r| matches!(r.data, RData::A(_)))
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
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn ptr_for_cluster_ip_and_endpoint() {
    let server = start_cluster().await;
    let resp = udp(server.addr, "10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert!(resp.metadata.authoritative);
    assert_eq!(rdata(&resp.answers), ["web.default.svc.cluster.local."]);
    let resp = udp(server.addr, "5.0.1.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdata(&resp.answers), ["db-0.db.default.svc.cluster.local."]);
    let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let resp = udp(server.addr, v6, RecordType::PTR).await;
    assert_eq!(rdata(&resp.answers), ["web.default.svc.cluster.local."]);
    // Unknown address in a served reverse zone: authoritative NXDOMAIN.
    let resp = udp(server.addr, "99.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(authority_soa(&resp).0, name("96.10.in-addr.arpa."));
    server.stop().await;
}

#[tokio::test]
async fn external_name_is_a_cname() {
    let server = start_cluster().await;
    let resp = udp(server.addr, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(resp.answers.len(), 1);
    assert_eq!(resp.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(rdata(&resp.answers), ["db.example.com."]);
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_carries_the_zone_soa() {
    let server = start_cluster().await;
    let resp = udp(
        server.addr,
        "nosuch.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(resp.metadata.authoritative);
    assert!(resp.answers.is_empty());
    let (owner, soa) = authority_soa(&resp);
    assert_eq!(owner, name("cluster.local."));
    assert_eq!(soa.serial, 1, "serial is the view generation");
    assert_eq!(soa.minimum, 5);
    let resp = udp(server.addr, "nons.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn servfail_until_the_first_view_is_published() {
    let server = start(test_config(), ViewHandle::new()).await;
    for qname in ["web.default.svc.cluster.local.", "nosuch.cluster.local."] {
        let resp = udp(server.addr, qname, RecordType::A).await;
        assert_eq!(
            resp.metadata.response_code,
            ResponseCode::ServFail,
            "{qname}"
        );
        assert!(resp.answers.is_empty());
    }
    server.view.publish(cluster_view());
    let resp = udp(
        server.addr,
        "nosuch.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn nodata_carries_the_zone_soa() {
    let server = start_cluster().await;
    for (qname, qtype) in [
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("web.default.svc.cluster.local.", RecordType::TXT),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::A),
    ] {
        let resp = udp(server.addr, qname, qtype).await;
        assert_eq!(
            resp.metadata.response_code,
            ResponseCode::NoError,
            "{qname} {qtype} exists"
        );
        assert!(resp.answers.is_empty(), "{qname} {qtype} has no records");
        assert!(resp.metadata.authoritative);
        assert_eq!(authority_soa(&resp).0, name("cluster.local."));
    }
    server.stop().await;
}

#[tokio::test]
async fn configured_ttl_is_used_for_records_and_soa() {
    let config = DnsConfig {
        ttl: 30,
        ..test_config()
    };
    let server = start(config, ViewHandle::with_view(common::cluster_view())).await;
    let resp = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.answers[0].ttl, 30);
    let resp = udp(
        server.addr,
        "nosuch.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(authority_soa(&resp).1.minimum, 30);
    server.stop().await;
}

#[tokio::test]
async fn custom_cluster_domain() {
    let config = DnsConfig {
        domain: "corp.internal".into(),
        ..test_config()
    };
    let server = start(config, ViewHandle::with_view(common::cluster_view())).await;
    let resp = udp(server.addr, "web.default.svc.corp.internal.", RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["10.96.0.10"]);
    // The default domain is now just an outside name, and with no upstreams
    // nothing answers it.
    let resp = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
    server.stop().await;
}

#[tokio::test]
async fn large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let server = start_cluster().await;
    let qname = "big.default.svc.cluster.local.";

    let resp = query(server.addr, Transport::Udp, qname, RecordType::A).await;
    assert!(
        resp.metadata.truncation,
        "100 A records do not fit the EDNS payload size"
    );
    assert!(resp.answers.len() < 100);

    let resp = query(server.addr, Transport::UdpNoEdns, qname, RecordType::A).await;
    assert!(resp.metadata.truncation);
    assert!(resp.answers.len() < 32, "512 bytes without EDNS");

    let resp = query(server.addr, Transport::Tcp, qname, RecordType::A).await;
    assert!(!resp.metadata.truncation);
    assert_eq!(resp.answers.len(), 100);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (1..=100).map(|i| format!("10.2.0.{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(rdata(&resp.answers), expected);
    assert!(server.metrics.truncated() >= 2);
    server.stop().await;
}

#[tokio::test]
async fn view_updates_are_visible_immediately() {
    let server = start_cluster().await;
    let q = "new.default.svc.cluster.local.";
    assert_eq!(
        udp(server.addr, q, RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    let (mut services, slices) = common::cluster_objects();
    services.push(common::service(
        "default",
        "new",
        k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("10.96.0.99".into()),
            ..Default::default()
        },
    ));
    let generation = server
        .view
        .publish(ClusterView::from_objects(&services, &slices));
    assert_eq!(generation, 2);

    let resp = udp(server.addr, q, RecordType::A).await;
    assert_eq!(rdata(&resp.answers), ["10.96.0.99"]);
    let resp = udp(server.addr, "99.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdata(&resp.answers), ["new.default.svc.cluster.local."]);
    let resp = udp(server.addr, "cluster.local.", RecordType::SOA).await;
    let RData::SOA(soa) = &resp.answers[0].data else {
        panic!("not SOA: {:?}", resp.answers);
    };
    assert_eq!(soa.serial, 2, "the serial follows the published generation");

    // And removal: back to the original objects.
    server.view.publish(common::cluster_view());
    assert_eq!(
        udp(server.addr, q, RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_queries_and_rcodes() {
    let server = start_cluster().await;
    udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    udp(server.addr, "db.default.svc.cluster.local.", RecordType::A).await;
    udp(
        server.addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    udp(
        server.addr,
        "nosuch.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    udp(server.addr, "outside.example.", RecordType::A).await;
    let m = &server.metrics;
    assert_eq!(m.queries(RecordType::A), 3);
    assert_eq!(m.queries(RecordType::SRV), 1);
    assert_eq!(m.queries(RecordType::AAAA), 1);
    assert_eq!(m.total_queries(), 5);
    assert_eq!(m.authoritative(), 4);
    assert_eq!(m.forwarded(), 0, "no upstreams configured");
    assert_eq!(m.responses(ResponseCode::NoError), 3);
    assert_eq!(m.responses(ResponseCode::NXDomain), 1);
    assert_eq!(m.responses(ResponseCode::Refused), 1);
    server.stop().await;
}

#[tokio::test]
async fn many_concurrent_queries_are_all_answered() {
    let server = start_cluster().await;
    let addr = server.addr;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let (qname, want) = if i % 2 == 0 {
                    ("web.default.svc.cluster.local.", "10.96.0.10")
                } else {
                    ("db-0.db.default.svc.cluster.local.", "10.1.0.5")
                };
                let resp = udp(addr, qname, RecordType::A).await;
                assert_eq!(rdata(&resp.answers), [want]);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("query task");
    }
    assert_eq!(server.metrics.total_queries(), 200);
    server.stop().await;
}
