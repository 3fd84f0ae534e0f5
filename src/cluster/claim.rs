//! Claiming blocks: `blocks/<subnet>/<first-ip>` created (create_revision
//! == 0) on the node's lease, ahead of need: when a subnet's owned blocks
//! hold fewer free addresses than about a second at the recent allocation
//! rate, the claimer takes enough unclaimed blocks in one txn, so a
//! DISCOVER never waits on etcd.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::node::Node;
use super::rendezvous::weight;
use super::replica::{BlockValue, Folded, Replica};
use crate::ipam::{ClusterHooks, Ipam, SubnetSpec};

/// The first address of every block that holds part of a pool of `spec`.
pub fn blocks_of(spec: &SubnetSpec, size: u32) -> Vec<u32> {
    let mut firsts = Vec::new();
    for p in &spec.pools {
        let (start, end) = (u32::from(p.start), u32::from(p.end));
        let mut first = start & !(size - 1);
        loop {
            if firsts.last() != Some(&first) {
                firsts.push(first);
            }
            match first.checked_add(size) {
                Some(next) if next <= end => first = next,
                _ => break,
            }
        }
    }
    firsts.sort_unstable();
    firsts.dedup();
    firsts
}

/// How long the free addresses in owned blocks should last at the
/// recent allocation rate: claims run ahead of need by this much.
const AHEAD: Duration = Duration::from_secs(1);

/// The most blocks one claim txn takes (each a nested txn: one op).
const MAX_PER_TXN: usize = 64;

pub struct Claimer {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
    pub node: Arc<Node>,
    pub ipam: Weak<Ipam>,
    /// Per subnet: its pools and their blocks in this node's order (fixed
    /// for a node name and block size; ranked again when the pools change).
    pub ranked: Mutex<Ranked>,
}

/// Subnet id → (its pools when ranked, their blocks ranked).
pub type Ranked = HashMap<String, (Vec<crate::ipam::PoolRange>, Arc<Vec<u32>>)>;

/// One subnet's recent allocation rate, from the node's count of
/// addresses asked for.
#[derive(Debug, Default)]
struct Rate {
    at: Option<Instant>,
    given: u64,
    per_s: f64,
}

impl Rate {
    /// Takes the count `given` at `now`; returns how many addresses to
    /// keep free. Up at once, down slowly: a burst is met at once, and a
    /// lull keeps some slack.
    fn want(&mut self, given: u64, now: Instant) -> u64 {
        match self.at {
            Some(at) if now.duration_since(at) < Duration::from_millis(250) => {}
            Some(at) => {
                let r =
                    given.saturating_sub(self.given) as f64 / now.duration_since(at).as_secs_f64();
                self.per_s = if r > self.per_s {
                    r
                } else {
                    0.7 * self.per_s + 0.3 * r
                };
                (self.at, self.given) = (Some(now), given);
            }
            None => (self.at, self.given) = (Some(now), given),
        }
        (self.per_s * AHEAD.as_secs_f64()).ceil() as u64
    }
}

