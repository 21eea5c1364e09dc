//! Query and response counters: plain atomics, cheap on the query path,
//! readable at any time from code (a `/metrics` endpoint can export a
//! [`MetricsSnapshot`]).

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Query types counted on their own; everything else counts as "other".
pub const COUNTED_QTYPES: [RecordType; 11] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::NS,
    RecordType::TXT,
    RecordType::MX,
    RecordType::HTTPS,
    RecordType::ANY,
];

/// Response codes counted on their own; everything else counts as "other".
pub const COUNTED_RCODES: [ResponseCode; 6] = [
    ResponseCode::NoError,
    ResponseCode::FormErr,
    ResponseCode::ServFail,
    ResponseCode::NXDomain,
    ResponseCode::NotImp,
    ResponseCode::Refused,
];

const QTYPE_SLOTS: usize = COUNTED_QTYPES.len() + 1;
const RCODE_SLOTS: usize = COUNTED_RCODES.len() + 1;

/// Counters of a running DNS server.
#[derive(Debug, Default)]
pub struct Metrics {
    queries: [AtomicU64; QTYPE_SLOTS],
    responses: [AtomicU64; RCODE_SLOTS],
    authoritative: AtomicU64,
    forwarded: AtomicU64,
    truncated: AtomicU64,
}

/// A point-in-time copy of [`Metrics`], labelled for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Queries by type (`"A"`, `"AAAA"`, …, `"other"`).
    pub queries: Vec<(String, u64)>,
    /// Responses by code (`"No Error"`, `"Non-Existent Domain"`, …, `"other"`),
    /// as hickory names them.
    pub responses: Vec<(String, u64)>,
    /// Queries for names in an authoritative zone.
    pub authoritative: u64,
    /// Queries sent on to the upstreams.
    pub forwarded: u64,
    /// Responses sent with the TC bit.
    pub truncated: u64,
}

fn qtype_slot(qtype: RecordType) -> usize {
    COUNTED_QTYPES
        .iter()
        .position(|t| *t == qtype)
        .unwrap_or(COUNTED_QTYPES.len())
}

fn rcode_slot(rcode: ResponseCode) -> usize {
    COUNTED_RCODES
        .iter()
        .position(|c| *c == rcode)
        .unwrap_or(COUNTED_RCODES.len())
}

/// How a query was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered from the cluster view.
    Authoritative,
    /// Sent on to the upstreams.
    Forwarded,
    /// Neither (malformed, or no upstreams for an outside name).
    Unrouted,
}

impl Metrics {
    /// Counts one query of `qtype` routed as `route`.
    pub fn record_query(&self, qtype: RecordType, route: Route) {
        self.queries[qtype_slot(qtype)].fetch_add(1, Ordering::Relaxed);
        match route {
            Route::Authoritative => self.authoritative.fetch_add(1, Ordering::Relaxed),
            Route::Forwarded => self.forwarded.fetch_add(1, Ordering::Relaxed),
            Route::Unrouted => 0,
        };
    }

    /// Counts one response with `rcode`, truncated or not.
    pub fn record_response(&self, rcode: ResponseCode, truncated: bool) {
        self.responses[rcode_slot(rcode)].fetch_add(1, Ordering::Relaxed);
        if truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queries of `qtype` so far (for an uncounted type: all "other" queries).
    pub fn queries(&self, qtype: RecordType) -> u64 {
        self.queries[qtype_slot(qtype)].load(Ordering::Relaxed)
    }

    /// Responses with `rcode` so far (for an uncounted code: all "other").
    pub fn responses(&self, rcode: ResponseCode) -> u64 {
        self.responses[rcode_slot(rcode)].load(Ordering::Relaxed)
    }

    /// Total queries.
    pub fn total_queries(&self) -> u64 {
        self.queries.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Queries answered from the cluster view.
    pub fn authoritative(&self) -> u64 {
        self.authoritative.load(Ordering::Relaxed)
    }

    /// Queries forwarded upstream.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Responses sent truncated (TC).
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// All counters, labelled.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let label_q = |i: usize| {
            COUNTED_QTYPES
                .get(i)
                .map_or_else(|| "other".to_owned(), ToString::to_string)
        };
        let label_r = |i: usize| {
            COUNTED_RCODES
                .get(i)
                .map_or_else(|| "other".to_owned(), ToString::to_string)
        };
        MetricsSnapshot {
            queries: self
                .queries
                .iter()
                .enumerate()
                .map(|(i, c)| (label_q(i), c.load(Ordering::Relaxed)))
                .collect(),
            responses: self
                .responses
                .iter()
                .enumerate()
                .map(|(i, c)| (label_r(i), c.load(Ordering::Relaxed)))
                .collect(),
            authoritative: self.authoritative(),
            forwarded: self.forwarded(),
            truncated: self.truncated(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_type_code_and_route() {
        let m = Metrics::default();
        m.record_query(RecordType::A, Route::Authoritative);
        m.record_query(RecordType::A, Route::Forwarded);
        m.record_query(RecordType::SRV, Route::Authoritative);
        m.record_query(RecordType::NULL, Route::Unrouted);
        m.record_query(RecordType::CAA, Route::Unrouted);
        m.record_response(ResponseCode::NoError, false);
        m.record_response(ResponseCode::NXDomain, true);
        m.record_response(ResponseCode::BADVERS, false);
        assert_eq!(m.queries(RecordType::A), 2);
        assert_eq!(m.queries(RecordType::SRV), 1);
        assert_eq!(m.queries(RecordType::AAAA), 0);
        assert_eq!(
            m.queries(RecordType::NULL),
            2,
            "uncounted types share 'other'"
        );
        assert_eq!(m.total_queries(), 5);
        assert_eq!(m.authoritative(), 2);
        assert_eq!(m.forwarded(), 1);
        assert_eq!(m.responses(ResponseCode::NXDomain), 1);
        assert_eq!(m.responses(ResponseCode::YXDomain), 1, "other");
        assert_eq!(m.truncated(), 1);

        let snap = m.snapshot();
        assert_eq!(snap.queries.len(), COUNTED_QTYPES.len() + 1);
        assert!(snap.queries.contains(&("A".to_owned(), 2)));
        assert!(snap.queries.contains(&("other".to_owned(), 2)));
        assert_eq!(snap.responses.last(), Some(&("other".to_owned(), 1)));
        assert_eq!(
            (snap.authoritative, snap.forwarded, snap.truncated),
            (2, 1, 1)
        );
    }
}
