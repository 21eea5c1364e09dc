//! Why a kernel program dropped, rejected or gave up on a packet. Each value
//! is an index into the per-CPU `SKF_REASONS` counter array.

/// Counter indices. `#[repr(u32)]` on the Rust side only; the kernel map sees
/// plain `u32` indices.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Packet too short for the headers it claims.
    Truncated = 0,
    /// Service matched but it has no usable backend: connection refused.
    NoBackend = 1,
    /// Slot or backend id missing mid-update (should never happen; see the
    /// write-ordering invariant in skiff-proxy).
    DanglingId = 2,
    /// A helper (checksum, store bytes) returned an error.
    HelperFailed = 3,
    /// Conntrack insert failed.
    ConntrackFull = 4,
    /// Packets DNAT'd to a backend (not a drop; counted for visibility).
    Translated = 5,
    /// Replies reverse-NAT'd.
    ReverseTranslated = 6,
    /// Socket-LB: connect/sendmsg to a service rewritten to a backend.
    SockTranslated = 7,
    /// Socket-LB: connect/sendmsg to a service without backends refused.
    SockRefused = 8,
}

pub const REASON_COUNT: u32 = 9;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::Truncated,
        Reason::NoBackend,
        Reason::DanglingId,
        Reason::HelperFailed,
        Reason::ConntrackFull,
        Reason::Translated,
        Reason::ReverseTranslated,
        Reason::SockTranslated,
        Reason::SockRefused,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Truncated => "truncated",
            Reason::NoBackend => "no_backend",
            Reason::DanglingId => "dangling_id",
            Reason::HelperFailed => "helper_failed",
            Reason::ConntrackFull => "conntrack_full",
            Reason::Translated => "translated",
            Reason::ReverseTranslated => "reverse_translated",
            Reason::SockTranslated => "sock_translated",
            Reason::SockRefused => "sock_refused",
        }
    }
}
