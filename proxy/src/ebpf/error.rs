use std::path::PathBuf;

/// Errors of the eBPF dataplane.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this skiff binary was built without eBPF programs (bpf-linker was missing at build \
         time); run `cargo xtask setup` and rebuild, or use --dataplane iptables"
    )]
    NotBuilt,
    #[error("loading the eBPF object (pin dir {pin_dir}): {source}")]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("creating pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("link of program {name}: {detail}")]
    Link { name: &'static str, detail: String },
    #[error("service {0} has {1} backends; at most 65535 fit a service entry")]
    TooManyBackends(String, usize),
}

impl EbpfError {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| EbpfError::Map {
            name,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |source| EbpfError::Program {
            name,
            source: Box::new(source),
        }
    }
}
