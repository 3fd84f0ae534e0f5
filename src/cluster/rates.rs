//! Each node's rates (DHCP ACKs/s, gateway requests/s) in the value of its
//! own `nodes/<node>` key, rewritten every 2 s while they change: one txn
//! fenced by the node's registration, never a write per packet. `cluster
//! status` and the dashboard read them from there.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};
use tokio_util::sync::CancellationToken;

use super::etcd::{txn, Etcd, CALL_TIMEOUT};
use super::member::pause;
use super::node::Node;
use super::replica::{NodeRates, NodeValue};
use crate::stats::{DhcpKind, DhcpOutcome, Stats};

/// How often a node's rates are measured (and rewritten if they changed).
const EVERY: Duration = Duration::from_secs(2);

/// (DHCP ACKs, gateway requests) so far.
fn totals(stats: &Stats) -> (u64, u64) {
    let acks = DhcpKind::ALL
        .iter()
        .map(|k| stats.dhcp.packets(*k, DhcpOutcome::Ack))
        .sum();
    let requests = stats
        .gateway
        .routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| r.total())
        .sum();
    (acks, requests)
}

/// Per second over `secs`, to a tenth.
fn per_s(delta: u64, secs: f64) -> f64 {
    (delta as f64 / secs.max(0.001) * 10.0).round() / 10.0
}

/// Measures and publishes this node's rates every [`EVERY`] until `cancel`.
pub async fn publish(etcd: Arc<Etcd>, node: Arc<Node>, cancel: CancellationToken) {
    let (mut then, mut before) = (Instant::now(), totals(&node.stats));
    let mut sent: Option<NodeRates> = None;
    while pause(&cancel, EVERY).await {
        let (now, after) = (Instant::now(), totals(&node.stats));
        let secs = now.duration_since(then).as_secs_f64();
        let rates = NodeRates {
            dhcp_acks_per_s: per_s(after.0.saturating_sub(before.0), secs),
            api_requests_per_s: per_s(after.1.saturating_sub(before.1), secs),
        };
        (then, before) = (now, after);
        if node.is_fenced() || sent == Some(rates) {
            continue;
        }
        let key = etcd.keys.node(&node.name);
        let value = NodeValue {
            node: node.name.clone(),
            rates: Some(rates),
        };
        let Ok(value) = serde_json::to_string(&value) else {
            continue;
        };
        let (epoch, lease) = (node.epoch.load(Relaxed), node.lease.load(Relaxed));
        // Only while this registration lives: never recreates the key.
        let when = vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            epoch,
        )];
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let done = tokio::time::timeout(CALL_TIMEOUT, txn(etcd.client(), when, vec![put])).await;
        if let Ok(Ok(Some(_))) = done {
            sent = Some(rates);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_to_a_tenth_and_the_value_reads_without_them() {
        assert_eq!(per_s(25, 2.0), 12.5);
        assert_eq!(per_s(1, 3.0), 0.3);
        assert_eq!(per_s(5, 0.0), 5000.0);
        let old: NodeValue = serde_json::from_str(r#"{"node":"a"}"#).unwrap();
        assert_eq!((old.node.as_str(), old.rates), ("a", None));
    }
}
