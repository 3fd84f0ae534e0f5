//! One IPAM operation in flight per client: a retransmission of the packet
//! in flight (same type and xid) is a duplicate; another packet waits for
//! the operation to end (only the latest one: an earlier one is dropped as
//! a duplicate).

use std::sync::Arc;

use super::admission::{refuse, Refused};
use super::request::Request;
use super::state::{Busy, Job, State};
use crate::client::ClientKey;
use crate::stats::DropReason;

/// A retransmission of the packet in flight, or a waiting packet that a
/// newer one replaced.
pub const DUPLICATE: Refused = Refused::Drop(DropReason::Duplicate);

/// Removes the client from the in-flight map when the operation ends,
/// however it ends (so the operation is cancel-safe in this respect).
pub(super) struct InFlight {
    state: Arc<State>,
    shard: usize,
    key: ClientKey,
    /// [`InFlight::leave`] ran: nothing left for `Drop` to do.
    left: bool,
}

/// What [`InFlight::enter`] made of a packet.
pub(super) enum Entry {
    /// The client had nothing in flight: this packet's operation is.
    Started(InFlight, Job),
    /// A retransmission of the packet in flight.
    Duplicate(Job),
    /// Waits for the operation in flight (and may be replaced).
    Waiting,
}

impl InFlight {
    pub fn enter(state: &Arc<State>, shard: usize, req: &Request, job: Job) -> Entry {
        use std::collections::hash_map::Entry as E;
        let mut map = state.inflight[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match map.entry(req.client.clone()) {
            E::Occupied(mut busy) => {
                let busy = busy.get_mut();
                if busy.kind == job.kind && busy.xid == req.xid {
                    return Entry::Duplicate(job);
                }
                let replaced = busy.next.replace(job);
                drop(map);
                if let Some(old) = replaced {
                    refuse(state, &old.key, old.kind, DUPLICATE);
                }
                Entry::Waiting
            }
            E::Vacant(v) => {
                v.insert(Busy {
                    kind: job.kind,
                    xid: req.xid,
                    next: None,
                });
                drop(map);
                state.stats.clients.pending(&req.client, 1);
                let guard = Self {
                    state: state.clone(),
                    shard,
                    key: req.client.clone(),
                    left: false,
                };
                Entry::Started(guard, job)
            }
        }
    }

    /// Ends the operation; returns the client's packet that waited for it.
    pub fn leave(&mut self) -> Option<Job> {
        self.left = true;
        let busy = self.state.inflight[self.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if busy.is_some() {
            self.state.stats.clients.pending(&self.key, -1);
        }
        busy.and_then(|b| b.next)
    }
}

impl Drop for InFlight {
    /// Cancelled (shutdown): a waiting packet is dropped with it.
    fn drop(&mut self) {
        if self.left {
            return;
        }
        if let Some(job) = self.leave() {
            refuse(
                &self.state,
                &job.key,
                job.kind,
                Refused::Drop(DropReason::Deadline),
            );
        }
    }
}
