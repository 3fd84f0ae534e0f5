//! The validated DHCPv6 settings and subnets (`[dhcp6]`, `[[subnet6]]`).

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv6Net;

use super::parse::Rate;
use crate::ipam::{PdPoolSpec, Range6, Subnet6Spec};

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

/// A delegated-prefix pool: `prefix` cut into prefixes of `delegated_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdPool6 {
    pub prefix: Ipv6Net,
    pub delegated_len: u8,
}

/// An address range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool6 {
    pub start: Ipv6Addr,
    pub end: Ipv6Addr,
}

impl Pool6 {
    /// Whether `start..=end` shares an address with this range.
    pub fn overlaps(&self, start: Ipv6Addr, end: Ipv6Addr) -> bool {
        self.start <= end && start <= self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet6Config {
    pub id: String,
    /// The link's prefix: addresses outside it are NotOnLink.
    pub prefix: Ipv6Net,
    pub pools: Vec<Pool6>,
    pub pd_pools: Vec<PdPool6>,
    /// Option 23.
    pub dns: Vec<Ipv6Addr>,
    /// Option 24, one search domain.
    pub domain: Option<String>,
    pub preferred_lifetime: Duration,
    pub valid_lifetime: Duration,
    /// Link-addresses of the relays whose Relay-Forw this subnet trusts.
    pub relays: Vec<Ipv6Addr>,
}

impl Subnet6Config {
    /// Subnet `id` on `prefix` with the shipped lifetimes (30m preferred,
    /// 1h valid) and nothing else: no pools, options or trusted relays.
    pub fn new(id: &str, prefix: Ipv6Net) -> Self {
        Self {
            id: id.to_owned(),
            prefix,
            pools: Vec::new(),
            pd_pools: Vec::new(),
            dns: Vec::new(),
            domain: None,
            preferred_lifetime: Duration::from_secs(30 * 60),
            valid_lifetime: Duration::from_secs(60 * 60),
            relays: Vec::new(),
        }
    }

    /// What the IPAM stores of this subnet (pools and lifetimes).
    pub fn spec(&self) -> Subnet6Spec {
        Subnet6Spec {
            id: self.id.clone(),
            prefix: self.prefix,
            pools: self
                .pools
                .iter()
                .map(|p| Range6 {
                    start: p.start,
                    end: p.end,
                })
                .collect(),
            pd_pools: self
                .pd_pools
                .iter()
                .map(|p| PdPoolSpec {
                    prefix: p.prefix,
                    delegated_len: p.delegated_len,
                })
                .collect(),
            preferred_lifetime: self.preferred_lifetime,
            valid_lifetime: self.valid_lifetime,
        }
    }
}
