//! Proof that a topology cannot reach the machine's own network: every
//! interface is loopback, a bridge, or a veth whose peer lives in one of the
//! topology's namespaces, and no namespace has a default route.
//!
//! Decisions are pure functions over `ip -j` output; [`check_netns`] gathers
//! that output.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// One entry of `ip -j -d link show`.
#[derive(Debug, Deserialize)]
pub(crate) struct Link {
    ifname: String,
    #[serde(default)]
    link_type: Option<String>,
    /// Set when the peer/lower device is in another namespace.
    #[serde(default)]
    link_netnsid: Option<i64>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

/// One entry of `ip -j netns list-id`: a peer namespace id and, when that
/// namespace is named under /var/run/netns, its name.
#[derive(Debug, Deserialize)]
pub(crate) struct NsId {
    nsid: i64,
    #[serde(default)]
    name: Option<String>,
}

/// Checks the interfaces of one namespace: only loopback, bridges and veths;
/// a veth whose peer is in another namespace must point at one of `allowed`.
/// The root namespace is never named under /var/run/netns, so a veth into
/// it fails here.
pub(crate) fn check_links(links: &[Link], ids: &[NsId], allowed: &[&str]) -> Result<(), String> {
    let names: HashMap<i64, Option<&str>> =
        ids.iter().map(|i| (i.nsid, i.name.as_deref())).collect();
    for link in links {
        let kind = link.linkinfo.as_ref().and_then(|i| i.info_kind.as_deref());
        match (link.link_type.as_deref(), kind) {
            (Some("loopback"), _) | (_, Some("bridge")) => {
                if let Some(id) = link.link_netnsid {
                    return Err(format!("{} refers to peer namespace id {id}", link.ifname));
                }
            }
            (_, Some("veth")) => {
                let Some(id) = link.link_netnsid else {
                    continue; // both ends in this namespace
                };
                match names.get(&id).copied().flatten() {
                    Some(peer) if allowed.contains(&peer) => {}
                    Some(peer) => {
                        return Err(format!(
                            "veth {} has its peer in foreign namespace {peer}",
                            link.ifname
                        ));
                    }
                    None => {
                        return Err(format!(
                            "veth {} has its peer in an unnamed namespace (id {id}), e.g. the root namespace",
                            link.ifname
                        ));
                    }
                }
            }
            (link_type, kind) => {
                return Err(format!(
                    "unexpected interface {} (type {link_type:?}, kind {kind:?})",
                    link.ifname
                ));
            }
        }
    }
    Ok(())
}

/// Checks one namespace against `allowed` peers and for default routes
/// (IPv4 and IPv6).
pub(crate) fn check_netns(ns: &Netns, allowed: &[&str]) -> Result<()> {
    let isolation = |detail| Error::Isolation {
        netns: ns.name().to_owned(),
        detail,
    };
    // Dumping links first makes the kernel assign ids to peer namespaces,
    // which `netns list-id` then reports.
    let links: Vec<Link> = parse(ns, ["-j", "-d", "link", "show"])?;
    let ids: Vec<NsId> = parse(ns, ["-j", "netns", "list-id"])?;
    check_links(&links, &ids, allowed).map_err(isolation)?;
    for family in ["-4", "-6"] {
        let routes: Vec<serde_json::Value> = parse(ns, [family, "-j", "route", "show", "default"])?;
        if !routes.is_empty() {
            return Err(isolation(format!(
                "default route present: {}",
                serde_json::Value::from(routes)
            )));
        }
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned, const N: usize>(ns: &Netns, args: [&str; N]) -> Result<T> {
    let out = ns.ip(args)?;
    // Some iproute2 versions print nothing instead of `[]` for empty dumps.
    let out = if out.trim().is_empty() {
        "[]"
    } else {
        out.as_str()
    };
    serde_json::from_str(out).map_err(|source| Error::Parse {
        command: format!("ip -n {} {}", ns.name(), args.join(" ")),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes as printed by iproute2 6.1 (`ip -j -d link show`, trimmed).
    const NODE_LINKS: &str = r#"[
        {"ifindex":1,"ifname":"lo","link_type":"loopback","flags":["LOOPBACK","UP"]},
        {"ifindex":2,"link_index":3,"ifname":"skiff-ul","link_type":"ether","link_netnsid":0,
         "linkinfo":{"info_kind":"veth"}}]"#;
    const UNDERLAY_LINKS: &str = r#"[
        {"ifindex":1,"ifname":"lo","link_type":"loopback"},
        {"ifindex":2,"ifname":"skiff-br","link_type":"ether","linkinfo":{"info_kind":"bridge","info_data":{}}},
        {"ifindex":3,"link_index":2,"ifname":"skiff-n0","link_type":"ether","link_netnsid":1,
         "linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"},"master":"skiff-br"}]"#;

    fn links(json: &str) -> Vec<Link> {
        serde_json::from_str(json).expect("fixture parses")
    }
    fn ids(json: &str) -> Vec<NsId> {
        serde_json::from_str(json).expect("fixture parses")
    }

    #[test]
    fn veth_into_our_namespace_passes() {
        let ids = ids(r#"[{"nsid":0,"name":"skiff-ul-1-0"}]"#);
        check_links(
            &links(NODE_LINKS),
            &ids,
            &["skiff-ul-1-0", "skiff-node0-1-1"],
        )
        .expect("isolated");
        let ids2 = super::tests::ids(r#"[{"nsid":1,"name":"skiff-node0-1-1"}]"#);
        check_links(
            &links(UNDERLAY_LINKS),
            &ids2,
            &["skiff-ul-1-0", "skiff-node0-1-1"],
        )
        .expect("isolated");
    }

    #[test]
    fn veth_into_unnamed_namespace_fails() {
        // The root namespace has an id but no name under /var/run/netns.
        let err = check_links(
            &links(NODE_LINKS),
            &ids(r#"[{"nsid":0}]"#),
            &["skiff-ul-1-0"],
        )
        .expect_err("root peer must fail");
        assert!(err.contains("unnamed"), "{err}");
        let err = check_links(&links(NODE_LINKS), &[], &["skiff-ul-1-0"])
            .expect_err("unknown id must fail");
        assert!(err.contains("skiff-ul"), "{err}");
    }

    #[test]
    fn veth_into_foreign_named_namespace_fails() {
        let err = check_links(
            &links(NODE_LINKS),
            &ids(r#"[{"nsid":0,"name":"other"}]"#),
            &["skiff-ul-1-0"],
        )
        .expect_err("foreign peer must fail");
        assert!(err.contains("other"), "{err}");
    }

    #[test]
    fn other_link_kinds_fail() {
        let macvlan = r#"[{"ifname":"mv0","link_type":"ether","link_netnsid":0,"linkinfo":{"info_kind":"macvlan"}}]"#;
        let err = check_links(
            &links(macvlan),
            &ids(r#"[{"nsid":0,"name":"skiff-ul-1-0"}]"#),
            &["skiff-ul-1-0"],
        )
        .expect_err("macvlan must fail");
        assert!(err.contains("mv0"), "{err}");
        let physical = r#"[{"ifname":"eth0","link_type":"ether"}]"#;
        assert!(check_links(&links(physical), &[], &[]).is_err());
    }

    #[test]
    fn veth_with_both_ends_local_passes() {
        let local = r#"[{"ifname":"a","link_type":"ether","linkinfo":{"info_kind":"veth"}}]"#;
        check_links(&links(local), &[], &[]).expect("local pair stays inside");
    }
}
