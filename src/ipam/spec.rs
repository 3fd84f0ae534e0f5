//! The subnet model: one spec for the config file, the HTTP API, the store
//! and `vpcbox db`, its defaults and its one validation.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::model::{DhcpOption, PoolRange, StaticRoute};

/// The largest subnet the IPAM manages: its in-memory index costs about
/// 5 bytes per address of the CIDR.
pub const MIN_PREFIX_LEN: u8 = 12;
/// The smallest subnet that still has host addresses.
const MAX_PREFIX_LEN: u8 = 30;
/// A lease time when none is given.
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);
/// Shortest lease: clients renew at half of it.
const MIN_LEASE_TIME: Duration = Duration::from_secs(10);
/// Longest lease: expiry times are `u32` seconds, with room to add.
const MAX_LEASE_TIME: Duration = Duration::from_secs(u32::MAX as u64 / 4);

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
    /// A subnet with one pool, [`DEFAULT_LEASE_TIME`] and nothing else set
    /// (T1 and T2 derived from the lease time); set other fields on it.
    pub fn new(id: impl Into<String>, cidr: Ipv4Net, pool: PoolRange) -> Self {
        Self {
            id: id.into(),
            cidr,
            pools: vec![pool],
            exclude: Vec::new(),
            gateway: None,
            dns: Vec::new(),
            domain: None,
            lease_time: DEFAULT_LEASE_TIME,
            renew_time: None,
            rebind_time: None,
            mtu: None,
            routes: Vec::new(),
            options: Vec::new(),
            relays: Vec::new(),
        }
    }

    pub fn with_lease_time(mut self, lease_time: Duration) -> Self {
        self.lease_time = lease_time;
        self
    }

    /// [`SubnetSpec::check`], as the IPAM's error.
    pub fn validate(&self) -> Result<(), IpamError> {
        self.check()
            .map_err(|e| IpamError::InvalidSubnet(format!("{}: {e}", self.id)))
    }

    /// The one set of subnet rules, for the config file, the HTTP API and
    /// `vpcbox db import` alike; the first broken one is returned.
    pub fn check(&self) -> Result<(), SpecError> {
        use SubnetField as F;
        let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.id.is_empty() || !self.id.chars().all(id_char) {
            return Err(SpecError::new(
                F::Id,
                &self.id,
                "must be letters, digits, '-' or '_'",
            ));
        }
        if self.id.len() > 64 {
            return Err(SpecError::new(
                F::Id,
                &self.id,
                "must be at most 64 characters",
            ));
        }
        self.check_cidr()?;
        self.check_pools()?;
        self.check_times()?;
        for (i, x) in self.exclude.iter().enumerate() {
            self.host(F::Exclude(i), *x)?;
        }
        if let Some(gw) = self.gateway {
            self.host(F::Gateway, gw)?;
        }
        if let Some(d) = self.domain.as_deref().filter(|d| !dns_name(d)) {
            return Err(SpecError::new(
                F::Domain,
                d,
                "must be 1 to 253 letters, digits, '.' or '-'",
            ));
        }
        if let Some(mtu) = self.mtu.filter(|m| *m < 68) {
            return Err(SpecError::new(F::Mtu, mtu, "must be between 68 and 65535"));
        }
        for (i, o) in self.options.iter().enumerate() {
            if matches!(o.code, 0 | 255) {
                return Err(SpecError::new(
                    F::OptionCode(i),
                    o.code,
                    "is reserved (pad/end)",
                ));
            }
            if o.data.len() > 255 {
                return Err(SpecError::new(
                    F::OptionHex(i),
                    hex::encode(&o.data),
                    "is longer than 255 bytes",
                ));
            }
        }
        Ok(())
    }

    fn check_cidr(&self) -> Result<(), SpecError> {
        let (cidr, len) = (self.cidr, self.cidr.prefix_len());
        if cidr != cidr.trunc() {
            let why = "has host bits set (use the network address)";
            return Err(SpecError::new(SubnetField::Cidr, cidr, why));
        }
        if len > MAX_PREFIX_LEN {
            let why = "must be /30 or larger to hold hosts";
            return Err(SpecError::new(SubnetField::Cidr, cidr, why));
        }
        if len < MIN_PREFIX_LEN {
            let why = format!("must be /{MIN_PREFIX_LEN} or smaller");
            return Err(SpecError::new(SubnetField::Cidr, cidr, why));
        }
        Ok(())
    }

    fn check_pools(&self) -> Result<(), SpecError> {
        if self.pools.is_empty() {
            return Err(SpecError::new(
                SubnetField::Pools,
                "[]",
                "must list at least one range",
            ));
        }
        for (i, p) in self.pools.iter().enumerate() {
            let field = SubnetField::Pool(i);
            let value = format!("{}-{}", p.start, p.end);
            if p.is_empty() {
                return Err(SpecError::new(field, value, "starts after it ends"));
            }
            if self.is_outside_hosts(p.start) || self.is_outside_hosts(p.end) {
                let why = format!(
                    "must lie inside {}, excluding its network and broadcast addresses",
                    self.cidr
                );
                return Err(SpecError::new(field, value, why));
            }
            if self.pools[..i]
                .iter()
                .any(|q| p.start <= q.end && q.start <= p.end)
            {
                return Err(SpecError::new(field, value, "overlaps another pool"));
            }
        }
        Ok(())
    }

    /// MIN_LEASE_TIME <= lease; 0 < T1 < T2 < lease.
    fn check_times(&self) -> Result<(), SpecError> {
        use SubnetField as F;
        let lease = self.lease_time;
        if lease < MIN_LEASE_TIME {
            let why = format!("must be at least {}", fmt_duration(MIN_LEASE_TIME));
            return Err(SpecError::new(F::LeaseTime, fmt_duration(lease), why));
        }
        if lease > MAX_LEASE_TIME {
            let why = format!("must be at most {}", fmt_duration(MAX_LEASE_TIME));
            return Err(SpecError::new(F::LeaseTime, fmt_duration(lease), why));
        }
        for (field, t) in [
            (F::RenewTime, self.renew_time),
            (F::RebindTime, self.rebind_time),
        ] {
            if let Some(t) = t.filter(|t| t.is_zero()) {
                return Err(SpecError::new(
                    field,
                    fmt_duration(t),
                    "must be longer than 0s",
                ));
            }
        }
        let (t1, t2) = (self.renew_time(), self.rebind_time());
        if !(t1 < t2 && t2 < lease) {
            let given = self.rebind_time.or(self.renew_time);
            let value = given.map(fmt_duration).unwrap_or_default();
            let why = "must satisfy renew_time < rebind_time < lease_time";
            return Err(SpecError::new(F::Times, value, why));
        }
        Ok(())
    }

    /// A host address of the CIDR (not its network or broadcast address).
    fn host(&self, field: SubnetField, ip: Ipv4Addr) -> Result<(), SpecError> {
        if !self.cidr.contains(&ip) {
            return Err(SpecError::new(
                field,
                ip,
                format!("is outside {}", self.cidr),
            ));
        }
        if ip == self.cidr.network() || ip == self.cidr.broadcast() {
            return Err(SpecError::new(
                field,
                ip,
                "is the network or broadcast address",
            ));
        }
        Ok(())
    }

    fn is_outside_hosts(&self, ip: Ipv4Addr) -> bool {
        !self.cidr.contains(&ip) || ip == self.cidr.network() || ip == self.cidr.broadcast()
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
        self.is_outside_hosts(ip) || Some(ip) == self.gateway
    }

    pub fn overlaps(&self, other: &SubnetSpec) -> bool {
        self.cidr.contains(&other.cidr.network()) || other.cidr.contains(&self.cidr.network())
    }
}

