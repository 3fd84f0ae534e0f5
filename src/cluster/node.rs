//! This node as the cluster sees it: its registration (etcd lease and
//! epoch), the fence, the live members, the blocks it owns, and who
//! answers a client. What the IPAM asks through [`ClusterHooks`].

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::rendezvous::answers;
use super::replica::Replica;
use crate::client::ClientKey;
use crate::ipam::ClusterHooks;
use crate::stats::Stats;

/// Owned blocks per subnet: `(first address, claim revision)`, sorted.
pub type Owned = HashMap<String, Vec<(u32, i64)>>;

pub struct Node {
    pub name: String,
    pub ttl: Duration,
    pub block_size: u32,
    /// The etcd lease every key of this node is attached to.
    pub lease: AtomicI64,
    /// The create revision of `nodes/<name>`: every txn compares it, so a
    /// node whose lease expired (its key deleted) can write nothing.
    pub epoch: AtomicI64,
    started: Instant,
    /// Writes are allowed until this many ms after `started`: the send time
    /// of the last answered keepalive + the TTL − a margin.
    until_ms: AtomicU64,
    members: ArcSwap<Vec<String>>,
    owned: ArcSwap<Owned>,
    /// Free addresses left in owned blocks per subnet, as last reported.
    free: Mutex<HashMap<String, u64>>,
    /// Wakes the claimer.
    pub wake: Notify,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Node {
    pub fn new(name: &str, ttl: Duration, block_size: u32, stats: Arc<Stats>) -> Self {
        Self {
            name: name.to_owned(),
            ttl,
            block_size,
            lease: AtomicI64::new(0),
            epoch: AtomicI64::new(0),
            started: Instant::now(),
            until_ms: AtomicU64::new(0),
            members: ArcSwap::from_pointee(vec![name.to_owned()]),
            owned: ArcSwap::default(),
            free: Mutex::default(),
            wake: Notify::new(),
            stats,
        }
    }

    /// The fence margin: a fifth of the TTL, so the node stops writing
    /// well before etcd expires its lease and the others take over.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// A keepalive sent at `sent` was answered with `ttl` seconds left.
    pub fn extend(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl).saturating_duration_since(self.started) - self.margin().min(ttl);
        self.until_ms.fetch_max(until.as_millis() as u64, Release);
    }

    /// Fences the node at once (its lease is gone).
    pub fn fence_now(&self) {
        self.until_ms.store(0, Release);
    }

    pub fn is_fenced(&self) -> bool {
        self.started.elapsed().as_millis() as u64 >= self.until_ms.load(Acquire)
    }

    /// Recomputes members and owned blocks from the copy.
    pub fn refresh(&self, r: &Replica) {
        let mut members: Vec<String> = r.nodes.keys().cloned().collect();
        if !members.contains(&self.name) {
            members.push(self.name.clone());
        }
        self.stats.ipam.cluster_nodes.store(r.nodes.len() as i64, Relaxed);
        self.members.store(Arc::new(members));
        let epoch = self.epoch.load(Relaxed);
        let mut owned = Owned::new();
        for ((subnet, first), b) in &r.blocks {
            if b.owner.node == self.name && b.owner.epoch == epoch {
                owned
                    .entry(subnet.clone())
                    .or_default()
                    .push((*first, b.create_rev));
            }
        }
        self.owned.store(Arc::new(owned));
    }

    /// The claim revision of the owned block holding `ip`, if owned.
    pub fn block_of(&self, subnet: &str, ip: u32) -> Option<(u32, i64)> {
        let first = ip & !(self.block_size - 1);
        let owned = self.owned.load();
        let blocks = owned.get(subnet)?;
        blocks
            .binary_search_by_key(&first, |b| b.0)
            .ok()
            .map(|i| blocks[i])
    }

    pub fn owned_count(&self, subnet: &str) -> usize {
        self.owned.load().get(subnet).map_or(0, Vec::len)
    }

    /// Whether `subnet` needs another block: none owned, or few free left.
    pub fn needs_block(&self, subnet: &str) -> bool {
        if self.owned_count(subnet) == 0 {
            return true;
        }
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.get(subnet)
            .is_some_and(|n| *n < u64::from(self.block_size / 2).max(2))
    }
}

impl ClusterHooks for Node {
    fn owns(&self, subnet: &str, ip: u32) -> bool {
        !self.is_fenced() && self.block_of(subnet, ip).is_some()
    }

    fn owned(&self, subnet: &str) -> Vec<(u32, u32)> {
        if self.is_fenced() {
            return Vec::new();
        }
        let last = self.block_size - 1;
        self.owned
            .load()
            .get(subnet)
            .map(|b| b.iter().map(|(f, _)| (*f, f + last)).collect())
            .unwrap_or_default()
    }

    fn free_left(&self, subnet: &str, free: u64) {
        let low = {
            let mut map = self.free.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(subnet.to_owned(), free);
            free < u64::from(self.block_size / 2).max(2)
        };
        if low {
            self.wake.notify_one();
        }
    }

    fn answers(&self, client: &ClientKey) -> bool {
        let members = self.members.load();
        members.len() <= 1 || answers(&members, &self.name, client)
    }

    fn fenced(&self) -> Option<String> {
        self.is_fenced().then(|| {
            format!(
                "cluster node '{}' has no recent etcd keepalive: its lease may expire, so it writes nothing",
                self.name
            )
        })
    }
}
