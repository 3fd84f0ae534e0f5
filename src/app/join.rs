//! Cluster mode: starting the node's cluster tasks, at once when it
//! registered at start, else once it does. A node started before etcd
//! answers (systemd ordering, an etcd restarting) serves meanwhile: its
//! IPAM has no subnets and writes nothing (`/readyz` 503 `cluster`), and it
//! keeps trying to register with backoff, logging each failure. Only a
//! config the cluster refuses (it stored different subnets) ends it: 64.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::exit::{Exit, USAGE};
use crate::ipam::Ipam;
use crate::shared::Shared;

use super::store::{apply_cluster_config, ClusterNode, JoinExit};

/// The first and the longest pause between two tries.
const FIRST: Duration = Duration::from_millis(250);
const LONGEST: Duration = Duration::from_secs(5);

/// Starts the watch, block claims and releases, and fence reporting of a
/// registered node, or spawns [`register_then_start`] for one that is not.
pub fn start(cluster: &Arc<ClusterNode>, ipam: &Arc<Ipam>, shared: &Shared, exit: &JoinExit) {
    if cluster.registered() {
        start_tasks(cluster, ipam, shared);
        return;
    }
    let (c, i, s, e) = (cluster.clone(), ipam.clone(), shared.clone(), exit.clone());
    shared.tracker.spawn(register_then_start(c, i, s, e));
}

fn start_tasks(cluster: &ClusterNode, ipam: &Arc<Ipam>, shared: &Shared) {
    let isolation = shared.isolation.clone();
    let reload = move || {
        if let Err(e) = isolation.reload() {
            tracing::warn!(error = %e, "reloading isolations another node changed failed");
        }
    };
    cluster.start(ipam, Some(shared.events.clone()), Some(Box::new(reload)));
}

/// Tries to register until it does (or the process stops), then reads the
/// cluster, stores the config and starts the tasks. Cancel-safe.
async fn register_then_start(
    cluster: Arc<ClusterNode>,
    ipam: Arc<Ipam>,
    shared: Shared,
    exit: JoinExit,
) {
    let mut pause = FIRST;
    for attempt in 1u64.. {
        let (c, i, config) = (cluster.clone(), ipam.clone(), shared.config.clone());
        let tried = tokio::task::spawn_blocking(move || enter(&c, &i, &config)).await;
        let e = match tried {
            Ok(Ok(())) => break,
            Ok(Err(e)) if e.code == USAGE => {
                tracing::error!(error = %e, "the cluster refused this node's config");
                *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                shared.cancel.cancel();
                return;
            }
            Ok(Err(e)) => e.message,
            Err(e) => e.to_string(),
        };
        tracing::warn!(attempt, error = %e, retry_in = ?pause, "cluster: not registered yet");
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LONGEST);
    }
    if let Err(e) = shared.isolation.reload() {
        tracing::warn!(error = %e, "reading the cluster's isolations failed");
    }
    start_tasks(&cluster, &ipam, &shared);
    tracing::info!(node = %cluster.node.name, "registered in the cluster; serving");
}

/// One try: register and read the cluster, rebuild the index from it, and
/// store the config. Blocking.
fn enter(cluster: &ClusterNode, ipam: &Ipam, config: &Config) -> Result<(), Exit> {
    cluster
        .enter()
        .map_err(|e| Exit::unavailable(format!("cluster.etcd: {e}")))?;
    ipam.reload()
        .map_err(|e| Exit::unavailable(format!("cluster store: {e}")))?;
    apply_cluster_config(config, ipam, cluster)
}