/// A subnet field, named as in the config file's `[[subnet]]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetField {
    Id,
    Cidr,
    Pools,
    Pool(usize),
    Exclude(usize),
    Gateway,
    Domain,
    LeaseTime,
    RenewTime,
    RebindTime,
    /// The order renew_time < rebind_time < lease_time.
    Times,
    Mtu,
    OptionCode(usize),
    OptionHex(usize),
}

impl fmt::Display for SubnetField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id => f.write_str("id"),
            Self::Cidr => f.write_str("cidr"),
            Self::Pools => f.write_str("pools"),
            Self::Pool(i) => write!(f, "pools[{i}]"),
            Self::Exclude(i) => write!(f, "exclude[{i}]"),
            Self::Gateway => f.write_str("gateway"),
            Self::Domain => f.write_str("domain"),
            Self::LeaseTime => f.write_str("lease_time"),
            Self::RenewTime | Self::Times => f.write_str("renew_time"),
            Self::RebindTime => f.write_str("rebind_time"),
            Self::Mtu => f.write_str("mtu"),
            Self::OptionCode(i) => write!(f, "options[{i}].code"),
            Self::OptionHex(i) => write!(f, "options[{i}].hex"),
        }
    }
}

/// A broken subnet rule: the field, its value and why, e.g.
/// `pools[1]: '10.0.0.150-10.0.0.160' overlaps another pool`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: '{value}' {reason}")]
pub struct SpecError {
    pub field: SubnetField,
    pub value: String,
    pub reason: String,
}

impl SpecError {
    fn new(field: SubnetField, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Letters, digits, `.` and `-`: a DNS name (domain, hostname).
pub fn dns_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `1h`, `30s`, `1h30m`: as the config file writes durations.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> SubnetSpec {
        let pool = PoolRange {
            start: Ipv4Addr::new(10, 0, 0, 10),
            end: Ipv4Addr::new(10, 0, 0, 20),
        };
        SubnetSpec::new(
            "lab",
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap(),
            pool,
        )
    }

    #[test]
    fn one_set_of_rules_names_the_field() {
        assert_eq!(lab().check(), Ok(()));
        let short = lab().with_lease_time(Duration::from_secs(5));
        assert_eq!(
            short.check().unwrap_err().to_string(),
            "lease_time: '5s' must be at least 10s"
        );
        let mut equal = lab();
        equal.renew_time = Some(Duration::from_secs(600));
        equal.rebind_time = Some(Duration::from_secs(600));
        assert_eq!(equal.check().unwrap_err().field, SubnetField::Times);
        let mut id = lab();
        id.id = "a.b".into();
        assert_eq!(id.check().unwrap_err().field, SubnetField::Id);
        let mut wide = lab();
        wide.cidr = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
        assert_eq!(wide.check().unwrap_err().field, SubnetField::Cidr);
        let mut gw = lab();
        gw.gateway = Some(Ipv4Addr::new(10, 0, 0, 255));
        assert_eq!(
            gw.validate().unwrap_err().to_string(),
            "invalid subnet: lab: gateway: '10.0.0.255' is the network or broadcast address"
        );
    }
}
