//! The agent's error type.

use std::io;
use std::path::PathBuf;

/// Why an agent operation failed. Every variant names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An external command (`ip`, `iptables`, `unshare`) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line as run.
        command: String,
        /// Exit status or signal.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An external command could not be started.
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line.
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
    /// A system call (through nix) failed.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// The persisted state could not be read or written.
    #[error("agent state {path}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The parse or format error.
        source: serde_json::Error,
    },
    /// The Kubernetes API rejected or failed a request.
    #[error("API request failed: {what}")]
    Api {
        /// What was being done.
        what: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// Pod IP allocation failed.
    #[error("pod IP allocation for {owner}")]
    Ipam {
        /// The pod uid.
        owner: String,
        /// The allocator error.
        source: skiff_ipam::IpamError,
    },
    /// Configuration is unusable (e.g. no cgroup v2 mount, bad CIDR).
    #[error("configuration: {0}")]
    Config(String),
    /// The pod spec cannot be run by this agent; the message is shown to
    /// the user in the container's waiting state.
    #[error("{reason}: {message}")]
    PodSpec {
        /// Kubernetes-style reason (`CreateContainerError`, `CreateContainerConfigError`).
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// Something asked for (a pod's logs, a container) does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// A sandbox operation could not finish within its time limit.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result with [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    /// Wraps an io error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a nix error with what was being done.
    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Self::Sys {
            what: what.into(),
            source,
        }
    }

    /// Wraps a kube error with what was being done.
    pub(crate) fn api(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// True for failures worth retrying: no answer from the API server
    /// (transport errors) or a 5xx/429 from it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { source, .. } => match api_status(source) {
                None => true,
                Some(code) => code >= 500 || code == 429,
            },
            _ => false,
        }
    }

    /// True for an API "404 Not Found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { source, .. } if api_status(source) == Some(404))
    }
}

/// The HTTP status code of a kube API error response, if it was one.
pub(crate) fn api_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
