//! A DHCPv6 subnet as the config, the API and the store know it: the link's
//! prefix, the address pools, the delegated-prefix pools, the lifetimes,
//! the options and the trusted relays. Stored as JSON; the API checks it
//! with [`Subnet6Spec::check`] (the config checks it as it parses).

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::ipam::error::IpamError;
use crate::ipam::spec::{dns_name, fmt_duration};

/// Longest lifetime: 0xffffffff means "infinite" on the wire, so stay far below it.
pub const MAX_LIFETIME6: Duration = Duration::from_secs(u32::MAX as u64 / 4);

/// An address range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range6 {
    pub start: Ipv6Addr,
    pub end: Ipv6Addr,
}

impl Range6 {
    /// Whether `start..=end` shares an address with this range.
    pub fn overlaps(&self, start: Ipv6Addr, end: Ipv6Addr) -> bool {
        self.start <= end && start <= self.end
    }
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
    /// Option 23.
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    /// Option 24, one search domain.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default = "preferred", with = "humantime_serde")]
    pub preferred_lifetime: Duration,
    #[serde(default = "valid", with = "humantime_serde")]
    pub valid_lifetime: Duration,
    /// Link-addresses of the relays whose Relay-Forw this subnet trusts.
    #[serde(default)]
    pub relays: Vec<Ipv6Addr>,
}

fn preferred() -> Duration {
    Duration::from_secs(30 * 60)
}

fn valid() -> Duration {
    Duration::from_secs(60 * 60)
}

impl Subnet6Spec {
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
            preferred_lifetime: preferred(),
            valid_lifetime: valid(),
            relays: Vec::new(),
        }
    }

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

    /// [`Subnet6Spec::check`], as the IPAM's error.
    pub fn validate(&self) -> Result<(), IpamError> {
        self.check()
            .map_err(|e| IpamError::InvalidSubnet(format!("{}: {e}", self.id)))
    }

    /// The one set of subnet rules, for the config's `[[subnet6]]`, the
    /// API and imports: the first broken one, naming its field.
    pub fn check(&self) -> Result<(), Spec6Error> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(Spec6Error::new(field, value, why))
        };
        let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(id_char) {
            return bad(
                "id",
                &self.id,
                "must be 1 to 64 letters, digits, '-' or '_'",
            );
        }
        let prefix = self.prefix;
        if prefix.trunc() != prefix {
            return bad(
                "prefix",
                &prefix,
                "has host bits set (use the network address)",
            );
        }
        for (i, p) in self.pools.iter().enumerate() {
            let (field, value) = (format!("pools[{i}]"), format!("{}-{}", p.start, p.end));
            if p.start > p.end {
                return bad(&field, &value, "starts after it ends");
            }
            if !prefix.contains(&p.start) || !prefix.contains(&p.end) {
                return bad(&field, &value, &format!("must lie inside {prefix}"));
            }
            if self.pools[..i].iter().any(|q| q.overlaps(p.start, p.end)) {
                return bad(&field, &value, "overlaps another pool");
            }
        }
        for (i, p) in self.pd_pools.iter().enumerate() {
            self.check_pd(i, p)?;
        }
        for (field, d) in [
            ("preferred_lifetime", self.preferred_lifetime),
            ("valid_lifetime", self.valid_lifetime),
        ] {
            if d.is_zero() || d > MAX_LIFETIME6 {
                let why = format!("must be between 1s and {}", fmt_duration(MAX_LIFETIME6));
                return bad(field, &fmt_duration(d), &why);
            }
        }
        if self.preferred_lifetime > self.valid_lifetime {
            let value = fmt_duration(self.preferred_lifetime);
            return bad(
                "preferred_lifetime",
                &value,
                "must not exceed valid_lifetime",
            );
        }
        if let Some(d) = self.domain.as_deref().filter(|d| !dns_name(d)) {
            return bad("domain", &d, "is not a DNS name");
        }
        Ok(())
    }

    fn check_pd(&self, i: usize, p: &PdPoolSpec) -> Result<(), Spec6Error> {
        let field = format!("pd_pools[{i}]");
        let len = p.prefix.prefix_len();
        if p.prefix.trunc() != p.prefix {
            let why = "has host bits set (use the network address)";
            return Err(Spec6Error::new(&format!("{field}.prefix"), &p.prefix, why));
        }
        if p.delegated_len <= len || p.delegated_len > 64 {
            let why = format!("must be above {len} and at most 64");
            let field = format!("{field}.delegated_len");
            return Err(Spec6Error::new(&field, &p.delegated_len, &why));
        }
        let (lo, hi) = (p.prefix.network(), p.prefix.broadcast());
        let clash = if self.pools.iter().any(|a| a.overlaps(lo, hi)) {
            Some("overlaps an address pool")
        } else if self.pd_pools[..i]
            .iter()
            .any(|q| q.prefix.contains(&p.prefix) || p.prefix.contains(&q.prefix))
        {
            Some("overlaps another pd pool")
        } else {
            None
        };
        match clash {
            Some(why) => Err(Spec6Error::new(&format!("{field}.prefix"), &p.prefix, why)),
            None => Ok(()),
        }
    }
}

/// A broken subnet rule: the field (`pools[1]`, `pd_pools[0].prefix`), its
/// value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: '{value}' {reason}")]
pub struct Spec6Error {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl Spec6Error {
    fn new(field: &str, value: &dyn std::fmt::Display, reason: &str) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab6() -> Subnet6Spec {
        Subnet6Spec {
            pools: vec![Range6 {
                start: "fd00:77::100".parse().unwrap(),
                end: "fd00:77::1ff".parse().unwrap(),
            }],
            pd_pools: vec![PdPoolSpec {
                prefix: "fd00:78::/48".parse().unwrap(),
                delegated_len: 56,
            }],
            ..Subnet6Spec::new("lab6", "fd00:77::/64".parse().unwrap())
        }
    }

    #[test]
    fn the_rules_name_the_field_and_quote_the_value() {
        assert_eq!(lab6().check(), Ok(()));
        let broken = |f: &dyn Fn(&mut Subnet6Spec)| {
            let mut s = lab6();
            f(&mut s);
            s.check().unwrap_err().to_string()
        };
        assert_eq!(
            broken(&|s| s.pools[0].end = "fd00:79::1".parse().unwrap()),
            "pools[0]: 'fd00:77::100-fd00:79::1' must lie inside fd00:77::/64"
        );
        assert_eq!(
            broken(&|s| s.pd_pools[0].delegated_len = 48),
            "pd_pools[0].delegated_len: '48' must be above 48 and at most 64"
        );
        assert_eq!(
            broken(&|s| s.pd_pools[0].delegated_len = 65),
            "pd_pools[0].delegated_len: '65' must be above 48 and at most 64"
        );
        assert_eq!(
            broken(&|s| s.pd_pools[0].prefix = "fd00:77::/52".parse().unwrap()),
            "pd_pools[0].prefix: 'fd00:77::/52' overlaps an address pool"
        );
        assert_eq!(
            broken(&|s| s.prefix = "fd00:77::1/64".parse().unwrap()),
            "prefix: 'fd00:77::1/64' has host bits set (use the network address)"
        );
        assert_eq!(
            broken(&|s| s.preferred_lifetime = Duration::from_secs(7200)),
            "preferred_lifetime: '2h' must not exceed valid_lifetime"
        );
        assert!(broken(&|s| s.id = "a/b".into()).starts_with("id: 'a/b'"));
        assert!(broken(&|s| s.valid_lifetime = Duration::ZERO).starts_with("valid_lifetime"));
    }
}
