//! The interface every dataplane (eBPF, iptables) implements.

use std::time::Duration;

use crate::iptables::ExecError;
use std::collections::BTreeSet;

use crate::model::{DesiredState, ServicePortKey};

/// A way of making the kernel forward service traffic.
///
/// An implementation remembers what it applied last and, on each
/// [`Dataplane::sync`], applies only the difference to the new desired
/// state (falling back to a full rewrite when it cannot trust what is
/// installed, e.g. on its first sync or after a failed one).
pub trait Dataplane: Send {
    /// Short name for logs and metrics (`"ebpf"`, `"iptables"`).
    fn name(&self) -> &'static str;

    /// Makes the kernel forward exactly `desired`. On error, what is
    /// installed may be partly updated; the next sync repairs it.
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError>;

    /// [`Dataplane::sync`] when the caller knows which service ports may
    /// differ from the last successful sync (every one that does must be
    /// in `changed`): a dataplane may then compare only those. The default
    /// compares everything.
    fn sync_changed(
        &mut self,
        desired: &DesiredState,
        changed: &BTreeSet<ServicePortKey>,
    ) -> Result<SyncReport, DataplaneError> {
        let _ = changed;
        self.sync(desired)
    }

    /// Removes everything this dataplane installed (rules, chains, maps,
    /// programs). Afterwards the next `sync` starts from nothing.
    fn cleanup(&mut self) -> Result<(), DataplaneError>;
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Service ports added, updated or removed since the previous sync.
    pub services_changed: usize,
    /// Whether everything was compared and rewritten as needed rather than
    /// only the changed services.
    pub full: bool,
    /// Wall time of the sync.
    pub duration: Duration,
    /// Kernel objects written: chains (iptables) or map entries (eBPF).
    pub objects_written: usize,
    /// Kernel objects removed: chains (iptables) or map entries (eBPF).
    pub objects_removed: usize,
    /// Stale connection-tracking entries deleted.
    pub flows_flushed: usize,
}

/// Why a dataplane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// An iptables tool failed.
    #[error("iptables dataplane: {context}")]
    Iptables {
        /// What the dataplane was doing.
        context: &'static str,
        /// The tool failure.
        #[source]
        source: ExecError,
    },
    /// A failure inside another dataplane implementation (kernel maps,
    /// program loading, ...), with its own error type.
    #[error("{dataplane} dataplane: {context}")]
    Backend {
        /// [`Dataplane::name`] of the failing dataplane.
        dataplane: &'static str,
        /// What it was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A full resync of the last applied state was asked for before any
    /// state was applied.
    #[error("{dataplane} dataplane: full resync requested before the first sync")]
    NeverSynced {
        /// [`Dataplane::name`] of the dataplane.
        dataplane: &'static str,
    },
}
