//! `vpcbox cluster leave`: gives a node's registration and blocks back at
//! once by revoking its etcd lease (everything the node holds in etcd is
//! attached to it), so the survivors claim its blocks and answer its
//! clients now rather than after `lease_ttl`. For a node that stopped
//! without leaving (kill -9, a lost machine); a running node leaves by
//! itself when stopped (SIGTERM), and revoking the lease of one that runs
//! would only make it register again, so that is refused unless forced.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use super::etcd::Etcd;
use super::replica::BlockValue;
use crate::config::ClusterConfig;
use crate::ipam::IpamError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The node was not registered: nothing to give back.
    NotRegistered,
    /// Its lease is revoked; `blocks` went back to the pool.
    Revoked { blocks: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    #[error("cluster node '{0}' is running (its etcd lease was just renewed): stop it instead (SIGTERM; it gives its blocks back as it stops), or pass --force")]
    Running(String),
    #[error("{0}")]
    Etcd(#[from] IpamError),
}

/// Makes node `config.node` leave. Unless `force`, first watches its lease
/// for a keepalive period: a lease that is renewed belongs to a node that
/// runs. Blocking (up to `lease_ttl / 3` + 2 s).
pub fn leave(config: &ClusterConfig, force: bool) -> Result<Left, LeaveError> {
    let etcd = Etcd::connect(&config.etcd, &config.prefix)?;
    let (mut c, key) = (etcd.client(), etcd.keys.node(&config.node));
    let got = etcd.block(async move { c.get(key, None).await })?;
    let Some(lease) = got.kvs().first().map(|kv| kv.lease()) else {
        return Ok(Left::NotRegistered);
    };
    if !force && renewed(&etcd, lease, config.lease_ttl / 3 + Duration::from_secs(2))? {
        return Err(LeaveError::Running(config.node.clone()));
    }
    let blocks = owned_blocks(&etcd, &config.node)?;
    let mut c = etcd.client();
    etcd.block(async move { c.lease_revoke(lease).await })?;
    tracing::info!(node = %config.node, blocks, "node left the cluster");
    Ok(Left::Revoked { blocks })
}

/// Whether `lease`'s TTL goes up (a keepalive) within `watch`; a lease
/// that expires meanwhile was not renewed.
fn renewed(etcd: &Etcd, lease: i64, watch: Duration) -> Result<bool, IpamError> {
    let t0 = Instant::now();
    let mut last = i64::MAX;
    while t0.elapsed() < watch {
        let mut c = etcd.client();
        let ttl = etcd
            .block(async move { c.lease_time_to_live(lease, None).await })?
            .ttl();
        if ttl <= 0 {
            return Ok(false);
        }
        if ttl > last {
            return Ok(true);
        }
        last = ttl;
        std::thread::sleep(Duration::from_millis(400));
    }
    Ok(false)
}

/// How many blocks `node` holds.
fn owned_blocks(etcd: &Etcd, node: &str) -> Result<usize, IpamError> {
    let mut c = etcd.client();
    let prefix = [etcd.keys.all(), b"blocks/".to_vec()].concat();
    let got =
        etcd.block(async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<BlockValue>(kv.value()).ok())
        .filter(|b| b.node == node)
        .count())
}
