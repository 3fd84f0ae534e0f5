//! Giving blocks back: a live node deletes a block it holds when nothing
//! in it is held, offered or being written, and the rest of its blocks
//! keep the reserve it needs (two blocks' worth, what it allocated in the
//! last ten seconds, or what the claimer wants kept free, whichever is
//! most), so after a burst, or on a node that joined late, the pool goes
//! to whoever needs it rather than sitting on one node until its lease dies.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use etcd_client::{Compare, CompareOp, TxnOp};
use tokio_util::sync::CancellationToken;

use super::etcd::{txn, Etcd, CALL_TIMEOUT};
use super::member::pause;
use super::node::Node;
use super::replica::{Folded, Replica};
use crate::ipam::{BlockUse, Ipam};

/// How often the blocks are looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Looks the allocation rate is measured over (ten seconds).
const WINDOW: usize = 10;

/// One owned block as the releaser sees it.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub first: u32,
    pub claim: i64,
    pub use_: BlockUse,
}

/// The blocks to give back so that the others still hold `need` usable
/// addresses: idle ones only, those with the fewest never-used addresses
/// first (the claimer wants never-used ones). Pure.
pub fn surplus(blocks: &[Held], need: u64) -> Vec<Held> {
    let mut total: u64 = blocks.iter().map(|b| b.use_.usable).sum();
    let mut idle: Vec<Held> = blocks.iter().copied().filter(|b| b.use_.idle()).collect();
    idle.sort_by_key(|b| (b.use_.never_used, std::cmp::Reverse(b.claim)));
    let mut out = Vec::new();
    for b in idle {
        if total.saturating_sub(b.use_.usable) >= need {
            total -= b.use_.usable;
            out.push(b);
        }
    }
    out
}

/// Addresses taken in the window: the sum of the rises of `in_use`.
fn taken(history: &VecDeque<u64>) -> u64 {
    history
        .iter()
        .zip(history.iter().skip(1))
        .map(|(a, b)| b.saturating_sub(*a))
        .sum()
}

pub struct Releaser {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
    pub node: Arc<Node>,
    pub ipam: Weak<Ipam>,
}

impl Releaser {
    /// Looks every [`EVERY`] for blocks to give back, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut history: HashMap<String, VecDeque<u64>> = HashMap::new();
        while pause(&cancel, EVERY).await {
            let Some(ipam) = self.ipam.upgrade() else {
                return;
            };
            if self.node.is_fenced() {
                continue;
            }
            for spec in ipam.subnets() {
                // Off the runtime's workers: it takes the IPAM's lock.
                let (this, ipam2, id) = (self.clone(), ipam.clone(), spec.id.clone());
                let held = tokio::task::spawn_blocking(move || this.held(&ipam2, &id)).await;
                let Ok(held) = held else { continue };
                let h = history.entry(spec.id.clone()).or_default();
                h.push_back(held.iter().map(|b| b.use_.in_use).sum());
                if h.len() > WINDOW + 1 {
                    h.pop_front();
                }
                // Never below what the claimer wants kept free: what it just
                // claimed ahead of the rate is idle, not surplus.
                let need = taken(h)
                    .max(2 * u64::from(self.node.block_size))
                    .max(self.node.demand(&spec.id).want);
                for b in surplus(&held, need) {
                    self.release(&ipam, &spec.id, b).await;
                }
            }
        }
    }

    fn held(&self, ipam: &Ipam, subnet: &str) -> Vec<Held> {
        let blocks = self.node.owned_blocks(subnet);
        let last = self.node.block_size - 1;
        let ranges: Vec<(u32, u32)> = blocks.iter().map(|(f, _)| (*f, f + last)).collect();
        let uses = ipam.blocks_use(subnet, &ranges, SystemTime::now());
        blocks
            .iter()
            .zip(uses)
            .map(|(&(first, claim), use_)| Held { first, claim, use_ })
            .collect()
    }

    /// Gives `b` back: first no longer allocated from here (if still idle),
    /// then deleted in etcd while this registration and that claim hold.
    /// A failed delete makes it owned again: a write that raced a delete
    /// which did commit fails on its block compare.
    async fn release(self: &Arc<Self>, ipam: &Arc<Ipam>, subnet: &str, b: Held) {
        let (this, ipam, id) = (self.clone(), ipam.clone(), subnet.to_owned());
        let range = (b.first, b.first + (self.node.block_size - 1));
        let retired = tokio::task::spawn_blocking(move || {
            ipam.retire_if_idle(&id, range, SystemTime::now(), || {
                this.node.retire(&id, b.first, b.claim)
            })
        })
        .await;
        if !matches!(retired, Ok(true)) {
            return;
        }
        let keys = &self.etcd.keys;
        let key = keys.block(subnet, b.first);
        let epoch = self.node.epoch.load(Relaxed);
        let when = vec![
            Compare::create_revision(keys.node(&self.node.name), CompareOp::Equal, epoch),
            Compare::create_revision(key.clone(), CompareOp::Equal, b.claim),
        ];
        let delete = TxnOp::delete(key.clone(), None);
        let done =
            tokio::time::timeout(CALL_TIMEOUT, txn(self.etcd.client(), when, vec![delete])).await;
        let mut r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        match done {
            Ok(Ok(Some(rev))) => {
                r.delete(keys, &key, rev, None, &mut Folded::default());
                self.node.refresh(&r);
                let block = std::net::Ipv4Addr::from(b.first);
                tracing::info!(%subnet, %block, "gave back a block this node did not need");
            }
            _ => self.node.unretire(subnet, b.first, b.claim, &r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(first: u32, in_use: u64, usable: u64, never_used: u64) -> Held {
        Held {
            first,
            claim: i64::from(first as u8),
            use_: BlockUse {
                in_use,
                usable,
                never_used,
            },
        }
    }

    #[test]
    fn only_idle_blocks_go_and_the_rest_keep_the_reserve() {
        let blocks = [
            held(0, 1, 15, 0),
            held(16, 0, 16, 0),
            held(32, 0, 16, 16),
            held(48, 0, 16, 0),
            held(64, 0, 16, 4),
        ];
        let firsts = |v: Vec<Held>| v.iter().map(|b| b.first).collect::<Vec<_>>();
        // 79 usable, 32 kept: the used-up idle blocks go, the fresher ones stay.
        assert_eq!(firsts(surplus(&blocks, 32)), vec![48, 16]);
        // A large recent rate keeps everything.
        assert!(surplus(&blocks, 79).is_empty());
        // A block with one address in use is never given back.
        assert!(surplus(&blocks, 0).iter().all(|b| b.first != 0));
    }

    #[test]
    fn the_rate_counts_rises_only() {
        let h: VecDeque<u64> = [0, 40, 100, 100, 1].into_iter().collect();
        assert_eq!(taken(&h), 100);
        assert_eq!(taken(&VecDeque::new()), 0);
    }
}
