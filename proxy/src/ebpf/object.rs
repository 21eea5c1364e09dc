//! The kernel object embedded at build time (see `proxy/build.rs`).

use super::EbpfError;

#[cfg(skiff_ebpf)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/skiff-ebpf.o"
)));
#[cfg(not(skiff_ebpf))]
static OBJECT: Option<&[u8]> = None;

/// The ELF object with Skiff's kernel programs.
///
/// Fails with [`EbpfError::NotBuilt`] when this binary was built without
/// bpf-linker (`SKIFF_EBPF=auto` on a machine without it, or `skip`).
pub fn object() -> Result<&'static [u8], EbpfError> {
    OBJECT.ok_or(EbpfError::NotBuilt)
}

/// Whether the kernel programs were built into this binary.
pub fn available() -> bool {
    OBJECT.is_some()
}
