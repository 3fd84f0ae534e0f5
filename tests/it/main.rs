//! The integration test binary: everything that runs the real `vpcbox`
//! binary, real sockets and (as root, in CI) real network namespaces.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // helpers are shared by modules that land over time

mod api_admin;
mod api_binary;
mod api_cli;
mod api_ipam;
mod api_schemathesis;
mod api_server;
mod api_support;
#[path = "../common/cert.rs"]
mod cert;
mod config_fixtures;
mod dhcp;
mod dhcp_adversary;
mod dhcp_bench;
mod dhcp_netns;
mod dhcp_support;
mod disk_full;
mod gw_identity;
mod headless;
mod identity_flood;
mod memory_owners;
mod netns;
mod package;
mod public;
mod reload;
mod replay;
mod store;
mod support;
mod tui_bench;
mod tui_demo;
mod tui_tmux;
