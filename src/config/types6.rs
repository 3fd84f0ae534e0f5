//! The validated DHCPv6 settings and subnets (`[dhcp6]`, `[[subnet6]]`).

use std::net::SocketAddr;
use std::time::Duration;

use super::parse::Rate;

#[derive(Debug, Clone, PartialEq)]
pub struct Dhcp6Config {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Directly attached clients on these (ff02::1:2 joined on each).
    pub interfaces: Vec<String>,
    pub per_client_rate: Rate,
    pub per_client_burst: u32,
    /// Answer Solicit + Rapid Commit with a committed Reply.
    pub rapid_commit: bool,
    /// Sent in Advertise (option 82): how long a client waits between Solicits at most.
    pub sol_max_rt: Duration,
    /// Sent in Information-Request replies (option 83).
    pub inf_max_rt: Duration,
}

/// A `[[subnet6]]` is the IPAM's subnet spec (as a `[[subnet]]` is), so
/// the subnets the API adds are served as the configured ones are.
pub use crate::ipam::{PdPoolSpec as PdPool6, Range6 as Pool6, Subnet6Spec as Subnet6Config};
