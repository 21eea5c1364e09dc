//! The pod's `/etc/resolv.conf`, as kubelet writes it for `dnsPolicy:
//! ClusterFirst`.

use std::net::Ipv4Addr;

/// Renders resolv.conf for a pod in `namespace`: the node DNS address, the
/// cluster search path and `ndots:5`.
pub fn render(nameserver: Ipv4Addr, namespace: &str, domain: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kubelet_cluster_first_layout() {
        assert_eq!(
            render(Ipv4Addr::new(192, 168, 250, 1), "shop", "cluster.local"),
            "nameserver 192.168.250.1\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n"
        );
    }
}
