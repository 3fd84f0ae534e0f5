//! The integration test binary: everything that runs the real `vpcbox`
//! binary, real sockets and (as root, in CI) real network namespaces.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // helpers are shared by modules that land over time

mod api_admin;
mod api_binary;
mod api_cli;
mod api_ipam;
mod api_ipam6;
mod api_schemathesis;
mod api_server;
mod api_support;
mod browser;
#[path = "../common/cert.rs"]
mod cert;
mod cluster_config;
mod cluster_dhcp6;
mod cluster_etcd;
mod cluster_faults;
mod cluster_isolation;
mod cluster_lab;
mod cluster_nemesis;
mod cluster_net;
mod cluster_nodes;
mod cluster_ops;
mod cluster_wait;
mod cluster_workload;
mod config_fixtures;
mod dhcp;
mod dhcp6_clients;
mod dhcp6_netns;
mod dhcp6_support;
mod dhcp_adversary;
mod dhcp_bench;
#[path = "../common/dhcp_client.rs"]
mod dhcp_client;
mod dhcp_netns;
mod dhcp_support;
mod disk_full;
#[path = "../common/etcd.rs"]
mod etcd;
mod gw_identity;
mod headless;
#[path = "../common/history.rs"]
mod history;
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
mod ui_browser;
mod ui_stream;
