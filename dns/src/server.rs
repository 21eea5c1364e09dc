//! Routing and transport: plain-data [`DnsConfig`] → [`DnsConfig::build`]
//! (binds UDP and TCP, assembles the routing) → [`DnsServer::serve`].
//!
//! Routing is hickory's `Catalog`: the cluster domain and the reverse zones
//! of the configured CIDRs go to [`ClusterZone`]s (authoritative, AA set),
//! everything else to hickory's forwarding zone handler, whose
//! hickory-resolver keeps a TTL-honouring cache and whose failures come back
//! as SERVFAIL. A thin [`RequestHandler`] around the catalog counts queries
//! and response codes and opens a span per query. Transport is
//! `hickory_server::Server` on one UDP socket and one TCP listener on the
//! same port; UDP answers larger than the client's EDNS payload size (512
//! without EDNS) go out truncated with TC set, and the same query over TCP
//! gets the whole answer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::runtime::Time;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder, ZoneHandler};
use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug_span, info, info_span, warn};

use crate::metrics::{Metrics, Route};
use crate::records::{self, RecordError, RecordSettings};
use crate::view::ViewHandle;
use crate::zone::ClusterZone;

/// Where the system's resolvers are listed.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Errors building or running the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The cluster domain is invalid.
    #[error(transparent)]
    Records(#[from] RecordError),
    /// A socket could not be bound.
    #[error("binding {protocol} {addr}")]
    Bind {
        /// "udp" or "tcp".
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An upstream is the server's own listening address: queries would loop.
    #[error("upstream {addr} is this server's own address")]
    UpstreamLoop {
        /// The offending upstream.
        addr: SocketAddr,
    },
    /// hickory refused the forwarder configuration.
    #[error("configuring the forwarder: {reason}")]
    Forwarder {
        /// hickory's explanation (it reports this as a string).
        reason: String,
    },
    /// resolv.conf could not be read.
    #[error("reading {path}")]
    ResolvConf {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// resolv.conf lists no usable name server.
    #[error("{path} lists no name servers")]
    NoNameServers {
        /// The file.
        path: String,
    },
    /// The server's sockets failed while serving.
    #[error("serving DNS")]
    Serve(#[source] hickory_net::NetError),
}

/// Plain-data configuration of the cluster DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Address for both UDP and TCP (port 0: pick a free port, same for both).
    pub listen: SocketAddr,
    /// The cluster domain (default `cluster.local`).
    pub domain: String,
    /// TTL of cluster records and of the SOA minimum (default 5 s).
    pub ttl: u32,
    /// Where other names are forwarded. Empty: not forwarded (REFUSED).
    /// [`system_upstreams`] reads the node's resolv.conf for a default.
    pub upstreams: Vec<SocketAddr>,
    /// CIDRs whose reverse zones are answered authoritatively (service and
    /// pod CIDRs); PTR queries outside them are forwarded.
    pub reverse_cidrs: Vec<IpNetwork>,
    /// How long one upstream attempt may take before it counts as failed.
    pub upstream_timeout: Duration,
    /// Entries in the forwarder's cache.
    pub cache_size: u64,
    /// Name endpoints without a hostname after their pod, not their IP.
    pub endpoint_pod_names: bool,
    /// Idle TCP connections are closed after this long.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53),
            domain: "cluster.local".to_owned(),
            ttl: 5,
            upstreams: Vec::new(),
            reverse_cidrs: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            cache_size: 4096,
            endpoint_pod_names: false,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The name servers listed in resolv.conf text, on port 53.
///
/// Fails when none is listed.
pub fn upstreams_from_resolv_conf(text: &str) -> Result<Vec<SocketAddr>, DnsError> {
    let (config, _opts) = hickory_resolver::system_conf::parse_resolv_conf(text).map_err(|_| {
        DnsError::NoNameServers {
            path: "resolv.conf".to_owned(),
        }
    })?;
    let servers: Vec<SocketAddr> = config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect();
    if servers.is_empty() {
        return Err(DnsError::NoNameServers {
            path: "resolv.conf".to_owned(),
        });
    }
    Ok(servers)
}

/// The node's name servers from `/etc/resolv.conf` (or `path`).
pub fn system_upstreams(path: Option<&Path>) -> Result<Vec<SocketAddr>, DnsError> {
    let path = path.unwrap_or_else(|| Path::new(RESOLV_CONF));
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ResolvConf {
        path: path.display().to_string(),
        source,
    })?;
    upstreams_from_resolv_conf(&text).map_err(|e| match e {
        DnsError::NoNameServers { .. } => DnsError::NoNameServers {
            path: path.display().to_string(),
        },
        other => other,
    })
}

/// Routes a request through the catalog, counting and tracing it.
struct CountingHandler {
    catalog: Catalog,
    metrics: Arc<Metrics>,
    /// Apexes of the zones answered from the view.
    authoritative: Vec<LowerName>,
    forwarding: bool,
    /// The view the cluster zones answer from (to tell "not loaded yet").
    view: ViewHandle,
}

impl CountingHandler {
    fn route(&self, name: &LowerName) -> Route {
        if self.authoritative.iter().any(|z| z.zone_of(name)) {
            Route::Authoritative
        } else if self.forwarding {
            Route::Forwarded
        } else {
            Route::Unrouted
        }
    }
}

/// Sets RA on every response: with upstreams configured the server does
/// offer recursion, also when the answer happens to be its own (stub
/// resolvers and `dig` warn about RA missing on a recursive server).
#[derive(Clone)]
struct RecursionAvailable<R>(R);

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for RecursionAvailable<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        response.metadata_mut().recursion_available = true;
        self.0.send_response(response).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for CountingHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let span = match request.request_info() {
            Ok(info) => {
                let qtype = info.query.query_type();
                let route = self.route(info.query.name());
                self.metrics.record_query(qtype, route);
                debug_span!(
                    "dns_query",
                    qname = %info.query.name(),
                    qtype = %qtype,
                    route = ?route,
                    protocol = %request.protocol(),
                    src = %request.src(),
                )
            }
            Err(_) => {
                self.metrics
                    .record_query(hickory_proto::rr::RecordType::NULL, Route::Unrouted);
                debug_span!("dns_query", protocol = %request.protocol(), src = %request.src())
            }
        };
        let not_loaded = request.request_info().is_ok_and(|info| {
            self.route(info.query.name()) == Route::Authoritative
                && self.view.load().generation() == 0
        });
        let info = if not_loaded {
            // Before the first snapshot the cluster zones know nothing yet:
            // NXDOMAIN would be a lie clients cache for the SOA minimum,
            // SERVFAIL makes them retry. (The Catalog turns a zone's
            // SERVFAIL into NOERROR, so it is answered here.)
            let response = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            let mut handle = response_handle;
            match handle.send_response(response).instrument(span).await {
                Ok(info) => info,
                Err(e) => {
                    warn!(error = %e, "sending SERVFAIL");
                    let mut metadata = request.metadata;
                    metadata.message_type = hickory_proto::op::MessageType::Response;
                    metadata.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(hickory_proto::op::Header {
                        metadata,
                        counts: Default::default(),
                    })
                }
            }
        } else if self.forwarding {
            self.catalog
                .handle_request::<_, T>(request, RecursionAvailable(response_handle))
                .instrument(span)
                .await
        } else {
            self.catalog
                .handle_request::<R, T>(request, response_handle)
                .instrument(span)
                .await
        };
        self.metrics
            .record_response(info.response_code, info.truncation);
        info
    }
}

