//! The cases, one file each; every case takes the dataplane to run on.

mod agent_restart;
mod clusterip;
mod dns;
mod node_loss;
mod nodeport;
mod rolling_update;
mod scaling;
mod tries;

pub use agent_restart::agent_restart_keeps_connections;
pub use clusterip::clusterip_round_robin;
pub use dns::dns_from_a_pod;
pub use node_loss::node_loss_recreates_pods;
pub use nodeport::nodeport_from_outside;
pub use rolling_update::rolling_update_under_load;
pub use scaling::scaling_changes_backends;
pub use tries::printed_tries_work;
