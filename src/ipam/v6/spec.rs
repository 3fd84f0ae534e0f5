//! A DHCPv6 subnet as the IPAM stores and serves it: the link's prefix, the
//! address pools, the delegated-prefix pools and the lifetimes. Built from
//! a validated `[[subnet6]]` (the config checks it); stored as JSON.

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

/// An address range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range6 {
    pub start: Ipv6Addr,
    pub end: Ipv6Addr,
}

/// `prefix` cut into delegated prefixes of `delegated_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdPoolSpec {
    pub prefix: Ipv6Net,
    pub delegated_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet6Spec {
    pub id: String,
    /// The link's prefix: an IA_NA hint outside it is NotOnLink.
    pub prefix: Ipv6Net,
    #[serde(default)]
    pub pools: Vec<Range6>,
    #[serde(default)]
    pub pd_pools: Vec<PdPoolSpec>,
    #[serde(with = "humantime_serde")]
    pub preferred_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub valid_lifetime: Duration,
}

impl Subnet6Spec {
    /// Whether two subnets share an address or a delegated prefix.
    pub fn overlaps(&self, o: &Subnet6Spec) -> bool {
        let nets = |a: &Ipv6Net, b: &Ipv6Net| a.contains(b) || b.contains(a);
        let pd = |s: &Subnet6Spec| s.pd_pools.iter().map(|p| p.prefix).collect::<Vec<_>>();
        nets(&self.prefix, &o.prefix)
            || pd(self)
                .iter()
                .any(|a| nets(a, &o.prefix) || pd(o).iter().any(|b| nets(a, b)))
            || pd(o).iter().any(|b| nets(b, &self.prefix))
    }

    /// Whether `net` belongs here: an address (a /128) on the link, or a
    /// prefix inside one of the delegated-prefix pools.
    pub fn owns(&self, net: Ipv6Net) -> bool {
        if net.prefix_len() == 128 {
            return self.prefix.contains(&net.addr());
        }
        self.pd_pools.iter().any(|p| p.prefix.contains(&net))
    }

    /// The valid lifetime in whole seconds.
    pub fn valid_secs(&self) -> u32 {
        u32::try_from(self.valid_lifetime.as_secs()).unwrap_or(u32::MAX)
    }
}
