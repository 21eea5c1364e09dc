//! The server as `dig` (BIND's client) sees it: a second, independent
//! client implementation. Skipped, saying so, when `dig` is not installed.

mod common;

use std::net::SocketAddr;

use common::start_cluster;

/// Runs `dig @addr -p port <args>` and returns stdout, or `None` when dig is
/// not installed.
async fn dig(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running dig: {e}"),
        Ok(out) => {
            assert!(
                out.status.success(),
                "dig failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).expect("utf-8 output"))
        }
    }
}

#[tokio::test]
async fn dig_a_and_srv() {
    let server = start_cluster().await;
    let Some(a) = dig(
        server.addr,
        &["+short", "web.default.svc.cluster.local", "A"],
    )
    .await
    else {
        eprintln!("SKIPPED dig_a_and_srv: `dig` is not installed (Debian package dnsutils)");
        return;
    };
    assert_eq!(a.trim(), "10.96.0.10");

    let srv = dig(
        server.addr,
        &["+short", "_http._tcp.web.default.svc.cluster.local", "SRV"],
    )
    .await
    .expect("dig present");
    assert_eq!(srv.trim(), "0 100 80 web.default.svc.cluster.local.");

    // The full response: authoritative, with the target's address as glue.
    let full = dig(
        server.addr,
        &[
            "+noall",
            "+comments",
            "+answer",
            "+additional",
            "_http._tcp.web.default.svc.cluster.local",
            "SRV",
        ],
    )
    .await
    .expect("dig present");
    assert!(full.contains("status: NOERROR"), "{full}");
    let flags = full
        .lines()
        .find(|l| l.contains(";; flags:"))
        .unwrap_or_else(|| panic!("no flags line: {full}"));
    assert!(flags.contains(" aa"), "authoritative: {flags}");
    assert!(
        full.lines()
            .any(|l| l.starts_with("web.default.svc.cluster.local.")
                && l.contains("\tA\t")
                && l.ends_with("10.96.0.10")),
        "glue A record in additional section: {full}"
    );

    let nx = dig(
        server.addr,
        &[
            "+noall",
            "+comments",
            "+authority",
            "nope.default.svc.cluster.local",
            "A",
        ],
    )
    .await
    .expect("dig present");
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("SOA\tns.dns.cluster.local. hostmaster.cluster.local. 1 "),
        "{nx}"
    );
    server.stop().await;
}
