//! Choosing the dataplane at start: `--dataplane auto|ebpf|iptables`.
//!
//! `auto` tries the eBPF dataplane for real (load programs, pin maps,
//! attach) — the most honest probe of kernel support — and falls back to
//! iptables with one warning that says why.

use std::fmt;

use crate::dataplane::{Dataplane, DataplaneError};
use crate::ebpf::{EbpfConfig, EbpfDataplane, EbpfError};
use crate::iptables::IptablesDataplane;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataplaneKind {
    Auto,
    Ebpf,
    Iptables,
}

impl fmt::Display for DataplaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataplaneKind::Auto => "auto",
            DataplaneKind::Ebpf => "ebpf",
            DataplaneKind::Iptables => "iptables",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("eBPF dataplane: {0}")]
    Ebpf(#[from] EbpfError),
    #[error("iptables dataplane: {0}")]
    Iptables(#[from] DataplaneError),
}

/// The dataplane in use and a one-line description for logs and status.
pub struct Chosen {
    pub dataplane: Box<dyn Dataplane>,
    pub description: String,
}

/// Builds the dataplane `kind` asks for; see the module docs for `auto`.
pub fn choose(kind: DataplaneKind, ebpf: &EbpfConfig) -> Result<Chosen, SelectError> {
    match kind {
        DataplaneKind::Ebpf => Ok(ebpf_chosen(EbpfDataplane::start(ebpf)?, ebpf)),
        DataplaneKind::Iptables => iptables_chosen(),
        DataplaneKind::Auto => match EbpfDataplane::start(ebpf) {
            Ok(dp) => Ok(ebpf_chosen(dp, ebpf)),
            Err(e) => {
                tracing::warn!(
                    reason = %e,
                    "eBPF dataplane unavailable; falling back to iptables"
                );
                iptables_chosen()
            }
        },
    }
}

fn ebpf_chosen(dp: EbpfDataplane, cfg: &EbpfConfig) -> Chosen {
    let description = format!(
        "ebpf (socket-LB {}, tc on {})",
        cfg.cgroup
            .as_ref()
            .map_or_else(|| "off".to_owned(), |c| format!("on {}", c.display())),
        if cfg.interfaces.is_empty() {
            "no interfaces".to_owned()
        } else {
            cfg.interfaces.join(",")
        }
    );
    Chosen {
        dataplane: Box::new(dp),
        description,
    }
}

fn iptables_chosen() -> Result<Chosen, SelectError> {
    let mut dp = IptablesDataplane::new();
    let backend = dp.backend()?;
    Ok(Chosen {
        dataplane: Box::new(dp),
        description: format!("iptables ({backend})"),
    })
}
