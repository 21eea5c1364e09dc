//! The end-to-end suite: every case brings up a real cluster with
//! `skiff up` (3 node namespaces, API server, agents with their proxies and
//! DNS, the examples), exercises it from pods and from the outside
//! namespace as a user would, and checks that Ctrl-C leaves nothing behind.
//! Each case runs once per dataplane. Root only: run by
//! `cargo xtask test --e2e` (tests named `e2e_*`, one at a time).

mod cases;
mod cluster;
mod harness;
mod traffic;
mod upstream;

/// Declares every case once per dataplane: `e2e_ebpf::<case>` and
/// `e2e_iptables::<case>`.
macro_rules! on_both_dataplanes {
    ($($case:ident),* $(,)?) => {
        mod e2e_ebpf {
            $(
                #[test]
                #[ignore = "needs root: end-to-end, run by cargo xtask test --e2e"]
                fn $case() {
                    crate::cases::$case(crate::harness::Dataplane::Ebpf);
                }
            )*
        }
        mod e2e_iptables {
            $(
                #[test]
                #[ignore = "needs root: end-to-end, run by cargo xtask test --e2e"]
                fn $case() {
                    crate::cases::$case(crate::harness::Dataplane::Iptables);
                }
            )*
        }
    };
}

on_both_dataplanes!(
    clusterip_round_robin,
    nodeport_from_outside,
    dns_from_a_pod,
    scaling_changes_backends,
    rolling_update_under_load,
    node_loss_recreates_pods,
    agent_restart_keeps_connections,
    printed_tries_work,
);
