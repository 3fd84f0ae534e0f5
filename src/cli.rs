//! Command-line interface (clap derive). Stable: tests and users depend on it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vpcbox",
    version,
    about = "Single-binary VPC control-plane appliance: DHCPv4, IPAM, HTTP/2 API gateway, live dashboard",
    long_about = "vpcbox runs a DHCPv4 server, an embedded sled IPAM, an HTTP/2 API gateway and a live \
terminal dashboard in one process. Without a subcommand it runs the appliance.\n\n\
Config: --config PATH, else ./config.toml, else /etc/vpcbox/config.toml, else the embedded defaults.\n\
Exit codes: 0 ok, 64 bad usage or config, 69 a port or file it needs is unavailable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ConfigArg {
    /// Config file (default: ./config.toml, then /etc/vpcbox/config.toml, then embedded defaults)
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Never show the dashboard; log to stderr (implied without a terminal or under systemd)
    #[arg(long)]
    pub headless: bool,
    /// Add built-in synthetic traffic: well-behaved clients plus one flooder
    #[arg(long)]
    pub demo: bool,
    /// Log format in headless mode
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance (the default)
    Run(RunArgs),
    /// Validate a config, print the resolved config (or, with --diff, the
    /// changed keys), exit 0 or 64
    Check(CheckArgs),
    /// Backup and restore of the store
    #[command(subcommand)]
    Db(DbCommand),
    /// Cluster operations on etcd, from the `[cluster]` section of the config
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Replay the incident against a vpcbox and report what held
    Replay(Box<crate::replay::ReplayArgs>),
    #[command(flatten)]
    Admin(crate::admin_cli::AdminCommand),
}

#[derive(Debug, Clone, Args, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Compare with the config the running vpcbox loaded (e.g. the installed
    /// /etc/vpcbox/config.toml, before you replace it with --config PATH):
    /// print each changed key and whether SIGHUP applies it or it needs a restart
    #[arg(long, value_name = "RUNNING")]
    pub diff: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Write the whole store as JSON to stdout
    Export(ConfigArg),
    /// Load a JSON export into the store (refuses a non-empty store unless --force)
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The export file
        file: PathBuf,
        /// Replace the contents of a non-empty store
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as etcd holds it: nodes and their lease TTL left,
    /// blocks and leased addresses per node, lease counts, isolations, and
    /// each etcd endpoint's health (read-only; no node needs to run)
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Give this config's node's blocks back now (revoking its etcd lease),
    /// for a node that stopped without leaving; a running node leaves by
    /// itself on SIGTERM. A node joins by starting with a `[cluster]` section.
    Leave {
        #[command(flatten)]
        config: ConfigArg,
        /// Revoke the lease even if the node seems to run (it registers again)
        #[arg(long)]
        force: bool,
    },
    /// Copy a single-node sled store into the (empty) cluster prefix: its
    /// subnets, reservations, leases and isolations
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
        /// The sled data directory of the single node (`[storage] path`);
        /// it must not be in use
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
    },
}
