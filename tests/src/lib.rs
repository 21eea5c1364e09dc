//! Test topology library: throwaway network namespaces, veths and
//! multi-node underlay clusters on this one machine, for the kernel,
//! dataplane, agent and end-to-end tests. Everything needs root except the
//! pure parts (name generation and parsing, address planning, isolation
//! decisions), which are unit-tested unprivileged.
//!
//! Layout:
//! - [`netns`]: the [`Netns`] guard (create, exec, spawn, `run_in`, drop =
//!   stop our processes and delete) and link/address/route helpers;
//! - [`topology`]: [`Cluster`] — underlay bridge, N nodes, an outside client;
//! - [`leftovers`]: list and sweep `skiff-` namespaces of dead processes;
//! - `isolation`: the check that a cluster has no way out of its namespaces;
//! - `command`, `spawned`: running `ip`, and tracking children by pidfd.
//!
//! ```no_run
//! use skiff_tests::{Cluster, ClusterSpec};
//! use std::net::{SocketAddr, TcpListener, TcpStream};
//!
//! let cluster = Cluster::build(ClusterSpec { nodes: 2, ..Default::default() }).expect("cluster");
//! let (a, b) = (&cluster.nodes()[0], &cluster.nodes()[1]);
//! let addr = SocketAddr::from((a.addr(), 8080));
//! let listener = a.netns().run_in(|| TcpListener::bind(addr)).expect("setns").expect("bind");
//! let stream = b.netns().run_in(|| TcpStream::connect(addr)).expect("setns").expect("connect");
//! # drop((listener, stream));
//! // Dropping `cluster` deletes every namespace, also when the test panics.
//! ```

mod command;
pub mod error;
mod isolation;
pub mod leftovers;
pub mod netns;
mod spawned;
pub mod topology;

pub use error::{Error, Result};
pub use netns::{
    Netns, enter_netns_on_spawn, link_veth, netns_name, run_in_netns, validate_ifname,
};
pub use topology::{Cluster, ClusterSpec, Node};
