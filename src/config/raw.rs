//! The config file's serde shape: strings as written, defaults filled in,
//! unknown keys refused. [`super::Config`] is the validated form.

use serde::{Deserialize, Serialize};

use super::parse::{fmt_duration, fmt_size};
pub use super::raw6::{Dhcp6, PdPool, Subnet6};
use crate::ipam::{IpamOptions, DEFAULT_LEASE_TIME};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub storage: Storage,
    pub dhcp: Dhcp,
    #[serde(rename = "subnet")]
    pub subnets: Vec<Subnet>,
    pub dhcp6: Dhcp6,
    #[serde(rename = "subnet6")]
    pub subnets6: Vec<Subnet6>,
    #[serde(rename = "reservation")]
    pub reservations: Vec<Reservation>,
    pub gateway: Gateway,
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
    pub memory: Memory,
    pub tui: Tui,
    pub stats: Stats,
    pub process: Process,
    /// Absent: one node on the embedded sled store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub path: String,
    pub cache: String,
    pub commit_interval: String,
}

impl Default for Storage {
    fn default() -> Self {
        let ipam = IpamOptions::default();
        Self {
            path: "./data".into(),
            cache: fmt_size(ipam.cache_capacity),
            commit_interval: fmt_duration(ipam.commit_interval),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dhcp {
    pub enabled: bool,
    pub listen: String,
    pub interfaces: Vec<String>,
    pub server_id: Option<String>,
    pub per_client_rate: String,
    pub per_client_burst: u32,
    pub max_client_quotas: usize,
    pub global_rate: String,
    pub queue: usize,
    pub workers: usize,
    pub deadline: String,
    pub cache_threshold: f64,
    pub offer_hold: String,
    pub decline_quarantine: String,
    pub new_lease_rate: String,
    pub max_leases_per_port: u32,
    pub rapid_commit: bool,
    pub authoritative: bool,
}

impl Default for Dhcp {
    fn default() -> Self {
        let ipam = IpamOptions::default();
        Self {
            enabled: true,
            listen: "0.0.0.0:67".into(),
            interfaces: Vec::new(),
            server_id: None,
            per_client_rate: "10/s".into(),
            per_client_burst: 20,
            max_client_quotas: 65_536,
            global_rate: "50000/s".into(),
            queue: 4096,
            workers: 2,
            deadline: "1s".into(),
            cache_threshold: ipam.cache_threshold,
            offer_hold: fmt_duration(ipam.offer_hold),
            decline_quarantine: fmt_duration(ipam.decline_quarantine),
            new_lease_rate: "20000/s".into(),
            max_leases_per_port: 10,
            rapid_commit: false,
            authoritative: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub id: String,
    pub cidr: String,
    pub pools: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default = "default_lease_time")]
    pub lease_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebind_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub options: Vec<DhcpOption>,
    #[serde(default)]
    pub relays: Vec<String>,
}

fn default_lease_time() -> String {
    fmt_duration(DEFAULT_LEASE_TIME)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub dest: String,
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpOption {
    pub code: u8,
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub subnet: String,
    pub client: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    pub enabled: bool,
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    pub admin_token_file: String,
    pub initial_stream_window: String,
    pub initial_connection_window: String,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: String,
    pub max_frame_size: String,
    pub max_send_buffer: String,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    pub keepalive_interval: String,
    pub keepalive_timeout: String,
    pub header_read_timeout: String,
    pub idle_timeout: String,
    pub request_timeout: String,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub per_client_rate: String,
    pub per_client_burst: u32,
    pub max_quota_clients: usize,
    pub body_budget: String,
    pub max_body: String,
    pub response_budget: String,
    pub send_stall_timeout: String,
    pub socket_buffer: String,
    pub threads: usize,
    pub public_client_metrics: bool,
    pub max_event_streams: usize,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            tls: None,
            admin_token_file: "./data/admin.token".into(),
            initial_stream_window: "64KiB".into(),
            initial_connection_window: "1MiB".into(),
            max_concurrent_streams: 100,
            max_header_list_size: "16KiB".into(),
            max_frame_size: "16KiB".into(),
            max_send_buffer: "64KiB".into(),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            keepalive_interval: "20s".into(),
            keepalive_timeout: "10s".into(),
            header_read_timeout: "5s".into(),
            idle_timeout: "60s".into(),
            request_timeout: "30s".into(),
            max_connections: 1024,
            max_connections_per_client: 256,
            per_client_rate: "200/s".into(),
            per_client_burst: 400,
            max_quota_clients: 65_536,
            body_budget: "16MiB".into(),
            max_body: "1MiB".into(),
            response_budget: "16MiB".into(),
            send_stall_timeout: "10s".into(),
            socket_buffer: "64KiB".into(),
            threads: 1,
            public_client_metrics: false,
            max_event_streams: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub prefix: String,
    pub upstream: String,
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub strip_prefix: bool,
}

fn default_max_pending() -> usize {
    1024
}

fn default_route_timeout() -> String {
    "5s".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    pub budget: String,
    pub shrink_at: f64,
    pub shed_at: f64,
    pub hysteresis: f64,
    pub shrink_interval: String,
    pub sample_interval: String,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            budget: "128MiB".into(),
            shrink_at: 0.7,
            shed_at: 0.9,
            hysteresis: 0.05,
            shrink_interval: "5s".into(),
            sample_interval: "100ms".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tui {
    pub refresh: String,
}

impl Default for Tui {
    fn default() -> Self {
        Self {
            refresh: "250ms".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stats {
    pub tracked_clients: usize,
    pub publish_interval: String,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            tracked_clients: 1024,
            publish_interval: "250ms".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Process {
    pub shutdown_grace: String,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            shutdown_grace: "10s".into(),
        }
    }
}

/// `[cluster]`: several nodes sharing one IPAM on etcd v3 (DESIGN.md "Cluster").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    pub node: String,
    pub etcd: Vec<String>,
    pub prefix: String,
    pub lease_ttl: String,
    pub block_size: u32,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            node: String::new(),
            etcd: vec!["http://127.0.0.1:2379".into()],
            prefix: "/vpcbox/v1".into(),
            lease_ttl: "10s".into(),
            block_size: 16,
        }
    }
}
