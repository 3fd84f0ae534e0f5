//! TEMPORARY: the IPAM's public types, as announced, until branch `ipam` lands.
#![allow(dead_code)]
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use crate::client::ClientKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub dest: Ipv4Net,
    pub via: Ipv4Addr,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOption {
    pub code: u8,
    pub data: Vec<u8>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    pub id: String,
    pub cidr: Ipv4Net,
    pub pools: Vec<PoolRange>,
    pub exclude: Vec<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: Duration,
    pub renew_time: Option<Duration>,
    pub rebind_time: Option<Duration>,
    pub mtu: Option<u16>,
    pub routes: Vec<StaticRoute>,
    pub options: Vec<DhcpOption>,
    pub relays: Vec<Ipv4Addr>,
}
impl SubnetSpec {
    pub fn renew_time(&self) -> Duration {
        self.renew_time.unwrap_or(self.lease_time / 2)
    }
    pub fn rebind_time(&self) -> Duration {
        self.rebind_time.unwrap_or(self.lease_time * 7 / 8)
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Offered,
    Bound,
    Released,
    Expired,
    Declined,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub subnet: String,
    pub client: ClientKey,
    pub state: LeaseState,
    pub expires_at: SystemTime,
    pub updated_at: SystemTime,
    pub hostname: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("unknown subnet '{0}'")]
    UnknownSubnet(String),
    #[error("pool of subnet '{subnet}' is exhausted")]
    PoolExhausted { subnet: String },
    #[error("{ip} is not an assignable address of subnet '{subnet}'")]
    NotInSubnet { ip: Ipv4Addr, subnet: String },
    #[error("{ip} is in use by another client")]
    AddressTaken { ip: Ipv4Addr },
    #[error("{ip} is not leased to this client")]
    NotOwner { ip: Ipv4Addr },
    #[error("no lease")]
    NoLease,
    #[error("{ip} is reserved for another client")]
    Reserved { ip: Ipv4Addr },
    #[error("ipam is shutting down")]
    ShuttingDown,
}
