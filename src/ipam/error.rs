//! The one error enum of the IPAM boundary: lowercase, terse, and specific
//! enough for the DHCP handler (NAK or drop) and the HTTP API (status code).

use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("store {path:?} is locked by another process")]
    Locked { path: PathBuf },
    #[error("store {path:?} is corrupt or not a vpcbox store: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("store schema {found} is newer than supported {supported}")]
    NewerSchema { found: u32, supported: u32 },
    #[error("storage: {0}")]
    Storage(String),
    /// Writes are refused until the store accepts a write again.
    #[error("storage degraded, writes refused: {0}")]
    Degraded(String),
    #[error("unknown subnet '{0}'")]
    UnknownSubnet(String),
    #[error("subnet '{0}' already exists")]
    SubnetExists(String),
    #[error("subnet '{id}' overlaps subnet '{other}'")]
    SubnetOverlap { id: String, other: String },
    #[error("invalid subnet: {0}")]
    InvalidSubnet(String),
    #[error("the relay port holds its cap of {cap} addresses")]
    PortFull { cap: u32 },
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
    #[error("reservation conflict: {0}")]
    ReservationConflict(String),
    #[error("unknown reservation")]
    UnknownReservation,
    #[error("store is not empty (use force to replace it)")]
    NotEmpty,
    #[error("invalid dump: {0}")]
    InvalidDump(String),
    /// The cluster's etcd did not answer (unreachable, timed out): nothing
    /// was written; the same call may succeed once etcd is back.
    #[error("cluster: {0}")]
    Cluster(String),
    /// Another cluster node changed a key this write compared first:
    /// nothing was written; the same call may succeed once the watch has
    /// brought that change in.
    #[error("cluster conflict: {0}")]
    Conflict(String),
}

impl From<sled::Error> for IpamError {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
