//! The subnet model: one spec for the config file, the HTTP API, the store
//! and `vpcbox db`, its defaults and its one validation.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::model::{DhcpOption, PoolRange, StaticRoute};

/// The largest subnet the IPAM manages: its in-memory index costs about
/// 5 bytes per address of the CIDR (5 MiB for a /12).
pub const MIN_PREFIX_LEN: u8 = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub id: String,
    pub cidr: Ipv4Net,
    pub pools: Vec<PoolRange>,
    #[serde(default)]
    pub exclude: Vec<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    #[serde(with = "humantime_serde")]
    pub lease_time: Duration,
    /// T1; defaults to half the lease time.
    #[serde(default, with = "humantime_serde")]
    pub renew_time: Option<Duration>,
    /// T2; defaults to 7/8 of the lease time.
    #[serde(default, with = "humantime_serde")]
    pub rebind_time: Option<Duration>,
    pub mtu: Option<u16>,
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub options: Vec<DhcpOption>,
    /// Relay addresses (giaddr) that select this subnet, besides any giaddr
    /// inside `cidr`.
    #[serde(default)]
    pub relays: Vec<Ipv4Addr>,
}

impl SubnetSpec {
    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |m: String| Err(IpamError::InvalidSubnet(format!("{}: {m}", self.id)));
        if self.id.is_empty() || self.id.len() > 64 || self.id.contains('\0') {
            return bad("id must be 1 to 64 characters".into());
        }
        if self.cidr.prefix_len() < MIN_PREFIX_LEN || self.cidr.prefix_len() > 30 {
            return bad(format!(
                "cidr '{}' must be /{MIN_PREFIX_LEN} to /30",
                self.cidr
            ));
        }
        if self.cidr != self.cidr.trunc() {
            return bad(format!("cidr '{}' has host bits set", self.cidr));
        }
        if self.lease_time.is_zero() || self.lease_time.as_secs() > u64::from(u32::MAX / 4) {
            return bad("lease_time must be at least 1s and at most ~30 years".into());
        }
        let t1 = self.renew_time();
        let t2 = self.rebind_time();
        if t1.is_zero() || t1 > t2 || t2 > self.lease_time {
            return bad("renew_time <= rebind_time <= lease_time must hold".into());
        }
        if self.pools.is_empty() {
            return bad("at least one pool is required".into());
        }
        let (net, bcast) = (self.cidr.network(), self.cidr.broadcast());
        for (i, p) in self.pools.iter().enumerate() {
            if p.is_empty() {
                return bad(format!("pool '{}-{}' is empty", p.start, p.end));
            }
            if !self.cidr.contains(&p.start) || !self.cidr.contains(&p.end) {
                return bad(format!(
                    "pool '{}-{}' is not inside '{}'",
                    p.start, p.end, self.cidr
                ));
            }
            if p.contains(net) || p.contains(bcast) {
                return bad(format!(
                    "pool '{}-{}' includes the network or broadcast address",
                    p.start, p.end
                ));
            }
            if let Some(q) = self.pools[..i]
                .iter()
                .find(|q| q.start <= p.end && p.start <= q.end)
            {
                return bad(format!(
                    "pool '{}-{}' overlaps '{}-{}'",
                    p.start, p.end, q.start, q.end
                ));
            }
        }
        if let Some(gw) = self.gateway {
            if !self.cidr.contains(&gw) || gw == net || gw == bcast {
                return bad(format!("gateway '{gw}' is not a host of '{}'", self.cidr));
            }
        }
        if let Some(x) = self.exclude.iter().find(|x| !self.cidr.contains(*x)) {
            return bad(format!("exclude '{x}' is not inside '{}'", self.cidr));
        }
        Ok(())
    }

    pub fn renew_time(&self) -> Duration {
        self.renew_time.unwrap_or(self.lease_time / 2)
    }

    pub fn rebind_time(&self) -> Duration {
        self.rebind_time.unwrap_or(self.lease_time * 7 / 8)
    }

    /// Whether dynamic allocation may hand out `ip` (reservations aside).
    pub fn is_dynamic(&self, ip: Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(ip))
            && !self.is_unassignable(ip)
            && !self.exclude.contains(&ip)
    }

    /// Network, broadcast, gateway, or outside the CIDR.
    pub fn is_unassignable(&self, ip: Ipv4Addr) -> bool {
        !self.cidr.contains(&ip)
            || ip == self.cidr.network()
            || ip == self.cidr.broadcast()
            || Some(ip) == self.gateway
    }

    pub fn overlaps(&self, other: &SubnetSpec) -> bool {
        self.cidr.contains(&other.cidr.network()) || other.cidr.contains(&self.cidr.network())
    }
}
