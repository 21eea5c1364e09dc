//! [`EbpfDataplane`]: the [`Dataplane`] that programs Skiff's kernel maps.
//!
//! Start-up adopts what an earlier run pinned (maps and links under
//! `<pin_root>/<node>/`), so restarting the proxy changes nothing in the
//! datapath: established flows keep their backends. Each sync plans the
//! difference ([`super::plan`]) and applies it in the dangling-id-free order.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{SchedClassifier, TcAttachType, tc};
use skiff_ebpf_common::NodeConfig;

use super::EbpfError;
use super::loader::{Loaded, PROG_TC};
use super::maps::ServiceMaps;
use super::plan::{Op, Planner};
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{DesiredState, ServicePortKey};

/// Where pinned state lives by default (bpffs).
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/skiff";

/// Removes a node's pin directory (`<pin root>/<node>`: its pinned maps
/// and links), then the pin root itself if no other node's pins are left
/// in it, so a cleaned-up machine keeps no empty directory on bpffs.
/// Returns whether the node's directory existed.
///
/// # Errors
/// Removing the node's directory failed (other than it being absent).
pub fn remove_pins(pin_dir: &Path) -> std::io::Result<bool> {
    let existed = match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if let Some(root) = pin_dir.parent() {
        // Fails (and is meant to) while other nodes' pins are there, or
        // when the root is the bpffs mount point itself.
        let _ = std::fs::remove_dir(root);
    }
    Ok(existed)
}

/// Plain-data configuration of the eBPF dataplane.
#[derive(Clone, Debug)]
pub struct EbpfConfig {
    /// Names the pin directory `<pin_root>/<node_name>`.
    pub node_name: String,
    pub pin_root: PathBuf,
    /// cgroup v2 directory whose processes get socket-level LB; `None`
    /// leaves socket-LB off (tc then translates ClusterIP packets).
    pub cgroup: Option<PathBuf>,
    /// Node interfaces that get the tc program on ingress and egress.
    pub interfaces: Vec<String>,
    /// Source address for SNAT of NodePort traffic to remote backends.
    pub node_addr: Option<Ipv4Addr>,
}

/// The eBPF dataplane. Not `Sync`: one owner drives it.
pub struct EbpfDataplane {
    // Maps before the object that owns the programs: drop order.
    maps: ServiceMaps,
    loaded: Loaded,
    planner: Planner,
}

fn backend_err(context: &str) -> impl FnOnce(EbpfError) -> DataplaneError + '_ {
    move |e| DataplaneError::Backend {
        dataplane: "ebpf",
        context: context.to_owned(),
        source: Box::new(e),
    }
}

impl EbpfDataplane {
    /// Loads (or adopts) the programs and maps and attaches them.
    pub fn start(config: &EbpfConfig) -> Result<Self, EbpfError> {
        let pin_dir = config.pin_root.join(&config.node_name);
        let mut loaded = Loaded::load(&pin_dir)?;
        let mut maps = ServiceMaps::take(&mut loaded.ebpf)?;
        if let Some(addr) = config.node_addr {
            maps.set_node_config(NodeConfig::new(u32::from_ne_bytes(addr.octets()), 0, 0))?;
        }
        let planner = adopt(&maps);
        tracing::info!(
            pin_dir = %pin_dir.display(),
            adopted_frontends = planner.frontends().len(),
            adopted_backends = planner.backends().len(),
            "eBPF dataplane loaded"
        );
        for iface in &config.interfaces {
            attach_tc(&mut loaded, iface)?;
        }
        if let Some(cg) = &config.cgroup {
            if loaded.socket_lb_pinned() {
                tracing::info!(cgroup = %cg.display(), "socket-LB links adopted from pins");
            } else {
                loaded.attach_socket_lb(cg, true)?;
                tracing::info!(cgroup = %cg.display(), "socket-LB attached");
            }
        }
        Ok(Self {
            maps,
            loaded,
            planner,
        })
    }

    /// The maps (counters, conntrack inspection).
    pub fn maps(&self) -> &ServiceMaps {
        &self.maps
    }

    pub fn pin_dir(&self) -> &Path {
        &self.loaded.pin_dir
    }

    /// Applies planned ops; returns (entries written, entries removed).
    fn apply(&mut self, ops: &[Op]) -> Result<(usize, usize), EbpfError> {
        let (mut written, mut removed) = (0, 0);
        let mut dead = Vec::new();
        for op in ops {
            match op {
                Op::UpsertBackend(b) => {
                    self.maps.upsert_backend(*b)?;
                    written += 1;
                }
                Op::UpsertService {
                    spec,
                    previous_count,
                } => {
                    self.maps.upsert_service(spec, *previous_count)?;
                    written += 1 + spec.backend_ids.len();
                }
                Op::RemoveService { key, count } => {
                    self.maps.remove_service(*key, *count)?;
                    removed += 1 + usize::from(*count);
                }
                Op::RemoveRevNat(id) => {
                    self.maps.remove_rev_nat(*id)?;
                    removed += 1;
                }
                Op::RemoveBackend(id) => dead.push(*id),
            }
        }
        // Their flows are dropped lazily by the datapath; see
        // `ServiceMaps::remove_backend_entries`.
        self.maps.remove_backend_entries(&dead)?;
        removed += dead.len();
        Ok((written, removed))
    }
}

