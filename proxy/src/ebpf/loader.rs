//! Loading the kernel object with its maps pinned under a directory, so that
//! a restarted proxy re-uses the live maps (and established flows keep their
//! conntrack entries) instead of starting empty.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SchedClassifier};
use aya::{Ebpf, EbpfLoader};

use super::{EbpfError, object};

/// The tc program (NodePort / untranslated ClusterIP DNAT, reverse NAT).
pub const PROG_TC: &str = "skiff_tc";

/// The socket-LB programs (cgroup sock_addr hooks).
pub const PROGS_SOCK: [&str; 4] = [
    "skiff_connect4",
    "skiff_sendmsg4",
    "skiff_recvmsg4",
    "skiff_getpeername4",
];

/// A loaded object. Maps declared `pinned` live in `pin_dir`.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
}

impl Loaded {
    /// Loads the embedded object; maps already pinned in `pin_dir` are
    /// re-used, missing ones are created and pinned there.
    pub fn load(pin_dir: &Path) -> Result<Self, EbpfError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| EbpfError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(object::object()?)
            .map_err(|source| EbpfError::Load {
                pin_dir: pin_dir.to_owned(),
                source: Box::new(source),
            })?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// The tc program, loaded into the kernel (not attached).
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier, EbpfError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_TC)
            .ok_or(EbpfError::Missing {
                kind: "program",
                name: PROG_TC,
            })?
            .try_into()
            .map_err(EbpfError::program(PROG_TC))?;
        if prog.fd().is_err() {
            prog.load().map_err(EbpfError::program(PROG_TC))?;
        }
        Ok(prog)
    }
}

impl Loaded {
    /// Loads the socket-LB programs and attaches them to the cgroup v2
    /// directory `cgroup` (every process below it is load-balanced at
    /// connect time). With `pin`, the links are pinned in the pin directory
    /// as `link_<prog>` so they outlive this process; a later start finds
    /// them with [`Self::socket_lb_pinned`] and leaves them in place.
    pub fn attach_socket_lb(&mut self, cgroup: &Path, pin: bool) -> Result<(), EbpfError> {
        let cg = std::fs::File::open(cgroup).map_err(|source| EbpfError::PinDir {
            path: cgroup.to_owned(),
            source,
        })?;
        for name in PROGS_SOCK {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(EbpfError::Missing {
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(EbpfError::program(name))?;
            prog.load().map_err(EbpfError::program(name))?;
            // Kernel ≥ 5.7 attaches through bpf_link_create, which takes no
            // ALLOW_MULTI flag (links always coexist) and rejects one.
            let id = prog
                .attach(&cg, CgroupAttachMode::Single)
                .map_err(EbpfError::program(name))?;
            if pin {
                let link = prog.take_link(id).map_err(EbpfError::program(name))?;
                let fd_link: FdLink =
                    link.try_into()
                        .map_err(|e: aya::programs::links::LinkError| EbpfError::Link {
                            name,
                            detail: e.to_string(),
                        })?;
                let path = self.pin_dir.join(format!("link_{name}"));
                let _ = std::fs::remove_file(&path);
                fd_link.pin(&path).map_err(|e| EbpfError::Link {
                    name,
                    detail: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// Whether socket-LB links pinned by an earlier run are present.
    pub fn socket_lb_pinned(&self) -> bool {
        PROGS_SOCK
            .iter()
            .all(|name| PinnedLink::from_pin(self.pin_dir.join(format!("link_{name}"))).is_ok())
    }
}
