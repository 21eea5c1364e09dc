//! A loopback DNS upstream inside each node namespace: answers
//! `external.e2e.test. A 198.51.100.7` (and REFUSED for anything else) and
//! counts the queries, so a test sees that a pod's lookup of a name outside
//! the cluster went through node-local DNS to it.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The external name and its address.
pub const EXTERNAL_NAME: &str = "external.e2e.test.";
pub const EXTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Where node-local DNS forwards to (inside each node namespace).
pub const UPSTREAM: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5300);

/// The answer to one query (pure): A for [`EXTERNAL_NAME`], NXDOMAIN for
/// other names below `e2e.test.`, REFUSED otherwise.
pub fn respond(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(question.clone());
    let external = Name::from_str(EXTERNAL_NAME).ok()?;
    let zone = Name::from_str("e2e.test.").ok()?;
    if question.name() == &external {
        if question.query_type() == RecordType::A {
            resp.add_answer(Record::from_rdata(external, 30, RData::A(A(EXTERNAL_ADDR))));
        }
    } else if zone.zone_of(question.name()) {
        resp.metadata.response_code = ResponseCode::NXDomain;
    } else {
        resp.metadata.response_code = ResponseCode::Refused;
    }
    resp.to_vec().ok()
}

/// Upstreams serving in some namespaces until dropped.
pub struct Upstreams {
    stop: Arc<AtomicBool>,
    /// Queries for [`EXTERNAL_NAME`] received, all namespaces together.
    pub external_queries: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Upstreams {
    /// Binds [`UPSTREAM`] in each namespace (`/var/run/netns/<name>`) and
    /// serves on a thread per socket.
    pub fn start<'a>(netns: impl IntoIterator<Item = &'a str>) -> Upstreams {
        let stop = Arc::new(AtomicBool::new(false));
        let external_queries = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for ns in netns {
            let path = Path::new("/var/run/netns").join(ns);
            let sock = skiff_tests::run_in_netns(&path, || UdpSocket::bind(UPSTREAM))
                .expect("entering the node namespace")
                .expect("binding the upstream");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let stop = Arc::clone(&stop);
            let count = Arc::clone(&external_queries);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let asks_external = Message::from_vec(&buf[..n]).is_ok_and(|m| {
                        m.queries
                            .first()
                            .is_some_and(|q| q.name().to_ascii() == EXTERNAL_NAME)
                    });
                    if asks_external {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(reply) = respond(&buf[..n]) {
                        let _ = sock.send_to(&reply, from);
                    }
                }
            }));
        }
        Upstreams {
            stop,
            external_queries,
            threads,
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;

    fn ask(name: &str, rtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
        let bytes = respond(&q.to_vec().expect("encode")).expect("a reply");
        let reply = Message::from_vec(&bytes).expect("decode");
        assert_eq!(reply.metadata.id, q.metadata.id);
        reply
    }

    #[test]
    fn answers_the_external_name_only() {
        let r = ask(EXTERNAL_NAME, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(EXTERNAL_ADDR)));
        let r = ask("other.e2e.test.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask("example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }
}
