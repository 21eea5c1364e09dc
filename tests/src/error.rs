//! The one error type of the topology library.

use std::io;

/// Why a topology operation failed. Every variant names what was being done
/// (the command line, the namespace, the path) so a failing test says where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line as it was run.
        command: String,
        /// Its exit status (or the signal that ended it).
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command could not be started at all (missing binary, fork failure).
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line that was to run.
        command: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A file or syscall operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// `setns(2)` into a network namespace failed.
    #[error("setns into network namespace {netns}")]
    Setns {
        /// The namespace's name.
        netns: String,
        /// The errno.
        source: nix::Error,
    },
    /// A namespace prefix or interface name was rejected before reaching the kernel.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The JSON printed by `ip -j` could not be parsed.
    #[error("cannot parse the output of `{command}`")]
    Parse {
        /// The command whose output was parsed.
        command: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The underlay subnet has too few addresses for the requested nodes.
    #[error("underlay {underlay} has too few addresses for {nodes} nodes plus the outside client")]
    UnderlayTooSmall {
        /// The requested underlay subnet.
        underlay: ipnetwork::Ipv4Network,
        /// The requested node count.
        nodes: usize,
    },
    /// A built topology could reach beyond its own namespaces.
    #[error("isolation check failed in {netns}: {detail}")]
    Isolation {
        /// The namespace where the check failed.
        netns: String,
        /// What was found.
        detail: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
