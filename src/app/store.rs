//! Opening the store for `run` and `db`: config → `IpamOptions`, and store
//! errors → typed exits (a locked or corrupt data directory is exit 69).
//! With `[cluster]`, the store is etcd: the node joins the cluster first.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::exit::Exit;
use crate::ipam::{Ipam, IpamError, IpamOptions};
use crate::stats::Stats;

/// The cluster an IPAM is a node of (kept as long as the IPAM serves).
#[cfg(feature = "cluster")]
pub type ClusterNode = crate::cluster::Cluster;
/// Without the `cluster` feature there is none (`[cluster]` is refused).
#[cfg(not(feature = "cluster"))]
pub type ClusterNode = std::convert::Infallible;

/// Why joining the cluster ended the process, if it did (never without one).
pub type JoinExit = Arc<std::sync::Mutex<Option<Exit>>>;

pub fn ipam_options(config: &Config) -> IpamOptions {
    IpamOptions {
        cache_capacity: config.storage.cache,
        commit_interval: config.storage.commit_interval,
        cache_threshold: config.dhcp.cache_threshold,
        offer_hold: config.dhcp.offer_hold,
        decline_quarantine: config.dhcp.decline_quarantine,
    }
}

/// Opens the IPAM in `[storage] path` (or, with `[cluster]`, on etcd) and
/// applies the config's subnets and reservations. In a cluster whose etcd
/// does not answer yet, the IPAM opens empty and fenced, attached to a node
/// that is not registered ([`ClusterNode::registered`]): `run` keeps trying.
pub fn open(config: &Config, stats: Arc<Stats>) -> Result<(Arc<Ipam>, Option<ClusterNode>), Exit> {
    #[cfg(feature = "cluster")]
    if let Some(c) = &config.cluster {
        let endpoints = c.etcd.join(", ");
        let cluster = crate::cluster::Cluster::connect(c, stats.clone())
            .map_err(|e| Exit::usage(format!("cluster.etcd: '{endpoints}': {e}")))?;
        let entered = cluster.enter();
        if let Err(e @ IpamError::Storage(_)) = &entered {
            return Err(Exit::unavailable(format!("cluster.node: {e}")));
        }
        let path = config.storage.path.clone();
        let ipam = Ipam::with_store(path, cluster.store(), ipam_options(config), stats)
            .map_err(|e| Exit::unavailable(format!("cluster store: {e}")))?;
        cluster.attach(&ipam);
        match entered {
            Ok(()) => apply_cluster_config(config, &ipam, &cluster)?,
            Err(e) => tracing::warn!(
                error = %e,
                "cluster.etcd: {endpoints} did not answer; serving nothing that needs a write until this node registers"
            ),
        }
        return Ok((ipam, Some(cluster)));
    }
    let dir = &config.storage.path;
    std::fs::create_dir_all(dir).map_err(|e| {
        Exit::unavailable(format!(
            "data directory '{}' cannot be created: {e}",
            dir.display()
        ))
    })?;
    let ipam = Ipam::open(dir, ipam_options(config), stats).map_err(|e| open_error(dir, e))?;
    apply_config(config, &ipam)?;
    Ok((ipam, None))
}

fn apply_config(config: &Config, ipam: &Ipam) -> Result<(), Exit> {
    ipam.apply_config(&config.subnets, &config.reservations, SystemTime::now())
        .map_err(config_error)?;
    apply_config6(config, ipam)
}

/// The `[[subnet6]]` subnets and the v6 port cap (in cluster mode the
/// subnets are stored with the rest of the config, see `apply_cluster_config`).
fn apply_config6(config: &Config, ipam: &Ipam) -> Result<(), Exit> {
    ipam.set_port_cap6(config.dhcp.max_leases_per_port);
    if config.cluster.is_none() {
        ipam.apply_config6(&config.subnets6)
            .map_err(|e| Exit::usage(format!("config subnet6 does not fit the store: {e}")))?;
    }
    Ok(())
}

/// Storing the config failed: the config does not fit the store (64), or
/// etcd did not answer or kept racing (69).
fn config_error(e: IpamError) -> Exit {
    match e {
        IpamError::Cluster(_) | IpamError::Conflict(_) => {
            Exit::unavailable(format!("cluster store: storing the config failed: {e}"))
        }
        e => Exit::usage(format!(
            "config subnets/reservations do not fit the store: {e}"
        )),
    }
}

/// Stores the config in the cluster; a node that lost the race to store
/// a different value exits 64 naming what differs.
#[cfg(feature = "cluster")]
pub fn apply_cluster_config(
    config: &Config,
    ipam: &Ipam,
    cluster: &crate::cluster::Cluster,
) -> Result<(), Exit> {
    use crate::cluster::ApplyError;
    ipam.set_port_cap6(config.dhcp.max_leases_per_port);
    match cluster.apply_config(
        ipam,
        &config.subnets,
        &config.reservations,
        &config.subnets6,
    ) {
        Ok(()) => Ok(()),
        Err(ApplyError::Ipam(e)) => Err(config_error(e)),
        Err(e @ ApplyError::Differs(_)) => {
            let prefix = config.cluster.as_ref().map_or("", |c| c.prefix.as_str());
            Err(Exit::usage(format!(
                "{e} under cluster.prefix '{prefix}'; give every node the same subnets and reservations"
            )))
        }
    }
}

/// A store that would not open, as an exit (a locked directory is in use).
pub fn open_error(dir: &std::path::Path, e: IpamError) -> Exit {
    match e {
        IpamError::Locked { .. } => Exit::unavailable(format!(
            "data directory '{}' is in use: another vpcbox owns it",
            dir.display()
        )),
        other => Exit::unavailable(format!("data directory '{}': {other}", dir.display())),
    }
}
