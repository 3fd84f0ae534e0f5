//! Whether the IPAM may write (not while the store failed or this cluster
//! node is fenced), what a cluster node may give (only addresses inside
//! its own blocks; alone, every address), and what a fold finds queued.

use super::error::IpamError;
use super::hooks::Queued;
use super::state::State;
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
    /// cluster: inside its blocks, telling the cluster how many are left).
    pub(super) fn next_free(&mut self, s: usize) -> Option<u32> {
        let Some(c) = self.tuning.cluster.clone() else {
            return self.subnets[s].next_free();
        };
        let sub = &self.subnets[s];
        let (mut found, mut left) = (None, 0u64);
        let keep = c.keep_free(&sub.spec.id);
        for (lo, hi) in c.owned(&sub.spec.id) {
            let n = sub.free_count(lo, hi);
            if n > 0 && found.is_none() {
                found = sub.free_in(lo, hi);
            }
            left += n;
            // Enough known left: the older (fuller) blocks need no look.
            if found.is_some() && left > keep.max(2 * u64::from(hi - lo + 1)) {
                break;
            }
        }
        c.free_left(
            &sub.spec.id,
            left.saturating_sub(u64::from(found.is_some())),
        );
        found
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
}
