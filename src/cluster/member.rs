//! Membership: registering `nodes/<node>` on an etcd lease of `lease_ttl`,
//! and keeping it alive every TTL/3. Each answered keepalive extends the
//! fence; a lost lease fences the node at once and registers it anew.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, TxnOp};
use tokio_util::sync::CancellationToken;

use super::etcd::{storage, txn, Etcd};
use super::node::Node;
use crate::ipam::IpamError;

/// Registers the node: a fresh lease, and `nodes/<node>` created on it
/// (never overwritten: while a previous run's key lives, i.e. up to one
/// TTL after it died, this waits; past `wait`, the name is taken).
pub fn register(etcd: &Etcd, node: &Node, wait: Duration) -> Result<(), IpamError> {
    let deadline = Instant::now() + wait;
    loop {
        let (c, key, ttl) = (etcd.client(), etcd.keys.node(&node.name), node.ttl);
        let value = serde_json::json!({"node": node.name}).to_string();
        let sent = Instant::now();
        let got = etcd.block(attempt(c, key, value, ttl))?;
        if let Some((lease, epoch)) = got {
            node.lease.store(lease, Relaxed);
            node.epoch.store(epoch, Relaxed);
            node.extend(sent, ttl);
            tracing::info!(node = %node.name, lease, epoch, "registered in the cluster");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(IpamError::Storage(format!(
                "cluster node name '{}' is registered by another live vpcbox",
                node.name
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One try: `Some((lease, epoch))`, or `None` if the key exists (the
/// fresh lease is revoked again).
async fn attempt(
    mut c: Client,
    key: Vec<u8>,
    value: String,
    ttl: Duration,
) -> Result<Option<(i64, i64)>, etcd_client::Error> {
    let lease = c.lease_grant(ttl.as_secs() as i64, None).await?.id();
    let put = TxnOp::put(
        key.clone(),
        value,
        Some(PutOptions::new().with_lease(lease)),
    );
    let when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
    match txn(c.clone(), when, vec![put]).await? {
        Some(rev) => Ok(Some((lease, rev))),
        None => {
            let _ = c.lease_revoke(lease).await;
            Ok(None)
        }
    }
}

/// Keeps the lease alive every TTL/3 until `cancel`; on a lost lease,
/// registers again (with a new epoch: the old blocks went with the lease).
pub async fn keepalive(etcd: Arc<Etcd>, node: Arc<Node>, cancel: CancellationToken) {
    let every = node.ttl / 3;
    while !cancel.is_cancelled() {
        let mut c = etcd.client();
        let stream =
            tokio::time::timeout(every, c.lease_keep_alive(node.lease.load(Relaxed))).await;
        let (mut keeper, mut stream) = match stream {
            Ok(Ok(s)) => s,
            // etcd-client opens the stream with one keepalive and reports a
            // TTL of 0 (the lease expired, e.g. during a partition) so.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(why))) => {
                tracing::warn!(node = %node.name, %why, "cluster lease lost; registering again");
                node.fence_now();
                reregister(&etcd, &node, &cancel).await;
                continue;
            }
            _ => {
                pause(&cancel, every / 2).await;
                continue;
            }
        };
        loop {
            let sent = Instant::now();
            let answer = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    node.extend(sent, Duration::from_secs(r.ttl() as u64))
                }
                Ok(Ok(Some(_))) => {
                    tracing::warn!(node = %node.name, "cluster lease lost; registering again");
                    node.fence_now();
                    reregister(&etcd, &node, &cancel).await;
                    break;
                }
                _ => break,
            }
            let left = every.saturating_sub(sent.elapsed());
            if !pause(&cancel, left).await {
                return;
            }
        }
    }
    // Leaving: give the lease back so the others take over at once.
    let mut c = etcd.client();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        c.lease_revoke(node.lease.load(Relaxed)),
    )
    .await;
}

async fn reregister(etcd: &Arc<Etcd>, node: &Arc<Node>, cancel: &CancellationToken) {
    while !cancel.is_cancelled() {
        let (c, key, ttl) = (etcd.client(), etcd.keys.node(&node.name), node.ttl);
        let value = serde_json::json!({"node": node.name}).to_string();
        let sent = Instant::now();
        match attempt(c, key, value, ttl).await {
            Ok(Some((lease, epoch))) => {
                node.lease.store(lease, Relaxed);
                node.epoch.store(epoch, Relaxed);
                node.extend(sent, ttl);
                node.wake.notify_one();
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %storage(e), "registering again failed"),
        }
        pause(cancel, Duration::from_millis(500)).await;
    }
}

/// Sleeps `d`; false if cancelled meanwhile.
pub async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