impl Claimer {
    /// Claims blocks whenever a subnet runs low (woken by the IPAM, or
    /// every second), enough for [`AHEAD`] at the recent rate, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut rates: HashMap<String, Rate> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.node.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.node.fenced().is_some() {
                continue;
            }
            let Some(ipam) = self.ipam.upgrade() else {
                return;
            };
            for spec in ipam.subnets() {
                let given = self.node.demand(&spec.id).given;
                let rate = rates.entry(spec.id.clone()).or_default();
                self.node
                    .set_want(&spec.id, rate.want(given, Instant::now()));
                let n = self.node.blocks_needed(&spec.id);
                if n > 0 {
                    self.claim(&ipam, &spec, n).await;
                }
            }
        }
    }

    /// Claims up to `n` blocks of `spec` in one txn (each block its own
    /// nested txn, so one taken by another node first fails alone);
    /// returns how many it got (the watch shows who took the others).
    pub async fn claim(
        self: &Arc<Self>,
        ipam: &Arc<Ipam>,
        spec: &Arc<SubnetSpec>,
        n: usize,
    ) -> usize {
        let size = self.node.block_size;
        // Off the runtime's workers: it takes the IPAM's lock.
        let (this, ipam, spec2) = (self.clone(), ipam.clone(), spec.clone());
        let picked = tokio::task::spawn_blocking(move || this.pick(&ipam, &spec2, n)).await;
        let picked = picked.unwrap_or_default();
        if picked.is_empty() {
            return 0;
        }
        let keys = &self.etcd.keys;
        let (epoch, lease) = (self.node.epoch.load(Relaxed), self.node.lease.load(Relaxed));
        let value = serde_json::json!(BlockValue {
            node: self.node.name.clone(),
            epoch
        })
        .to_string();
        let claims = picked.iter().map(|first| {
            let key = keys.block(&spec.id, *first);
            TxnOp::txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            )
        });
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys.node(&self.node.name),
                CompareOp::Equal,
                epoch,
            )])
            .and_then(claims.collect::<Vec<_>>());
        let mut c = self.etcd.client();
        let res = tokio::time::timeout(Duration::from_secs(2), c.txn(txn)).await;
        let Ok(Ok(resp)) = res else { return 0 };
        if !resp.succeeded() {
            return 0;
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let won: Vec<u32> = picked
            .iter()
            .zip(resp.op_responses())
            .filter(|(_, r)| matches!(r, TxnOpResponse::Txn(t) if t.succeeded()))
            .map(|(f, _)| *f)
            .collect();
        {
            let mut r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
            for first in &won {
                let key = keys.block(&spec.id, *first);
                r.put_raw(
                    keys,
                    &key,
                    value.as_bytes(),
                    (rev, rev),
                    None,
                    &mut Folded::default(),
                );
            }
            self.node.refresh(&r);
        }
        self.node
            .claimed(&spec.id, won.len() as u64 * u64::from(size));
        tracing::info!(subnet = %spec.id, blocks = won.len(), tried = picked.len(), size, "claimed blocks");
        won.len()
    }

    /// `spec`'s blocks in the order this node tries them: ranked by a hash
    /// with its name, so nodes claiming at once rarely want the same block.
    /// Ranked once per pools (a pool may hold many thousand blocks).
    fn ranked(&self, spec: &SubnetSpec) -> Arc<Vec<u32>> {
        let mut cache = self.ranked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pools, ranked)) = cache.get(&spec.id) {
            if *pools == spec.pools {
                return ranked.clone();
            }
        }
        let mut blocks = blocks_of(spec, self.node.block_size);
        blocks.sort_by_cached_key(|f| weight(&self.node.name, &f.to_be_bytes()));
        let ranked = Arc::new(blocks);
        cache.insert(spec.id.clone(), (spec.pools.clone(), ranked.clone()));
        ranked
    }

    /// Up to `n` unclaimed blocks, wholly unused ones first, else those
    /// with the most never-used addresses; each node looks in an order of
    /// its own (blocks ranked by a hash with its name), so nodes rarely
    /// race for one block. Never more than a share of what is left, so a
    /// busy node does not take the blocks the others will need.
    fn pick(&self, ipam: &Ipam, spec: &SubnetSpec, n: usize) -> Vec<u32> {
        let size = self.node.block_size;
        let claimed: Vec<u32> = {
            let r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
            r.blocks
                .range((spec.id.clone(), 0)..=(spec.id.clone(), u32::MAX))
                .map(|((_, f), _)| *f)
                .collect()
        };
        let open: Vec<u32> = self
            .ranked(spec)
            .iter()
            .copied()
            .filter(|f| claimed.binary_search(f).is_err())
            .collect();
        let share = (open.len() / (2 * self.node.member_count().max(1))).max(1);
        let n = n.min(share).min(MAX_PER_TXN);
        let mut picked = Vec::with_capacity(n);
        let mut partial = Vec::new();
        for f in open {
            let free = ipam.free_in(&spec.id, f, f + (size - 1));
            if free == u64::from(size) {
                picked.push(f);
                if picked.len() == n {
                    return picked;
                }
            } else {
                partial.push((free, f));
            }
        }
        partial.sort_by_key(|(free, _)| std::cmp::Reverse(*free));
        let rest = n - picked.len();
        for (i, (free, f)) in partial.into_iter().take(rest).enumerate() {
            // Blocks with nothing never-used hold only expired leases to
            // reuse: one at a time is enough.
            if free == 0 && (i > 0 || !picked.is_empty()) {
                break;
            }
            picked.push(f);
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_free_addresses_follow_the_rate_up_at_once_and_down_slowly() {
        let mut r = Rate::default();
        let t = Instant::now();
        assert_eq!(r.want(0, t), 0);
        assert_eq!(r.want(5000, t + Duration::from_millis(500)), 10_000);
        // Too soon to measure: unchanged.
        assert_eq!(r.want(5100, t + Duration::from_millis(600)), 10_000);
        let down = r.want(5100, t + Duration::from_millis(1500));
        assert!((6000..10_000).contains(&down), "{down}");
    }
}