/// A bound, ready-to-serve DNS server.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    local_addr: SocketAddr,
    handler: CountingHandler,
    metrics: Arc<Metrics>,
    domain: Name,
    tcp_idle_timeout: Duration,
}

impl DnsConfig {
    /// Binds the sockets and assembles routing over `view`.
    ///
    /// Fails when the domain is invalid, an upstream is our own address,
    /// hickory rejects the forwarder, or a socket cannot be bound.
    pub async fn build(self, view: ViewHandle) -> Result<DnsServer, DnsError> {
        let (udp, tcp, local_addr) = bind_pair(self.listen).await?;
        if let Some(addr) = self
            .upstreams
            .iter()
            .find(|u| **u == local_addr || **u == self.listen)
        {
            return Err(DnsError::UpstreamLoop { addr: *addr });
        }

        let mut ns_addrs = Vec::new();
        if !local_addr.ip().is_unspecified() {
            ns_addrs.push(local_addr.ip());
        }
        let settings = Arc::new(
            RecordSettings::new(&self.domain, self.ttl)?
                .with_ns_addrs(ns_addrs)
                .with_endpoint_pod_names(self.endpoint_pod_names),
        );

        let mut catalog = Catalog::new();
        let mut authoritative = Vec::new();
        let cluster = ClusterZone::cluster(view.clone(), settings.clone());
        authoritative.push(cluster.origin().clone());
        catalog.upsert(
            cluster.origin().clone(),
            vec![Arc::new(cluster) as Arc<dyn ZoneHandler>],
        );
        for cidr in &self.reverse_cidrs {
            for zone in records::reverse_zones(*cidr) {
                let handler = ClusterZone::reverse(zone, view.clone(), settings.clone());
                authoritative.push(handler.origin().clone());
                catalog.upsert(
                    handler.origin().clone(),
                    vec![Arc::new(handler) as Arc<dyn ZoneHandler>],
                );
            }
        }

        let forwarding = !self.upstreams.is_empty();
        if forwarding {
            let forwarder = forwarder(&self)?;
            catalog.upsert(
                LowerName::new(&Name::root()),
                vec![Arc::new(forwarder) as Arc<dyn ZoneHandler>],
            );
        }

        let metrics = Arc::new(Metrics::default());
        Ok(DnsServer {
            udp,
            tcp,
            local_addr,
            handler: CountingHandler {
                catalog,
                metrics: metrics.clone(),
                authoritative,
                forwarding,
                view,
            },
            metrics,
            domain: settings.domain().clone(),
            tcp_idle_timeout: self.tcp_idle_timeout,
        })
    }
}

