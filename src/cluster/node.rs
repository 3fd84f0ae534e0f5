//! This node as the cluster sees it: its registration (etcd lease and
//! epoch), the fence, the live members, the blocks it owns, and who
//! answers a client. What the IPAM asks through [`ClusterHooks`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::rendezvous::answers;
use super::replica::{Folded, Replica};
use crate::client::ClientKey;
use crate::ipam::{ClusterHooks, ClusterNodeView};
use crate::stats::Stats;

/// A subnet's owned blocks.
#[derive(Debug, Default)]
pub struct Blocks {
    /// `(first address, claim revision)` by address.
    by_first: Vec<(u32, i64)>,
    /// Inclusive ranges, newest claim first (older ones fill up first);
    /// shared: every new allocation reads them.
    newest: Arc<[(u32, u32)]>,
}

/// A claim brings a subnet's free addresses up to this many times what is
/// wanted (it is made when they fall below what is wanted).
const REFILL: u64 = 2;

/// Owned blocks per subnet.
pub type Owned = HashMap<String, Blocks>;

/// A subnet's demand on its owned blocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Demand {
    /// Free addresses left in owned blocks, as last reported.
    pub free: u64,
    /// New addresses asked for so far (each report is one).
    pub given: u64,
    /// Below this many free the claimer claims more (0: the default floor).
    pub want: u64,
}

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
    /// The live nodes with their blocks and rates, for the status page.
    view: ArcSwap<Vec<ClusterNodeView>>,
    /// Per subnet: free addresses left in owned blocks and how many the
    /// claimer wants kept free.
    free: Mutex<HashMap<String, Demand>>,
    /// Blocks being given back `(subnet, first, claim revision)`: no longer
    /// owned here, whatever the copy says, until etcd has deleted them.
    /// Held while `owned` is rebuilt, so a refresh cannot bring one back.
    retired: Mutex<HashSet<(String, u32, i64)>>,
    /// Wakes the claimer.
    pub wake: Notify,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .finish_non_exhaustive()
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
            view: ArcSwap::default(),
            free: Mutex::default(),
            retired: Mutex::default(),
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
        self.stats
            .ipam
            .cluster_nodes
            .store(r.nodes.len() as i64, Relaxed);
        self.members.store(Arc::new(members));
        let epoch = self.epoch.load(Relaxed);
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // Gone from etcd (deleted, or gone with an old registration).
        retired.retain(|(s, f, rev)| {
            r.blocks
                .get(&(s.clone(), *f))
                .is_some_and(|b| b.create_rev == *rev)
        });
        let mut owned = Owned::new();
        let mine = r.blocks_of(&self.name, epoch).into_iter().flatten();
        for ((subnet, first), create_rev) in mine {
            if !retired.is_empty() && retired.contains(&(subnet.clone(), *first, *create_rev)) {
                continue;
            }
            let blocks = match owned.get_mut(subnet) {
                Some(blocks) => blocks,
                None => owned.entry(subnet.clone()).or_default(),
            };
            blocks.by_first.push((*first, *create_rev));
        }
        self.store_owned(owned);
        drop(retired);
        self.view.store(Arc::new(self.view_of(r)));
    }

    fn store_owned(&self, mut owned: Owned) {
        let last = self.block_size - 1;
        for blocks in owned.values_mut() {
            let mut newest = blocks.by_first.clone();
            newest.sort_unstable_by_key(|(_, rev)| std::cmp::Reverse(*rev));
            blocks.newest = newest.into_iter().map(|(f, _)| (f, f + last)).collect();
        }
        self.owned.store(Arc::new(owned));
    }

    /// Stops owning the block of `subnet` at `first` (claimed at `claim`)
    /// here, before it is deleted in etcd: nothing is allocated in it from
    /// now on. Call under the IPAM's state lock (see `Ipam::retire_if_idle`).
    pub fn retire(&self, subnet: &str, first: u32, claim: i64) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.insert((subnet.to_owned(), first, claim));
        let mut owned = Owned::new();
        for (s, b) in self.owned.load().iter() {
            let kept: Vec<(u32, i64)> = b
                .by_first
                .iter()
                .copied()
                .filter(|(f, _)| !(s == subnet && *f == first))
                .collect();
            if !kept.is_empty() {
                owned.entry(s.clone()).or_default().by_first = kept;
            }
        }
        self.store_owned(owned);
    }

    /// The block was not deleted (etcd failed or refused): it is owned
    /// again as the copy shows it.
    pub fn unretire(&self, subnet: &str, first: u32, claim: i64, r: &Replica) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(subnet.to_owned(), first, claim));
        self.refresh(r);
    }

    /// After a batch of watched changes: this node's blocks are recomputed
    /// only when membership or its own blocks changed; another node's
    /// claims and rates rebuild the view alone (a line per node).
    pub fn changed(&self, r: &Replica, out: &Folded) {
        if out.members || out.owners.contains(&self.name) {
            self.refresh(r);
        } else {
            self.view.store(Arc::new(self.view_of(r)));
        }
    }

    fn view_of(&self, r: &Replica) -> Vec<ClusterNodeView> {
        r.nodes
            .iter()
            .map(|(n, epoch)| {
                let rates = r.rates.get(n);
                ClusterNodeView {
                    name: n.clone(),
                    this: *n == self.name,
                    blocks: r.blocks_of(n, *epoch).map_or(0, |b| b.len() as u64),
                    dhcp_acks_per_s: rates.map(|r| r.dhcp_acks_per_s),
                    api_requests_per_s: rates.map(|r| r.api_requests_per_s),
                }
            })
            .collect()
    }

    /// The claim revision of the owned block holding `ip`, if owned.
    pub fn block_of(&self, subnet: &str, ip: u32) -> Option<(u32, i64)> {
        let first = ip & !(self.block_size - 1);
        let owned = self.owned.load();
        let blocks = &owned.get(subnet)?.by_first;
        blocks
            .binary_search_by_key(&first, |b| b.0)
            .ok()
            .map(|i| blocks[i])
    }

    /// The owned blocks of `subnet`: `(first address, claim revision)`.
    pub fn owned_blocks(&self, subnet: &str) -> Vec<(u32, i64)> {
        self.owned
            .load()
            .get(subnet)
            .map(|b| b.by_first.clone())
            .unwrap_or_default()
    }

    pub fn owned_count(&self, subnet: &str) -> usize {
        self.owned
            .load()
            .get(subnet)
            .map_or(0, |b| b.by_first.len())
    }

    /// The fewest free addresses worth keeping in a subnet's blocks.
    fn floor(&self) -> u64 {
        u64::from(self.block_size / 2).max(2)
    }

    /// `subnet`'s demand as last reported, its `want` at least the floor.
    pub fn demand(&self, subnet: &str) -> Demand {
        let map = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut d = map.get(subnet).copied().unwrap_or_default();
        d.want = d.want.max(self.floor());
        d
    }

    /// Keep `want` addresses free in `subnet`'s blocks (the claimer, from
    /// the recent allocation rate).
    pub fn set_want(&self, subnet: &str, want: u64) {
        let mut map = self.free.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(subnet.to_owned()).or_default().want = want;
    }

    /// `addresses` more are free in `subnet`'s blocks (just claimed): the
    /// next count before the next report.
    pub fn claimed(&self, subnet: &str, addresses: u64) {
        let mut map = self.free.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(subnet.to_owned()).or_default().free += addresses;
    }

    /// The live members, this node included.
    pub fn member_count(&self) -> usize {
        self.members.load().len()
    }

    /// How many blocks `subnet` needs now: one if none is owned, none while
    /// its free addresses last what is wanted, else enough to bring them up
    /// to [`REFILL`] times that, so a steady rate costs a claim per second
    /// or so rather than one per block.
    pub fn blocks_needed(&self, subnet: &str) -> usize {
        if self.owned_count(subnet) == 0 {
            return 1;
        }
        refill(self.demand(subnet), self.block_size)
    }
}

