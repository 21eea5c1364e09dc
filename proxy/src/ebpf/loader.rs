//! Loading the kernel object with its maps pinned under a directory, so that
//! a restarted proxy re-uses the live maps (and established flows keep their
//! conntrack entries) instead of starting empty.

use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

use super::{EbpfError, object};

/// The tc program (NodePort / untranslated ClusterIP DNAT, reverse NAT).
pub const PROG_TC: &str = "skiff_tc";

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