fn forwarder(config: &DnsConfig) -> Result<ForwardZoneHandler, DnsError> {
    let name_servers = config
        .upstreams
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = config.upstream_timeout;
    options.attempts = 1;
    options.cache_size = config.cache_size;
    // A truncated upstream answer is retried over TCP rather than passed
    // on incomplete.
    options.try_tcp_on_error = true;
    ForwardZoneHandler::builder_tokio(ForwardConfig {
        name_servers,
        options: Some(options),
    })
    .build()
    .map_err(|reason| DnsError::Forwarder { reason })
}

/// Binds UDP and TCP on the same address; with port 0, retries a few times
/// until the port picked for UDP is also free for TCP.
async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    const ATTEMPTS: usize = 16;
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DnsError::Bind {
                protocol: "udp",
                addr: listen,
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            protocol: "udp",
            addr: listen,
            source,
        })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(source) if listen.port() == 0 && source.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(source);
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    protocol: "tcp",
                    addr,
                    source,
                });
            }
        }
    }
    Err(DnsError::Bind {
        protocol: "tcp",
        addr: listen,
        source: last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    })
}

impl DnsServer {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters, live while it serves.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and waits
    /// for in-flight requests.
    ///
    /// Fails when a socket fails unrecoverably.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), DnsError> {
        let span = info_span!("dns_server", listen = %self.local_addr, domain = %self.domain);
        async move {
            let mut server = Server::new(self.handler);
            server.register_socket(self.udp);
            server.register_listener(self.tcp, self.tcp_idle_timeout, 64);
            info!("serving");
            // hickory stops on its own token; tie ours to it.
            let theirs = server.shutdown_token().clone();
            let link = tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => theirs.cancel(),
                    () = theirs.cancelled() => {}
                }
            });
            let result = server.block_until_done().await;
            link.abort();
            match &result {
                Ok(()) => info!("stopped"),
                Err(error) => warn!(%error, "stopped with an error"),
            }
            result.map_err(DnsError::Serve)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::53\noptions ndots:5\n";
        assert_eq!(
            upstreams_from_resolv_conf(text).expect("parsed"),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().expect("addr"),
                "[fd00::53]:53".parse().expect("addr"),
            ]
        );
        assert!(matches!(
            upstreams_from_resolv_conf("search example.com\n"),
            Err(DnsError::NoNameServers { .. })
        ));
    }

    #[test]
    fn system_upstreams_reads_a_file() {
        let dir = tempfile::tempdir().expect("tmp dir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").expect("write");
        let got = system_upstreams(Some(&path)).expect("read");
        assert_eq!(
            got,
            vec!["192.0.2.53:53".parse::<SocketAddr>().expect("addr")]
        );
        assert!(matches!(
            system_upstreams(Some(&dir.path().join("missing"))),
            Err(DnsError::ResolvConf { .. })
        ));
    }

    #[tokio::test]
    async fn build_rejects_bad_domain_and_self_upstream() {
        let bad = DnsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            domain: "bad..domain".into(),
            ..DnsConfig::default()
        };
        assert!(matches!(
            bad.build(ViewHandle::new()).await,
            Err(DnsError::Records(_))
        ));
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let looped = DnsConfig {
            listen,
            upstreams: vec![listen],
            ..DnsConfig::default()
        };
        assert!(matches!(
            looped.build(ViewHandle::new()).await,
            Err(DnsError::UpstreamLoop { .. })
        ));
    }

    #[tokio::test]
    async fn build_binds_udp_and_tcp_on_one_port() {
        let server = DnsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..DnsConfig::default()
        }
        .build(ViewHandle::new())
        .await
        .expect("build");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        // Both sockets hold the port: binding either again fails.
        assert!(std::net::UdpSocket::bind(addr).is_err());
        assert!(std::net::TcpListener::bind(addr).is_err());
    }
}
