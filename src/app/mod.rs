//! Composition root: builds the services from the config and runs them
//! under one shutdown tree ([`run`]); the `db` subcommands open the same
//! store ([`db`]). Nothing below `app` imports it.

pub mod cluster;
pub mod db;
mod ipam_source;
#[cfg(feature = "cluster")]
mod join;
mod logging;
mod reload;
mod run;
pub mod store;
mod token;

pub use ipam_source::IpamSource;
pub use reload::{reload, Outcome};
pub use run::{run, RunOptions};