/// The planner for what the maps hold, allocating backend ids above any
/// that conntrack or affinity entries still name.
fn adopt(maps: &ServiceMaps) -> Planner {
    let mut planner = Planner::from_maps(maps.dump_services(), maps.dump_backends());
    planner.allocate_backend_ids_above(maps.max_backend_id_referenced());
    planner
}

fn link_pin(pin_dir: &Path, iface: &str, dir: &str) -> PathBuf {
    pin_dir.join(format!("link_tc_{iface}_{dir}"))
}

fn attach_tc(loaded: &mut Loaded, iface: &str) -> Result<(), EbpfError> {
    let pin_dir = loaded.pin_dir.clone();
    let prog: &mut SchedClassifier = loaded.tc_program()?;
    for (kind, dir) in [
        (TcAttachType::Ingress, "ingress"),
        (TcAttachType::Egress, "egress"),
    ] {
        let path = link_pin(&pin_dir, iface, dir);
        if PinnedLink::from_pin(&path).is_ok() {
            tracing::info!(iface, dir, "tc link adopted from pin");
            continue;
        }
        // Kernels without tcx need a clsact qdisc; it may already exist.
        let _ = tc::qdisc_add_clsact(iface);
        let id = prog
            .attach(iface, kind)
            .map_err(EbpfError::program(PROG_TC))?;
        let link = prog.take_link(id).map_err(EbpfError::program(PROG_TC))?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                fd_link.pin(&path).map_err(|e| EbpfError::Link {
                    name: PROG_TC,
                    detail: e.to_string(),
                })?;
            }
            // A netlink (clsact) attachment cannot be pinned; it lives on
            // the qdisc until removed, which outlives us just the same.
            Err(e) => tracing::debug!(iface, dir, error = %e, "tc link not pinnable"),
        }
        tracing::info!(iface, dir, "tc program attached");
    }
    Ok(())
}

impl Dataplane for EbpfDataplane {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        self.sync_with(desired, None)
    }

    fn sync_changed(
        &mut self,
        desired: &DesiredState,
        changed: &BTreeSet<ServicePortKey>,
    ) -> Result<SyncReport, DataplaneError> {
        self.sync_with(desired, Some(changed))
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.cleanup_all()
    }
}

impl EbpfDataplane {
    /// A sync comparing everything, or only `changed`.
    fn sync_with(
        &mut self,
        desired: &DesiredState,
        changed: Option<&BTreeSet<ServicePortKey>>,
    ) -> Result<SyncReport, DataplaneError> {
        let start = Instant::now();
        // The planner moves to the planned state at once; if applying
        // fails it is rebuilt from the maps below.
        let planned = match changed {
            Some(keys) => self.planner.plan_changed(desired, keys),
            None => self.planner.plan(desired),
        };
        let ops = planned.map_err(|e| DataplaneError::Backend {
            dataplane: "ebpf",
            context: "planning map updates".into(),
            source: Box::new(e),
        })?;
        let services_changed = ops
            .iter()
            .filter(|o| matches!(o, Op::UpsertService { .. } | Op::RemoveService { .. }))
            .count();
        match self.apply(&ops) {
            Ok((objects_written, objects_removed)) => Ok(SyncReport {
                services_changed,
                full: false,
                duration: start.elapsed(),
                objects_written,
                objects_removed,
                // Flows of removed backends end at their next packet.
                flows_flushed: 0,
            }),
            Err(e) => {
                // Trust the maps, not our plan: the next sync diffs against
                // what really got written.
                self.planner = adopt(&self.maps);
                Err(backend_err("applying map updates")(e))
            }
        }
    }

    fn cleanup_all(&mut self) -> Result<(), DataplaneError> {
        let pin_dir = self.loaded.pin_dir.clone();
        // Removing the pins (links and maps) detaches what only the pins
        // held; what this process holds goes when it is dropped.
        if let Err(source) = remove_pins(&pin_dir) {
            return Err(backend_err("removing pins")(EbpfError::PinDir {
                path: pin_dir,
                source,
            }));
        }
        // This process still holds the maps; their flows must not name
        // the backends the next sync writes.
        let mut planner = Planner::new();
        planner.allocate_backend_ids_above(self.maps.max_backend_id_referenced());
        self.planner = planner;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_the_last_node_pins_removes_the_root_too() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("skiff");
        for node in ["n1", "n2"] {
            std::fs::create_dir_all(root.join(node).join("maps")).expect("pins");
        }
        assert!(remove_pins(&root.join("n1")).expect("remove n1"));
        assert!(root.is_dir(), "n2's pins are still there");
        assert!(!remove_pins(&root.join("n1")).expect("again"));
        assert!(remove_pins(&root.join("n2")).expect("remove n2"));
        assert!(!root.exists(), "an empty pin root is removed");
    }
}
