//! The IPAM: subnets, pools, reservations and leases, durably in sled.
//!
//! Reads are answered from an in-memory index rebuilt from the store at
//! open; writes are planned against it under one std mutex, queued, and
//! made durable by the group committer before the caller is answered, so
//! DHCP never ACKs a lease that is not on disk. A failed write rolls the
//! index back to the store and refuses writes until a probe succeeds.
//! DHCPv6 bindings (`v6/`: IA_NA addresses, IA_PD prefixes) live in the
//! same store, index lock, group commit and reaper.

mod admin;
mod commit;
mod dump;
mod error;
mod flusher;
mod handle;
mod hooks;
mod index;
mod isolation;
mod load;
mod maps;
mod model;
mod open;
mod ops;
mod owned;
mod page;
mod plan;
mod reaper;
mod record;
mod remote;
mod spec;
mod state;
mod store;
mod v6;
mod write;

#[cfg(test)]
pub(crate) mod tests;

pub use dump::Dump;
pub use error::IpamError;
pub use handle::Ipam;
pub use hooks::{
    ClusterHooks, ClusterNodeView, ClusterReads, Queued, Remote, RemoteLease, RemoteLease6,
};
pub use model::{
    DhcpOption, IpamOptions, Lease, LeaseFilter, LeaseState, PoolRange, PoolUsage, Port,
    ReservationSpec, StaticRoute,
};
pub use owned::BlockUse;
pub use page::LeasePage;
pub use record::{lease_from_json, lease_holder, lease_to_json};
pub use spec::{dns_name, fmt_duration, SpecError, SubnetField, SubnetSpec, DEFAULT_LEASE_TIME};
pub use store::{KvIter, Op, SledStore, Store, TreeId, SCHEMA};
pub use v6::{
    key6_from_text, key6_to_text, lease6_from_json, lease6_holder, lease6_to_json, Binding6, Held6,
    Ia6Key, Ia6Kind, Ia6Op, Ia6Result, IaAsk, Page6, PdPoolSpec, Range6, Spec6Error, Subnet6Spec,
    Usage6, DUID_KEY, IA_CAP6, MAX_LIFETIME6, OFFER_CAP6,
};
