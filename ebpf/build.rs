// Emits `bpf_target_arch` so aya-ebpf's arch-specific code compiles both for
// the BPF target and when the crate is checked on the host.
fn main() -> anyhow::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()
}
