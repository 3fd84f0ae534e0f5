//! `vpcbox replay`: the incident as a reproducible lab exercise.
//!
//! Against a running vpcbox (or one it spawns), in phases: steady HTTP/2 API
//! load and legit DHCP clients; + a slow upstream behind a `[[route]]`; + one
//! MAC flooding DHCP; + HTTP/2 streams with large bodies that never read;
//! then a quiet tail. A sampler records the target's RSS, pending requests,
//! overload state and health; the verdict table says what held against the
//! issue's targets. `anyhow` throughout: an app-level tool whose errors end
//! in one printed line.

mod args;
pub mod config_gen;
pub mod dhcp_load;
pub mod finale;
pub mod http_load;
mod orchestrate;
pub mod phases;
pub mod plot;
pub mod report;
pub mod sampler;
mod setup;
pub mod target;
pub mod upstream;

pub use args::ReplayArgs;
pub use orchestrate::{replay, run, Outcome};

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
