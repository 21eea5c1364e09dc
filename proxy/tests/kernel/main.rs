//! Kernel tests of the eBPF dataplane: the real programs, loaded into this
//! kernel, run on crafted packets with `BPF_PROG_TEST_RUN` and attached for
//! real in throwaway network namespaces and cgroups.
//!
//! Root only; run one at a time by `cargo xtask test --kernel`.

mod cross_node;
mod fixtures;
mod harness;
mod packets;
mod restart;
mod socket_lb;
mod sync_loop;
mod tc;
