//! The `kubernetes` Service in `default`, as kube-apiserver keeps it: the
//! first address of the service CIDR, port 443 (`https`) → the API
//! server's port, and an EndpointSlice of the same name pointing at the
//! API server when it has an address pods can reach (not loopback or
//! unspecified). The objects are pure functions of the configuration;
//! [`Resources::ensure_kubernetes_service`](super::Resources::ensure_kubernetes_service)
//! writes them at startup.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Value, json};

/// Name of the Service (and its EndpointSlice).
pub const NAME: &str = "kubernetes";
/// Its namespace.
pub const NAMESPACE: &str = "default";
/// The Service port clients use.
pub const SERVICE_PORT: u16 = 443;
/// The name of that port.
pub const PORT_NAME: &str = "https";
/// Label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The first address of the service CIDR (`10.96.0.1` for `10.96.0.0/12`).
pub fn first_address(cidr: IpNetwork) -> Option<IpAddr> {
    match cidr {
        IpNetwork::V4(net) => {
            let first = u32::from(net.network()).checked_add(1)?;
            net.contains(first.into())
                .then(|| IpAddr::from(first.to_be_bytes()))
        }
        IpNetwork::V6(net) => {
            let first = u128::from(net.network()).checked_add(1)?;
            net.contains(first.into())
                .then(|| IpAddr::from(first.to_be_bytes()))
        }
    }
}

/// The address the EndpointSlice points at: the advertised one, else the
/// listen address, unless pods could not reach it.
pub fn endpoint_address(listen: IpAddr, advertise: Option<IpAddr>) -> Option<IpAddr> {
    let address = advertise.unwrap_or(listen);
    (!address.is_loopback() && !address.is_unspecified()).then_some(address)
}

/// The Service.
pub fn service(cluster_ip: IpAddr, target_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "sessionAffinity": "None",
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": target_port}],
        },
    })
}

/// The EndpointSlice for an API server at `address:port`.
pub fn endpoint_slice(address: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: NAME},
        },
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
    })
}

/// Whether the stored object already says what `desired` says in the
/// fields this module owns (`spec.ports` of the Service; address type,
/// endpoints and ports of the slice).
pub fn up_to_date(stored: &Value, desired: &Value, fields: &[&str]) -> bool {
    fields
        .iter()
        .all(|f| stored.pointer(f) == desired.pointer(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_addresses() {
        let v4: IpNetwork = "10.96.0.0/12".parse().expect("cidr");
        assert_eq!(first_address(v4), Some("10.96.0.1".parse().expect("ip")));
        let v6: IpNetwork = "fd00:10:96::/112".parse().expect("cidr");
        assert_eq!(
            first_address(v6),
            Some("fd00:10:96::1".parse().expect("ip"))
        );
        let host: IpNetwork = "10.0.0.7/32".parse().expect("cidr");
        assert_eq!(first_address(host), None);
    }

    #[test]
    fn endpoint_only_for_reachable_addresses() {
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let any: IpAddr = "0.0.0.0".parse().expect("ip");
        let real: IpAddr = "192.0.2.10".parse().expect("ip");
        assert_eq!(endpoint_address(lo, None), None);
        assert_eq!(endpoint_address(any, None), None);
        assert_eq!(endpoint_address(any, Some(real)), Some(real));
        assert_eq!(endpoint_address(real, None), Some(real));
        assert_eq!(endpoint_address("::1".parse().expect("ip"), None), None);
    }

    #[test]
    fn objects() {
        let svc = service("10.96.0.1".parse().expect("ip"), 6443);
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        let slice = endpoint_slice("fd00::5".parse().expect("ip"), 6443);
        assert_eq!(slice["addressType"], "IPv6");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "fd00::5");
        assert!(up_to_date(&slice, &slice, &["/ports", "/endpoints"]));
        let other = endpoint_slice("fd00::6".parse().expect("ip"), 6443);
        assert!(!up_to_date(&slice, &other, &["/ports", "/endpoints"]));
        assert!(up_to_date(&slice, &other, &["/ports"]));
    }
}
