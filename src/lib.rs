//! vpcbox: a single-binary VPC control-plane appliance — DHCPv4 server,
//! embedded sled IPAM, HTTP/2 API gateway and live dashboard in one process.
//!
//! `main` parses the CLI and config; `app` composes the services; each service
//! lives in its own module and talks to the others only through the `Ipam`
//! API, the shared `stats` counters and the `isolation` set.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod events;
pub mod exit;
pub mod ipam;
pub mod isolation;
pub mod stats;
pub mod tui;