/// Blocks of `size` to claim for demand `d` (see [`Node::blocks_needed`]).
fn refill(d: Demand, size: u32) -> usize {
    if d.free >= d.want {
        return 0;
    }
    let short = (REFILL * d.want).saturating_sub(d.free);
    short.div_ceil(u64::from(size)) as usize
}

impl ClusterHooks for Node {
    fn owns(&self, subnet: &str, ip: u32) -> bool {
        !self.is_fenced() && self.block_of(subnet, ip).is_some()
    }

    fn owned(&self, subnet: &str) -> Arc<[(u32, u32)]> {
        if self.is_fenced() {
            return Arc::default();
        }
        self.owned
            .load()
            .get(subnet)
            .map(|b| b.newest.clone())
            .unwrap_or_default()
    }

    fn free_left(&self, subnet: &str, free: u64) {
        let low = {
            let mut map = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let d = match map.get_mut(subnet) {
                Some(d) => d,
                None => map.entry(subnet.to_owned()).or_default(),
            };
            d.free = free;
            d.given += 1;
            free < d.want.max(self.floor())
        };
        if low {
            self.wake.notify_one();
        }
    }

    fn answers(&self, client: &ClientKey) -> bool {
        let members = self.members.load();
        members.len() <= 1 || answers(&members, &self.name, client)
    }

    fn nodes(&self) -> Vec<ClusterNodeView> {
        self.view.load().to_vec()
    }

    fn fenced(&self) -> Option<String> {
        if self.epoch.load(Relaxed) == 0 {
            return Some(format!(
                "cluster node '{}' is not registered in etcd yet, so it writes nothing",
                self.name
            ));
        }
        self.is_fenced().then(|| {
            format!(
                "cluster node '{}' has no recent etcd keepalive: its lease may expire, so it writes nothing",
                self.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing is claimed while the free addresses last what is wanted;
    /// below it, a claim brings them up to twice that.
    #[test]
    fn a_claim_waits_for_the_want_and_then_refills_to_twice_it() {
        let d = |free, want| Demand {
            free,
            want,
            given: 0,
        };
        assert_eq!(refill(d(4000, 4000), 16), 0);
        assert_eq!(refill(d(3999, 4000), 16), 251);
        assert_eq!(refill(d(0, 8), 16), 1);
        assert_eq!(refill(d(5, 0), 16), 0);
    }
}
