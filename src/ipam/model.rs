//! The IPAM's public data: subnet and reservation specs, leases, filters.
//! These are also the JSON of the HTTP API and of `vpcbox db export`.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::IpamError;
use crate::client::ClientKey;

/// The largest subnet the IPAM manages: its in-memory index costs about
/// 5 bytes per address of the CIDR (5 MiB for a /12).
pub const MIN_PREFIX_LEN: u8 = 12;

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl PoolRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.end)).saturating_sub(u64::from(u32::from(self.start))) + 1
    }
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

/// A classless static route (DHCP option 121).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    pub dest: Ipv4Net,
    pub via: Ipv4Addr,
}

/// A raw DHCP option, serialised as `{"code":150,"hex":"0a000001"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpOption {
    pub code: u8,
    #[serde(rename = "hex", with = "hex_bytes")]
    pub data: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = v.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() % 2 != 0 || !s.is_ascii() {
            return Err(serde::de::Error::custom(format!("'{s}' is not hex")));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not hex")))
    }
}

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

/// The relay port a DHCP client asks through: its bytes (the relay's
/// giaddr, then option 82's circuit-id) and the most
/// addresses (bound leases and live offers) it may hold; `cap` 0: no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port<'a> {
    pub id: &'a [u8],
    pub cap: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationSpec {
    pub subnet: String,
    pub client: ClientKey,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Offered,
    Bound,
    Released,
    Expired,
    Declined,
}

impl LeaseState {
    pub const ALL: [LeaseState; 5] = [
        Self::Offered,
        Self::Bound,
        Self::Released,
        Self::Expired,
        Self::Declined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Bound => "bound",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Declined => "declined",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub subnet: String,
    pub client: ClientKey,
    pub state: LeaseState,
    /// For released leases: when released; for declined ones: when the
    /// quarantine ends.
    #[serde(with = "unix_secs")]
    pub expires_at: SystemTime,
    #[serde(with = "unix_secs")]
    pub updated_at: SystemTime,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseFilter {
    pub subnet: Option<String>,
    pub state: Option<LeaseState>,
    pub client: Option<ClientKey>,
    pub limit: Option<usize>,
}

impl LeaseFilter {
    pub fn matches(&self, l: &Lease) -> bool {
        self.subnet.as_ref().is_none_or(|s| *s == l.subnet)
            && self.state.is_none_or(|s| s == l.state)
            && self.client.as_ref().is_none_or(|c| *c == l.client)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub subnet: String,
    pub size: u64,
    /// Offered + bound + declined + reserved.
    pub used: u64,
    pub by_state: Vec<(LeaseState, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpamOptions {
    /// sled page cache, bytes.
    pub cache_capacity: u64,
    /// Renewals of leases younger than this fraction of the lease time are
    /// answered from memory without a write.
    pub cache_threshold: f64,
    /// How long an offered address is held for its client.
    pub offer_hold: Duration,
    /// How long a declined address is kept out of the pool.
    pub decline_quarantine: Duration,
    /// Shortest time between two group-commit flushes while writes keep
    /// arriving during flushes (they share the next one). 20 ms: at 6,000
    /// DORA/s each flush costs the committer and sled's I/O threads a
    /// fixed ~0.3 ms of CPU (sled wakes all seven of its I/O threads per
    /// write), so 10 ms took ~5 µs more CPU per DORA; a DHCPACK under that
    /// load then waits ~13 ms instead of ~7 (bench/RESULTS-dhcp.md).
    pub commit_interval: Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 32 << 20,
            cache_threshold: 0.25,
            offer_hold: Duration::from_secs(30),
            decline_quarantine: Duration::from_secs(600),
            commit_interval: Duration::from_millis(20),
        }
    }
}

/// Seconds since the Unix epoch, saturating into `u32` (good until 2106).
pub fn secs(t: SystemTime) -> u32 {
    let s = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(s).unwrap_or(u32::MAX)
}

pub fn time(secs: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(secs))
}

pub(crate) mod unix_secs {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(super::secs(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(super::time(u32::deserialize(d)?))
    }
}
