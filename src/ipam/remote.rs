//! Cluster mode: the IPAM's side of the cluster layer. Which addresses it
//! may give and whether it may write come through [`ClusterHooks`]; what
//! other nodes wrote comes through [`Ipam::fold_remote`].

use std::sync::Arc;
use std::time::SystemTime;

use super::error::IpamError;
use super::handle::Ipam;
use super::hooks::{ClusterHooks, ClusterNodeView, ClusterReads, Queued, Remote};
use super::load::load;
use super::model::secs;
use super::owned::BlockUse;
use super::record::Record;
use super::state::Change;
use crate::client::ClientKey;

impl Ipam {
    /// Makes this IPAM one node of a cluster: from now on it allocates only
    /// inside the blocks `hooks` says it owns and refuses writes while
    /// fenced, and before an API allocation catches up with etcd on the client.
    /// Call once, before serving.
    pub fn attach_cluster(&self, hooks: Arc<dyn ClusterHooks>, reads: Arc<dyn ClusterReads>) {
        let _ = self.reads.set(reads);
        if self.cluster.set(hooks.clone()).is_ok() {
            self.lock().tuning.cluster = Some(hooks);
        }
    }

    /// Whether this node answers `client` (always, alone).
    pub fn answers(&self, client: &ClientKey) -> bool {
        self.cluster.get().is_none_or(|c| c.answers(client))
    }

    /// Why this cluster node may not write, if so (never alone).
    pub fn fenced(&self) -> Option<String> {
        self.cluster.get().and_then(|c| c.fenced())
    }

    /// Cluster mode: the live nodes (`None` alone).
    pub fn cluster_nodes(&self) -> Option<Vec<ClusterNodeView>> {
        self.cluster.get().map(|c| c.nodes())
    }

    /// Folds leases other nodes wrote into the index. `fold` runs under the
    /// state lock (so no plan sees the store and the index disagree): it
    /// brings the store's copy up to date and returns the leases that
    /// changed. A lease with a local write queued is skipped: that write
    /// was planned on what the change replaced, its compare fails, and the
    /// roll-back reloads the index.
    pub fn fold_remote(&self, fold: impl FnOnce(&dyn Queued) -> Remote) {
        let mut st = self.lock();
        let remote = fold(&*st);
        if remote.is_empty() {
            return;
        }
        let decode = |b: Option<Vec<u8>>| b.and_then(|b| Record::decode(&b).ok());
        let changes: Vec<Change> = remote
            .leases
            .into_iter()
            .filter(|r| !st.overlay.contains_key(&r.ip))
            .map(|r| Change {
                ip: r.ip,
                old_client: decode(r.old).map(|o| o.client),
                new: decode(r.new),
            })
            .collect();
        let before = st.next_expiry.min(st.v6.next_deadline());
        st.apply(&changes);
        st.apply_remote6(remote.leases6);
        if st.next_expiry.min(st.v6.next_deadline()) < before {
            self.reaper_wake.notify_one();
        }
        self.note_change(&st);
    }

    /// Rebuilds the index from the store (another node changed subnets or
    /// reservations, or the store reloaded itself): queued writes go to the
    /// store first.
    pub fn reload(&self) -> Result<(), IpamError> {
        let (_applying, mut st) = self.lock_store();
        self.drain(&mut st)?;
        let fresh = load(self.store.as_ref(), st.tuning.clone())?;
        self.replace_state(&mut st, fresh);
        Ok(())
    }

    /// Never-used addresses in `[lo, hi]` of subnet `id` (0 for an unknown
    /// subnet): a cluster node claims the block with the most.
    pub fn free_in(&self, id: &str, lo: u32, hi: u32) -> u64 {
        let st = self.lock();
        st.subnet_ix(id)
            .map(|s| st.subnets[s].free_count(lo, hi))
            .unwrap_or(0)
    }

    /// How each of `blocks` (inclusive ranges) of subnet `id` is used at
    /// `now`; empty for an unknown subnet. The lock is taken per 64 blocks,
    /// so a large pool does not hold it long (a snapshot need not be exact:
    /// [`Ipam::retire_if_idle`] checks again).
    pub fn blocks_use(&self, id: &str, blocks: &[(u32, u32)], now: SystemTime) -> Vec<BlockUse> {
        let now = secs(now);
        let mut out = Vec::with_capacity(blocks.len());
        for part in blocks.chunks(64) {
            let st = self.lock();
            let Ok(s) = st.subnet_ix(id) else {
                return Vec::new();
            };
            out.extend(part.iter().map(|&(lo, hi)| st.block_use(s, lo, hi, now)));
        }
        out
    }

    /// Runs `retire` (which takes `[lo, hi]` out of what this node owns) if
    /// nothing in that block of subnet `id` is held, offered or being
    /// written; both under the state lock, so no offer or write can start
    /// in the block between the check and `retire`. Whether it ran.
    pub fn retire_if_idle(
        &self,
        id: &str,
        (lo, hi): (u32, u32),
        now: SystemTime,
        retire: impl FnOnce(),
    ) -> bool {
        let st = self.lock();
        let Ok(s) = st.subnet_ix(id) else {
            return false;
        };
        if !st.block_use(s, lo, hi, secs(now)).idle() {
            return false;
        }
        retire();
        true
    }
}
