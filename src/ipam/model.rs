//! The IPAM's public data: subnet and reservation specs, leases, filters.
//! These are also the JSON of the HTTP API and of `vpcbox db export`.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::client::ClientKey;

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
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(&*s).map_err(|_| serde::de::Error::custom(format!("'{s}' is not hex")))
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
    /// arriving during flushes (they share the next one): each flush has a
    /// fixed CPU cost, traded against ACK latency (bench/RESULTS-dhcp.md).
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
        s.serialize_u32(crate::ipam::model::secs(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(crate::ipam::model::time(u32::deserialize(d)?))
    }
}
