//! Probes: reading them from the Pod spec (pure) and running the network
//! kinds (`tcpSocket`, `httpGet`) from the node against the pod IP. `exec`
//! probes run inside the container's namespaces and live in the sandbox
//! runtime.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::container::CREATE_CONTAINER_CONFIG_ERROR;
use crate::error::AgentError;
use crate::lifecycle::{ContainerSpec, ProbeAction, ProbeSpec};

/// The lifecycle view of a container's probes. Fails with
/// `CreateContainerConfigError` for probes the agent cannot run (gRPC, no
/// handler, unknown named port).
pub fn container_spec(container: &Container) -> Result<ContainerSpec, AgentError> {
    let conv = |p: &Option<Probe>| p.as_ref().map(|p| probe_spec(container, p)).transpose();
    Ok(ContainerSpec {
        name: container.name.clone(),
        startup: conv(&container.startup_probe)?,
        liveness: conv(&container.liveness_probe)?,
        readiness: conv(&container.readiness_probe)?,
    })
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn threshold(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// Converts one probe with Kubernetes' defaults (period 10 s, timeout 1 s,
/// success 1, failure 3).
pub fn probe_spec(container: &Container, probe: &Probe) -> Result<ProbeSpec, AgentError> {
    let bad = |msg: String| AgentError::PodSpec {
        reason: CREATE_CONTAINER_CONFIG_ERROR,
        message: format!("container {:?}: {msg}", container.name),
    };
    let action = if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err(bad("exec probe has an empty command".into()));
        }
        ProbeAction::Exec(cmd)
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::Tcp {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(container, &tcp.port).map_err(bad)?,
        }
    } else if let Some(http) = &probe.http_get {
        let port = resolve_port(container, &http.port).map_err(bad)?;
        let path = http
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        ProbeAction::Http {
            scheme: http.scheme.clone().unwrap_or_else(|| "HTTP".into()),
            host: http.host.clone().filter(|h| !h.is_empty()),
            port,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if probe.grpc.is_some() {
        return Err(bad(
            "gRPC probes are not supported by the Skiff agent".into()
        ));
    } else {
        return Err(bad(
            "probe has no handler (exec, tcpSocket or httpGet)".into()
        ));
    };
    Ok(ProbeSpec {
        action,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10),
        timeout: secs(probe.timeout_seconds, 1),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
        termination_grace: probe
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
    })
}

/// A numeric port, or a named one looked up in the container's ports.
pub fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("probe port {n} is out of range")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("probe port {name:?} names no container port"))
        }
    }
}

/// Connects to `host` (default `pod_ip`) on `port` within `timeout`.
pub async fn tcp(
    pod_ip: Ipv4Addr,
    host: Option<&str>,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let host = host.map_or_else(|| pod_ip.to_string(), str::to_owned);
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: timeout after {timeout:?}")),
    }
}

/// HTTP GET within `timeout`; a status in 200..400 is success (redirects
/// followed). HTTPS is refused: the agent is built without TLS.
pub async fn http(
    pod_ip: Ipv4Addr,
    scheme: &str,
    host: Option<&str>,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("{scheme} probes are not supported (only HTTP)"));
    }
    let host = host.map_or_else(|| pod_ip.to_string(), str::to_owned);
    let url = format!("http://{host}:{port}{path}");
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let mut req = client.get(&url).header("User-Agent", "skiff-agent-probe");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "GET {url}: HTTP probe failed with statuscode: {status}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn converts_probes_with_defaults_and_named_ports() {
        let c = container(json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "healthz"}, "periodSeconds": 2, "successThreshold": 2},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 5, "failureThreshold": 1},
            "startupProbe": {"exec": {"command": ["true"]}}
        }));
        let spec = container_spec(&c).expect("spec");
        let r = spec.readiness.expect("readiness");
        assert_eq!(
            r.action,
            ProbeAction::Http {
                scheme: "HTTP".into(),
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            (
                r.period,
                r.timeout,
                r.success_threshold,
                r.failure_threshold
            ),
            (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
        );
        let l = spec.liveness.expect("liveness");
        assert_eq!(
            l.action,
            ProbeAction::Tcp {
                host: None,
                port: 8080
            }
        );
        assert_eq!(
            (l.initial_delay, l.period, l.failure_threshold),
            (Duration::from_secs(5), Duration::from_secs(10), 1)
        );
        assert_eq!(
            spec.startup.expect("startup").action,
            ProbeAction::Exec(vec!["true".into()])
        );
    }

    #[test]
    fn unusable_probes_are_config_errors() {
        for probe in [
            json!({"grpc": {"port": 9}}),
            json!({}),
            json!({"tcpSocket": {"port": "nope"}}),
            json!({"tcpSocket": {"port": 70000}}),
            json!({"exec": {"command": []}}),
        ] {
            let c = container(json!({"name": "c", "livenessProbe": probe.clone()}));
            assert!(
                matches!(container_spec(&c), Err(AgentError::PodSpec { .. })),
                "{probe}"
            );
        }
    }

    #[tokio::test]
    async fn tcp_and_http_probes_hit_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable", "200 OK"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        let lo = Ipv4Addr::LOCALHOST;
        let t = Duration::from_secs(2);
        http(lo, "HTTP", None, port, "/", &[], t)
            .await
            .expect("200 passes");
        let err = http(lo, "HTTP", None, port, "/", &[], t)
            .await
            .expect_err("503 fails");
        assert!(err.contains("503"), "{err}");
        tcp(lo, None, port, t).await.expect("tcp connects");
        server.await.expect("server");
        assert!(tcp(lo, None, port, t).await.is_err(), "closed port refuses");
        assert!(http(lo, "HTTPS", None, port, "/", &[], t).await.is_err());
    }
}
