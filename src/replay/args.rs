//! The options of `vpcbox replay`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use super::config_gen;

fn size_arg(s: &str) -> Result<u64, String> {
    crate::config::parse::size(s).map_err(|e| format!("'{s}' {e}"))
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    crate::config::parse::duration(s).map_err(|e| format!("'{s}' {e}"))
}

/// `vpcbox replay` options.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// API base URL of a running target [default: from the config, else http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// DHCP address of a running target; it must listen on a specific address, not 0.0.0.0,
    /// so the replay can bind the relay addresses on the same port [default: from the config, else 127.0.0.1:6767]
    #[arg(long, value_name = "ADDR")]
    pub dhcp: Option<SocketAddr>,
    /// Config of a running target (sets --target, --dhcp, the budget). Set by the integrator
    /// from the global `--config`.
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Start `vpcbox run --headless` with this config's protections (addresses, storage,
    /// subnet and route are the replay's own), and stop it at the end
    #[arg(long, value_name = "CONFIG")]
    pub spawn: Option<PathBuf>,
    /// Spawn the target with every protection off (bench/no-protections.toml over the
    /// --spawn config or the shipped defaults); it is killed past --rss-cap
    #[arg(long)]
    pub no_protections: bool,
    /// Seconds per loaded phase
    #[arg(long, default_value_t = 10)]
    pub phase_secs: u64,
    /// Seconds of the quiet tail in which recovery is measured
    #[arg(long, default_value_t = 6)]
    pub tail_secs: u64,
    /// Legit API requests per second (HTTP/2, several clients)
    #[arg(long, default_value_t = 2000)]
    pub api_rate: u32,
    /// Requests per second to the slow route
    #[arg(long, default_value_t = 4000)]
    pub upstream_rate: u32,
    /// How long the slow upstream waits before answering
    #[arg(long, default_value = "500ms", value_parser = duration_arg)]
    pub upstream_delay: Duration,
    /// Port of the slow upstream (0: any; against a running target its route must point here)
    #[arg(long, default_value_t = 0)]
    pub upstream_port: u16,
    /// Path prefix of the slow route on the target
    #[arg(long, default_value = config_gen::ROUTE_PREFIX)]
    pub upstream_prefix: String,
    /// DHCP packets the flooding MAC sends
    #[arg(long, default_value_t = 100_000)]
    pub flood: u64,
    /// Over how long the flood is spread
    #[arg(long, default_value = "3s", value_parser = duration_arg)]
    pub flood_duration: Duration,
    /// New legit DHCP clients (full DORA) per second
    #[arg(long, default_value_t = 20)]
    pub legit_dhcp_rate: u32,
    /// How long a legit API request may take before it counts as failed
    #[arg(long, default_value = "2s", value_parser = duration_arg, hide = true)]
    pub legit_timeout: Duration,
    /// Finale: HTTP/2 connections that never read
    #[arg(long, default_value_t = 8)]
    pub finale_connections: u32,
    /// Finale: streams per connection
    #[arg(long, default_value_t = 200)]
    pub finale_streams: u32,
    /// Finale: how long the slow upstream holds the finale's requests before it reads
    /// them (longer than a phase: they pile up)
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub finale_upstream_delay: Duration,
    /// Finale: request body per stream
    #[arg(long, default_value = "1MiB", value_parser = size_arg)]
    pub finale_body: u64,
    /// Kill a spawned target whose RSS passes this (protects the machine)
    #[arg(long, default_value = "1GiB", value_parser = size_arg)]
    pub rss_cap: u64,
    /// Budget the peak RSS is judged against [default: the config's memory.budget, else 128MiB]
    #[arg(long, value_parser = size_arg)]
    pub budget: Option<u64>,
    /// Admin token file of a running target (allocations need it) [default: the config's
    /// gateway.admin_token_file; without a token the API load only reads]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Subnet id for API allocations [default: the spawned config's, else "lab"]
    #[arg(long)]
    pub subnet: Option<String>,
    /// Write timeline.csv, timeline.svg, verdict.txt (and the spawned target's config and log) here
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The vpcbox binary --spawn runs [default: $VPCBOX_BIN, else this executable]
    #[arg(long, value_name = "PATH", hide = true)]
    pub vpcbox_bin: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(name = "vpcbox replay")]
struct Standalone {
    #[command(flatten)]
    args: ReplayArgs,
}

impl ReplayArgs {
    /// Parses replay options alone (tests, and callers without the full CLI).
    pub fn parse_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once("vpcbox-replay".into()).chain(argv.into_iter().map(Into::into));
        Standalone::try_parse_from(argv).map(|s| s.args)
    }
}
