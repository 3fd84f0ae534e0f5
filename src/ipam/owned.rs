//! Whether the IPAM may write (not while the store failed or this cluster
//! node is fenced), what a cluster node may give (only addresses inside
//! its own blocks; alone, every address), how a block is used (may it be
//! given back), and what a fold finds queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::IpamError;
use super::hooks::Queued;
use super::state::{OwnedFree, State};
use super::v6::{Ia6Key, Key6};
use crate::client::ClientKey;

impl State {
    /// Err while writes are refused (the store failed, or this cluster
    /// node is fenced).
    pub fn writable(&self) -> Result<(), IpamError> {
        let fenced = || self.tuning.cluster.as_ref().and_then(|c| c.fenced());
        match self.degraded.clone().or_else(fenced) {
            Some(why) => Err(IpamError::Degraded(why)),
            None => Ok(()),
        }
    }

    /// Why subnet `s` has nothing to give: a fenced cluster node owns no
    /// block for now (temporary, not the pool's fault), else the pool is full.
    pub(super) fn exhausted(&self, s: usize) -> IpamError {
        match self.tuning.cluster.as_ref().and_then(|c| c.fenced()) {
            Some(why) => IpamError::Cluster(why),
            None => IpamError::PoolExhausted {
                subnet: self.subnets[s].spec.id.clone(),
            },
        }
    }

    /// Whether this node may give `ip` of subnet `s` to a client that does
    /// not hold it: always alone; in a cluster, inside its own blocks.
    pub fn may_give(&self, s: usize, ip: u32) -> bool {
        self.tuning
            .cluster
            .as_ref()
            .is_none_or(|c| c.owns(&self.subnets[s].spec.id, ip))
    }

    /// The next never-used address this node may give in subnet `s` (in a
    /// cluster: inside its blocks, newest first, telling the cluster how
    /// many are left).
    pub(super) fn next_free(&mut self, s: usize) -> Option<u32> {
        let Some(c) = self.tuning.cluster.clone() else {
            return self.subnets[s].next_free();
        };
        let sub = &self.subnets[s];
        let blocks = c.owned(&sub.spec.id);
        let now = Instant::now();
        let counted = self
            .owned_free
            .get(&sub.spec.id)
            .filter(|f| f.fresh(&blocks, now))
            .map(|f| f.left);
        let left =
            counted.unwrap_or_else(|| blocks.iter().map(|&(lo, hi)| sub.free_count(lo, hi)).sum());
        let found = match left {
            0 => None,
            _ => blocks.iter().find_map(|&(lo, hi)| sub.free_in(lo, hi)),
        };
        let left = left.saturating_sub(u64::from(found.is_some()));
        c.free_left(&sub.spec.id, left);
        match self.owned_free.get_mut(&sub.spec.id) {
            Some(f) if counted.is_some() => {
                f.left = left;
                f.since += 1;
            }
            _ => {
                let f = OwnedFree {
                    blocks,
                    left,
                    at: now,
                    since: 0,
                };
                self.owned_free.insert(sub.spec.id.clone(), f);
            }
        }
        found
    }
}

/// A kept count of the free addresses in a node's blocks is counted again
/// after this many hand-outs, or this long.
const RECOUNT_AFTER: u32 = 64;
const RECOUNT_EVERY: Duration = Duration::from_millis(10);

impl OwnedFree {
    fn fresh(&self, blocks: &Arc<[(u32, u32)]>, now: Instant) -> bool {
        Arc::ptr_eq(&self.blocks, blocks)
            && self.since < RECOUNT_AFTER
            && now.saturating_duration_since(self.at) < RECOUNT_EVERY
    }
}

/// How the addresses of one block are used, as the index shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockUse {
    /// Bound (even past its expiry, until the reaper ends it), declined in
    /// quarantine, offered, or with a write queued or in flight.
    pub in_use: u64,
    /// Pool addresses no client holds: never used, released or expired.
    pub usable: u64,
    /// Of those, never used.
    pub never_used: u64,
}

impl BlockUse {
    /// Nothing in the block is held, offered or being written.
    pub fn idle(&self) -> bool {
        self.in_use == 0
    }
}

impl State {
    /// How `[lo, hi]` of subnet `s` is used at `now`.
    pub fn block_use(&self, s: usize, lo: u32, hi: u32, now: u32) -> BlockUse {
        let sub = &self.subnets[s];
        let mut u = BlockUse::default();
        for ip in lo..=hi {
            let busy = sub.state(ip) == super::record::BOUND
                || sub.is_held(ip, now)
                || self.offers.contains_key(&ip)
                || self.overlay.contains_key(&ip);
            if busy {
                u.in_use += 1;
            } else if sub.spec.is_dynamic(std::net::Ipv4Addr::from(ip))
                && !self.reserved.contains_key(&ip)
            {
                u.usable += 1;
                u.never_used += u64::from(sub.free_count(ip, ip) == 1);
            }
        }
        u
    }
}

impl Queued for State {
    fn lease_differs(&self, ip: u32, value: Option<&[u8]>) -> bool {
        self.overlay
            .get(&ip)
            .is_some_and(|(_, queued)| queued.as_deref() != value)
    }

    fn client_differs(&self, client: &ClientKey, ip: Option<u32>) -> bool {
        self.clients
            .get(client)
            .is_some_and(|cur| self.overlay.contains_key(&cur) && Some(cur) != ip)
    }

    fn lease6_differs(&self, key: &[u8], value: Option<&[u8]>) -> bool {
        Key6::from_bytes(key)
            .and_then(|k| self.v6.overlay.get(&k))
            .is_some_and(|(_, queued)| queued.as_deref() != value)
    }

    fn ia_differs(&self, ia: &Ia6Key, key: Option<&[u8]>) -> bool {
        let to = key.and_then(Key6::from_bytes);
        self.v6
            .ias
            .get(ia)
            .is_some_and(|cur| self.v6.overlay.contains_key(cur) && Some(*cur) != to)
    }
}
