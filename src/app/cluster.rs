//! `vpcbox cluster status|leave|migrate`, and `vpcbox db export|import`
//! when the config has a `[cluster]` section: each talks to etcd directly
//! (no node needs to run, none is joined). etcd unreachable is exit 69; a
//! refused operation (a non-empty prefix, a running node) is exit 64.

use std::path::Path;

use super::ipam_source::ClusterFn;
use super::store::ClusterNode;
use crate::cli::ClusterCommand;
use crate::config::{ClusterConfig, Config};
use crate::exit::Exit;
use crate::ipam::Dump;

/// Runs one `vpcbox cluster` command; `load` reads the config it names.
pub fn run(
    cmd: ClusterCommand,
    load: impl Fn(&crate::cli::ConfigArg) -> Result<Config, Exit>,
    runtime: impl FnOnce() -> Result<tokio::runtime::Runtime, Exit>,
) -> Result<String, Exit> {
    match cmd {
        ClusterCommand::Status { config, json } => status(section(&load(&config)?)?, json),
        ClusterCommand::Leave { config, force } => leave(section(&load(&config)?)?, force),
        ClusterCommand::Migrate { config, from } => {
            let config = load(&config)?;
            migrate(&runtime()?, &config, &from)
        }
    }
}

/// The config's `[cluster]` section, which every cluster command needs.
fn section(config: &Config) -> Result<&ClusterConfig, Exit> {
    config.cluster.as_ref().ok_or_else(|| {
        Exit::usage("cluster: the config has no [cluster] section (node, etcd, prefix)")
    })
}

#[cfg(not(feature = "cluster"))]
fn no_cluster() -> Exit {
    Exit::usage("cluster: this vpcbox was built without the 'cluster' feature")
}

#[cfg(not(feature = "cluster"))]
mod imp {
    use super::*;

    pub fn status(_: &ClusterConfig, _: bool) -> Result<String, Exit> {
        Err(no_cluster())
    }
    pub fn leave(_: &ClusterConfig, _: bool) -> Result<String, Exit> {
        Err(no_cluster())
    }
    pub fn export(_: &ClusterConfig) -> Result<Dump, Exit> {
        Err(no_cluster())
    }
    pub fn import(
        _: &tokio::runtime::Runtime,
        _: &ClusterConfig,
        _: Dump,
        _: &Path,
    ) -> Result<String, Exit> {
        Err(no_cluster())
    }
    pub fn dashboard(_: Option<&ClusterNode>) -> Option<ClusterFn> {
        None
    }
}

#[cfg(feature = "cluster")]
mod imp {
    use super::*;
    use crate::cluster::{ImportError, LeaveError, Left};
    use crate::ipam::IpamError;
    use crate::tui::{ClusterNodeRow, ClusterRow};

    fn unreachable(c: &ClusterConfig, e: impl std::fmt::Display) -> Exit {
        Exit::unavailable(format!("cluster.etcd: {}: {e}", c.etcd.join(", ")))
    }

    pub fn status(c: &ClusterConfig, json: bool) -> Result<String, Exit> {
        let s = crate::cluster::read_status(c).map_err(|e| unreachable(c, e))?;
        if !json {
            return Ok(crate::cluster::render_status(&s));
        }
        serde_json::to_string_pretty(&s)
            .map(|j| j + "\n")
            .map_err(|e| Exit::software(format!("status as JSON: {e}")))
    }

    pub fn leave(c: &ClusterConfig, force: bool) -> Result<String, Exit> {
        match crate::cluster::leave(c, force) {
            Ok(Left::NotRegistered) => Ok(format!("node '{}' is not registered: nothing to give back\n", c.node)),
            Ok(Left::Revoked { blocks }) => Ok(format!(
                "node '{}' left the cluster: its lease is revoked, {blocks} blocks went back to the others\n",
                c.node
            )),
            Err(e @ LeaveError::Running(_)) => Err(Exit::usage(e)),
            Err(LeaveError::Etcd(e)) => Err(unreachable(c, e)),
        }
    }

    pub fn export(c: &ClusterConfig) -> Result<Dump, Exit> {
        crate::cluster::export(c).map_err(|e| match e {
            IpamError::Storage(_) | IpamError::Cluster(_) => unreachable(c, e),
            other => Exit::software(format!("export failed: {other}")),
        })
    }

    /// Checks `dump` (named `file` in messages) whole, then writes it into
    /// the empty cluster prefix.
    pub fn import(
        runtime: &tokio::runtime::Runtime,
        c: &ClusterConfig,
        dump: Dump,
        file: &Path,
    ) -> Result<String, Exit> {
        let writes = runtime
            .block_on(crate::cluster::prepare(dump, c))
            .map_err(|e| Exit::usage(format!("{}: {e}", file.display())))?;
        match crate::cluster::import(c, writes) {
            Ok(done) => Ok(format!(
                "imported {} into {}: {} keys in {} txns\n{}",
                file.display(),
                c.prefix,
                done.keys,
                done.txns,
                if done.kept_duid {
                    "the cluster's DHCPv6 server DUID is kept: v6 clients of the imported store Rebind to it\n"
                } else {
                    ""
                }
            )),
            Err(e @ ImportError::NotEmpty { .. }) => Err(Exit::usage(e)),
            Err(ImportError::Etcd(e)) => Err(unreachable(
                c,
                format!("import failed, nothing written: {e}"),
            )),
        }
    }

    /// The dashboard's cluster line for a running node: the last good read
    /// of the layout stays on screen (with the error) while etcd is away.
    pub fn dashboard(cluster: Option<&ClusterNode>) -> Option<ClusterFn> {
        let probe = cluster?.probe();
        let last = std::sync::Mutex::new(Vec::new());
        Some(Box::new(move || {
            // std Mutex: the dashboard's fetches run one at a time.
            let mut nodes = last.lock().unwrap_or_else(|e| e.into_inner());
            let error = match probe.layout() {
                Ok(s) => {
                    *nodes = s
                        .nodes
                        .iter()
                        .map(|n| ClusterNodeRow {
                            name: n.name.clone(),
                            blocks: n.blocks.values().map(|b| b.blocks).sum(),
                            rates: n.rates.map(|r| (r.dhcp_acks_per_s, r.api_requests_per_s)),
                        })
                        .collect();
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            ClusterRow {
                node: probe.node().to_owned(),
                fenced: probe.fenced(),
                nodes: nodes.clone(),
                error,
            }
        }))
    }
}

pub use imp::{dashboard, export, import};
use imp::{leave, status};

/// `vpcbox cluster migrate`: the sled store in `from` (which no vpcbox may
/// be using) exported and imported into the empty cluster prefix, in one
/// command: `db export` with the single node's config piped into `db
/// import` with the cluster's is the same, in two.
fn migrate(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    from: &Path,
) -> Result<String, Exit> {
    let c = section(config)?;
    if !from.join("conf").is_file() {
        return Err(Exit::usage(format!(
            "--from: '{}' is not a vpcbox data directory (no sled store in it)",
            from.display()
        )));
    }
    let stats = crate::stats::Stats::new(16);
    let ipam = crate::ipam::Ipam::open(from, super::store::ipam_options(config), stats)
        .map_err(|e| super::store::open_error(from, e))?;
    let dump = ipam
        .export()
        .map_err(|e| Exit::software(format!("reading '{}' failed: {e}", from.display())))?;
    drop(ipam);
    import(runtime, c, dump, from)
}
