//! Configuration in two layers: [`raw::RawConfig`] is the TOML shape
//! (strings as written, defaults, unknown keys refused); [`Config`] is the
//! validated form the services use, built by `TryFrom`. Every validation
//! error names the key and quotes the bad value on one line, e.g.
//! `dhcp.per_client_rate: '0/s' must be at least 1/s`.

mod check;
mod cluster;
mod dhcp6;
pub mod diff;
mod gateway;
pub mod parse;
pub mod raw;
mod raw6;
mod subnets;
mod types6;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::ipam::{
    DhcpOption, PoolRange, ReservationSpec as ReservationConfig, StaticRoute,
    SubnetSpec as SubnetConfig,
};
pub use parse::Rate;
pub use raw::RawConfig;
pub use types6::{Dhcp6Config, PdPool6, Pool6, Subnet6Config};

/// The shipped default config, embedded so `vpcbox run` works with no file.
pub const EMBEDDED: &str = include_str!("../../config.toml");

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{path}: cannot be read: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}:{line}: invalid TOML: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{key}: unknown key '{name}'")]
    UnknownKey { key: String, name: String },
    #[error("{key}: {message}")]
    Type { key: String, message: String },
    #[error("{key}: '{value}' {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub storage: StorageConfig,
    pub dhcp: DhcpConfig,
    pub subnets: Vec<SubnetConfig>,
    pub dhcp6: Dhcp6Config,
    pub subnets6: Vec<Subnet6Config>,
    pub reservations: Vec<ReservationConfig>,
    pub gateway: GatewayConfig,
    pub routes: Vec<RouteConfig>,
    pub memory: MemoryConfig,
    pub tui: TuiConfig,
    pub stats: StatsConfig,
    pub process: ProcessConfig,
    /// `[cluster]`: None runs one node on the embedded sled store.
    pub cluster: Option<ClusterConfig>,
    /// The resolved file form (defaults filled in), for `vpcbox check`.
    pub raw: RawConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache: u64,
    /// Shortest time between two group-commit flushes under load.
    pub commit_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DhcpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub interfaces: Vec<String>,
    pub server_id: Option<Ipv4Addr>,
    pub per_client_rate: Rate,
    pub per_client_burst: u32,
    /// Client keys with a quota of their own at once; past it, new keys
    /// share one quota (see `dhcp::limits`).
    pub max_client_quotas: usize,
    pub global_rate: Rate,
    pub queue: usize,
    pub workers: usize,
    pub deadline: Duration,
    pub cache_threshold: f64,
    pub offer_hold: Duration,
    pub decline_quarantine: Duration,
    /// New leases per second per subnet and per relay (a brake on a
    /// runaway relay; the per-port cap guards against starvation).
    pub new_lease_rate: Rate,
    /// Addresses (bound leases and live offers) one relay port may hold: a
    /// port is a relay's giaddr plus option 82's circuit-id; packets without
    /// a circuit-id belong to no port. 0: no cap.
    pub max_leases_per_port: u32,
    pub rapid_commit: bool,
    pub authoritative: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub admin_token_file: PathBuf,
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub max_frame_size: u32,
    pub max_send_buffer: usize,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub per_client_rate: Rate,
    pub per_client_burst: u32,
    /// Client IPs with a quota of their own; past it, new ones share one.
    pub max_quota_clients: usize,
    pub body_budget: u64,
    pub max_body: u64,
    /// Response bytes buffered across all streams (upstream bodies pause past it).
    pub response_budget: u64,
    /// A stream whose client accepted no buffered byte for this long is reset.
    pub send_stall_timeout: Duration,
    pub socket_buffer: u32,
    /// 0: serve on the process runtime; N: N threads, each a current-thread
    /// runtime accepting on the same socket (read at start only).
    pub threads: usize,
    /// Per-client series on `/metrics` without the admin token.
    pub public_client_metrics: bool,
    /// Concurrent `/v1/events/stream` streams (read at start only).
    pub max_event_streams: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub prefix: String,
    pub upstream: http::Uri,
    pub max_pending: usize,
    pub timeout: Duration,
    pub strip_prefix: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    pub budget: u64,
    pub shrink_at: f64,
    pub shed_at: f64,
    pub hysteresis: f64,
    pub shrink_interval: Duration,
    pub sample_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TuiConfig {
    pub refresh: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    pub tracked_clients: usize,
    pub publish_interval: Duration,
}

/// Several nodes sharing one IPAM on etcd (DESIGN.md "Cluster").
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Unique node name, `[a-z0-9-]{1,32}`.
    pub node: String,
    /// etcd client endpoints (http URLs).
    pub etcd: Vec<String>,
    /// Key prefix every key lives under, without a trailing slash.
    pub prefix: String,
    /// The node's etcd lease: liveness, and the bound on how long a node
    /// cut off from etcd keeps writing (it stops before the lease ends).
    pub lease_ttl: Duration,
    /// Addresses per block a node claims (a power of two).
    pub block_size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    pub shutdown_grace: Duration,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::try_from(parse_raw(text, origin)?)
    }

    /// The shipped defaults (the embedded `config.toml`).
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(EMBEDDED, "<embedded config.toml>")
    }

    /// The resolved config as TOML: every key, defaults filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// TOML text → [`RawConfig`], naming the key of any type error.
pub fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(text, origin, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_owned();
        // serde reports "unknown field `x`, expected one of …" at the parent.
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let key = match key.as_str() {
                "." | "" => name.to_owned(),
                k if k.ends_with(name) => key,
                _ => format!("{key}.{name}"),
            };
            return ConfigError::UnknownKey {
                key,
                name: name.to_owned(),
            };
        }
        if inner.span().is_some() && (key == "." || key.is_empty()) {
            return syntax(text, origin, &inner);
        }
        type_error(key, &message)
    })
}

/// serde says `invalid type: string "x", expected usize`; we say
/// `dhcp.queue: 'x' has the wrong type (expected usize)`.
fn type_error(key: String, message: &str) -> ConfigError {
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return ConfigError::Type {
            key: format!("{key}.{name}"),
            message: "is required".into(),
        };
    }
    let parsed = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "));
    match parsed {
        Some((found, expected)) => {
            let value = found
                .split_once(' ')
                .map(|(_, v)| v.trim_matches('"'))
                .unwrap_or(found);
            ConfigError::invalid(
                key,
                value,
                format!("has the wrong type (expected {expected})"),
            )
        }
        None => ConfigError::Type {
            key,
            message: message.to_owned(),
        },
    }
}

fn syntax(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
        .unwrap_or(0);
    ConfigError::Syntax {
        path: origin.to_owned(),
        line,
        message: e.message().replace('\n', " "),
    }
}

#[cfg(test)]
mod tests;
