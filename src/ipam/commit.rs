//! Group commit: durable writes wait for one `flush_async` shared by
//! everything that was written while the previous flush ran.
//!
//! Each write takes a sequence number under the state lock, queues its
//! store ops (`State::queue`) and a waiter on an unbounded channel (bounded
//! in practice by the number of callers awaiting, each holds one). The
//! committer takes every waiter queued so far as a batch, applies all queued
//! ops as one sled transaction under the state lock, flushes once, and
//! answers every waiter. A waiter is queued after its ops, so the batch's
//! transaction always contains them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::state::State;
use super::store::Store;
use super::{Ipam, IpamError};
use crate::stats::Stats;

type Done = oneshot::Sender<Result<(), IpamError>>;

#[derive(Debug)]
pub struct Waiter {
    seq: u64,
    submitted: Instant,
    done: Done,
}

/// A queued durable write; redeem it with [`Committer::wait`].
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    submitted: Instant,
    rx: Option<oneshot::Receiver<Result<(), IpamError>>>,
}

#[derive(Debug)]
pub struct Committer {
    tx: OnceLock<mpsc::UnboundedSender<Waiter>>,
    /// Highest sequence number known durable.
    flushed: watch::Sender<u64>,
}

impl Committer {
    pub fn new() -> Self {
        Self {
            tx: OnceLock::new(),
            flushed: watch::Sender::new(0),
        }
    }

    /// Creates the queue the committer task drains (once; later calls get
    /// a receiver nothing is sent to).
    pub fn start(&self) -> mpsc::UnboundedReceiver<Waiter> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.tx.set(tx);
        rx
    }

    pub fn flushed(&self) -> u64 {
        *self.flushed.borrow()
    }

    /// Called under the state lock right after the write reached the store.
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
        let rx = self.tx.get().and_then(|tx| {
            let (done, rx) = oneshot::channel();
            tx.send(Waiter {
                seq,
                submitted,
                done,
            })
            .ok()
            .map(|()| rx)
        });
        Ticket { seq, submitted, rx }
    }

    /// Returns once the ticket's write is durable. Cancel-safe: dropping
    /// the future abandons the wait, never the write (the committer flushes
    /// it anyway).
    pub async fn wait(&self, t: Ticket, store: &dyn Store, stats: &Stats) -> Result<(), IpamError> {
        if let Some(rx) = t.rx {
            if let Ok(res) = rx.await {
                return res;
            }
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

    fn mark_flushed(&self, seq: u64) {
        self.flushed.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
    }
}

/// The committer task. On cancellation it drains and flushes what is
/// queued, then closes the queue (later writes flush inline).
pub async fn run(
    ipam: Arc<Ipam>,
    mut rx: mpsc::UnboundedReceiver<Waiter>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            w = rx.recv() => w,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        commit(&ipam, batch).await;
    }
    // From here on writes apply inline; what is queued goes first.
    {
        let mut st = ipam.lock();
        st.committer_live = false;
        let _ = ipam.drain(&mut st);
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(w) = rx.try_recv() {
        rest.push(w);
    }
    commit(&ipam, rest).await;
    tracing::debug!("ipam committer stopped");
}

async fn commit(ipam: &Ipam, batch: Vec<Waiter>) {
    let applied = ipam.drain(&mut ipam.lock());
    let res = match applied {
        Ok(()) => ipam.store.flush_async().await,
        Err(e) => Err(e),
    };
    let stats = &ipam.stats.ipam;
    if let Err(e) = &res {
        tracing::error!(error = %e, "ipam flush failed");
    } else if let Some(max) = batch.iter().map(|w| w.seq).max() {
        ipam.committer.mark_flushed(max);
    }
    let n = batch.len();
    stats.batch_size.observe(n as f64);
    stats.commits_waiting.fetch_sub(n as i64, Relaxed);
    for w in batch {
        stats
            .commit_seconds
            .observe(w.submitted.elapsed().as_secs_f64());
        let _ = w.done.send(res.clone());
    }
}
