//! The write path: store first (queued for the committer, or applied at
//! once without one), then memory, then a commit ticket to wait on.

use std::sync::atomic::Ordering::Relaxed;

use super::commit::Ticket;
use super::error::IpamError;
use super::handle::Ipam;
use super::record::key_ip;
use super::state::{Change, State};
use super::store::{Op, TreeId};
use super::v6::Key6;

impl Ipam {
    /// Writes ops planned under the state lock: store first, then memory,
    /// then (if `durable`) queue a commit. Returns the commit ticket.
    pub(super) fn write(
        &self,
        st: &mut State,
        changes: &[Change],
        durable: bool,
    ) -> Result<Option<Ticket>, IpamError> {
        if changes.is_empty() {
            return Ok(None);
        }
        st.writable()?;
        let ops = State::ops(changes);
        let queued = self.store_apply(st, ops)?;
        self.stats.ipam.writes_total.fetch_add(1, Relaxed);
        let before = st.next_expiry;
        st.apply(changes);
        if st.next_expiry < before {
            self.reaper_wake.notify_one();
        }
        let ips: Vec<u32> = changes.iter().map(|c| c.ip).collect();
        // Queued writes always get a commit (a non-durable one just drops
        // its ticket) so the committer applies them.
        Ok((durable || queued)
            .then(|| self.committer.submit(st, &ips, &self.stats))
            .filter(|_| durable))
    }

    /// Writes `ops`: queued for the committer's next transaction while it
    /// runs (returns true), else applied at once.
    pub(super) fn store_apply(&self, st: &mut State, ops: Vec<Op>) -> Result<bool, IpamError> {
        st.writable()?;
        if !st.committer_live {
            self.store.apply(&ops)?;
            return Ok(false);
        }
        for op in &ops {
            if op.tree == TreeId::Leases {
                if let Some(ip) = key_ip(&op.key) {
                    st.overlay.insert(ip, (st.drains, op.value.clone()));
                }
            } else if op.tree == TreeId::Leases6 {
                if let Some(k) = Key6::from_bytes(&op.key) {
                    st.v6.overlay.insert(k, (st.drains, op.value.clone()));
                }
            }
        }
        st.queue.extend(ops);
        Ok(true)
    }

    /// Applies every queued write as one atomic write, under the state lock
    /// taken with [`Ipam::lock_store`] (by whoever needs the store itself
    /// current), so writes reach sled in order.
    pub(super) fn drain(&self, st: &mut State) -> Result<(), IpamError> {
        if st.queue.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut st.queue);
        st.drains += 1;
        st.overlay.clear();
        st.v6.overlay.clear();
        self.store
            .apply(&ops)
            .inspect_err(|e| self.roll_back(st, e))
    }

    /// Returns once `ticket`'s write is durable (nothing to wait for
    /// without one). Cancel-safe: dropping it abandons the wait, never the
    /// write.
    pub(super) async fn durable(&self, ticket: Option<Ticket>) -> Result<(), IpamError> {
        match ticket {
            Some(t) => self.wait(t).await,
            None => Ok(()),
        }
    }

    /// [`Committer::wait`]; a failed inline flush (no committer) rolls the
    /// index back as a failed batch does.
    pub(super) async fn wait(&self, t: Ticket) -> Result<(), IpamError> {
        let inline = t.inline();
        let res = self
            .committer
            .wait(t, self.store.as_ref(), &self.stats)
            .await;
        if let (Err(e), true) = (&res, inline) {
            let (_applying, mut st) = self.lock_store();
            self.roll_back(&mut st, e);
        }
        res
    }

    /// Waits until everything written so far is durable (used at shutdown
    /// and by `vpcbox db`). Cancel-safe: dropping it only stops the wait.
    pub async fn flush(&self) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            self.committer.submit(&mut st, &[], &self.stats)
        };
        self.durable(Some(ticket)).await
    }
}
