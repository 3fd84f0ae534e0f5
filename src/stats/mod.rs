//! Process-wide statistics.
//!
//! Services bump atomics ([`Stats`]) and record per-client activity in a
//! bounded heavy-hitter table; one [`Publisher`] turns all of it into an
//! immutable [`Snapshot`] on a `tokio::sync::watch` channel, which the
//! dashboard, `/metrics` and the admin API read.

pub mod clients;
mod counters;
pub mod histogram;
pub mod history;
mod labels;
pub mod owners;
pub mod prometheus;
pub mod publisher;
pub mod snapshot;
mod summary;
#[cfg(test)]
mod tests;
mod window;

pub use clients::{ClientRow, ClientTable};
pub use counters::{DhcpStats, GatewayStats, IpamStats, MemoryStats, RouteStats, Stats};
pub use histogram::Histogram;
pub use history::History;
pub use labels::{DhcpKind, DhcpOutcome, DropReason, OverloadState};
pub use owners::{Measured, MemoryByOwner};
pub use publisher::Publisher;
pub use snapshot::{LeaseCount, Snapshot};
