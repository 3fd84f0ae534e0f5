//! Group commit: durable writes wait for one flush shared by everything
//! written while the previous flush ran. Each write takes a sequence
//! number and a [`Ticket`] under the state lock; the committer thread
//! ([`super::flusher`]) applies the queued ops as one sled write, flushes
//! once, and answers the batch's waiters.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::error::IpamError;
use super::state::State;
use super::store::Store;
use crate::stats::Stats;

/// How a waiter is answered.
type Done = oneshot::Sender<Result<(), IpamError>>;

pub struct Waiter {
    pub(super) seq: u64,
    pub(super) submitted: Instant,
    pub(super) done: Done,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("seq", &self.seq).finish()
    }
}

/// A queued durable write: wait for it with [`Committer::wait`].
pub struct Ticket {
    seq: u64,
    submitted: Instant,
    /// None when no committer runs: the waiter flushes inline.
    rx: Option<oneshot::Receiver<Result<(), IpamError>>>,
}

impl Ticket {
    /// No committer took it: the waiter flushes inline.
    pub fn inline(&self) -> bool {
        self.rx.is_none()
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("seq", &self.seq).finish()
    }
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) waiters: Vec<Waiter>,
    /// A committer thread takes waiters (else writers flush inline).
    pub(super) live: bool,
    /// Asked to stop: flush what is queued, then exit.
    pub(super) stop: bool,
    /// The thread waits on the condvar (so a submit must wake it).
    pub(super) sleeping: bool,
    /// The store refuses writes: the thread wakes to probe it.
    pub(super) degraded: bool,
}

/// The queue the committer thread drains; shared with the thread so the
/// thread does not keep the [`Ipam`] alive.
#[derive(Debug, Default)]
pub(super) struct Shared {
    queue: Mutex<Queue>,
    pub(super) wake: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stop(&self) {
        let mut q = self.lock();
        q.stop = true;
        drop(q);
        self.wake.notify_all();
    }
}

#[derive(Debug)]
pub struct Committer {
    pub(super) shared: Arc<Shared>,
    /// Highest sequence number known durable.
    flushed: watch::Sender<u64>,
    /// Shortest time between two flushes.
    pub(super) interval: Duration,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Committer {
    pub fn new(interval: Duration) -> Self {
        Self {
            shared: Arc::default(),
            flushed: watch::Sender::new(0),
            interval,
        }
    }

    pub fn flushed(&self) -> u64 {
        *self.flushed.borrow()
    }

    /// Called under the state lock right after the write reached the
    /// store; wait for the ticket outside it.
    pub fn submit(&self, st: &mut State, ips: &[u32], stats: &Stats) -> Ticket {
        st.seq += 1;
        let seq = st.seq;
        if st.pending.len() > 4096 {
            let flushed = self.flushed();
            st.pending.retain(|_, s| *s > flushed);
        }
        for ip in ips {
            st.pending.insert(*ip, seq);
        }
        stats.ipam.commits_waiting.fetch_add(1, Relaxed);
        let submitted = Instant::now();
        let (done, rx) = oneshot::channel();
        let mut t = Ticket {
            seq,
            submitted,
            rx: Some(rx),
        };
        let mut q = self.shared.lock();
        if !q.live {
            drop(q);
            t.rx = None;
            return t;
        }
        q.waiters.push(Waiter {
            seq,
            submitted,
            done,
        });
        let wake = q.sleeping;
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        t
    }

    /// Returns once the ticket's write is durable. Cancel-safe: dropping
    /// the future abandons the wait, never the write (the committer flushes
    /// it anyway).
    pub async fn wait(&self, t: Ticket, store: &dyn Store, stats: &Stats) -> Result<(), IpamError> {
        if let Some(rx) = t.rx {
            // A dropped sender: the committer died with this write's batch.
            return rx.await.unwrap_or_else(|_| {
                Err(IpamError::Storage(
                    "the committer stopped before this write was durable".into(),
                ))
            });
        }
        // No committer (before `spawn`, or after shutdown): flush inline.
        let res = store.flush_async().await;
        if res.is_ok() {
            self.mark_flushed(t.seq);
        }
        stats.ipam.commits_waiting.fetch_sub(1, Relaxed);
        stats.ipam.batch_size.observe(1.0);
        stats
            .ipam
            .commit_seconds
            .observe(t.submitted.elapsed().as_secs_f64());
        res
    }

    pub(super) fn mark_flushed(&self, seq: u64) {
        self.flushed.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
    }

    /// Asks the committer thread to flush what is queued and exit.
    pub(super) fn stop(&self) {
        self.shared.stop();
    }
}

/// Answers a batch's waiters with its fate.
pub(super) fn answer(stats: &Stats, batch: Vec<Waiter>, res: Result<(), IpamError>) {
    let n = batch.len();
    if n == 0 {
        return;
    }
    let stats = &stats.ipam;
    stats.batch_size.observe(n as f64);
    stats.commits_waiting.fetch_sub(n as i64, Relaxed);
    for w in batch {
        stats
            .commit_seconds
            .observe(w.submitted.elapsed().as_secs_f64());
        let _ = w.done.send(res.clone());
    }
}
