//! The live dashboard: per-client rates, pending work, memory, and one-key
//! isolation of a misbehaving client.
//!
//! - [`state`]: everything drawn, derived from snapshots; [`keys`]: key
//!   handling as a pure function of that state returning [`Command`]s.
//! - [`views`]: pure widgets over the state (`impl Widget for &View`).
//! - [`event_loop`]: ticks, keys, resizes; blocking work off the draw path.
//! - [`terminal`]: raw mode and the alternate screen as a guarded resource.
//! - [`data`]: the rows the Subnets and Leases views show, and the
//!   [`DataSource`] trait the composition root implements over the IPAM.

pub mod data;
mod error;
pub mod event_loop;
pub mod format;
mod handles;
pub mod keys;
pub mod kinds;
mod run;
pub mod state;
pub mod terminal;
pub mod views;

#[cfg(test)]
mod tests;

pub use crate::stats::history;
pub use data::{
    ClusterNodeRow, ClusterRow, DataSource, Lease6Row, LeaseQuery, LeaseRow, NoData, Subnet6Row,
    SubnetRow,
};
pub use error::TuiError;
pub use event_loop::Ended;
pub use handles::Handles;
pub use keys::{on_key, Command};
pub use run::{run, should_use_tui};
pub use state::UiState;
