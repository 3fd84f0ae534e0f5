//! Group commit: durable writes wait for one flush shared by everything
//! that was written while the previous flush ran.
//!
//! Each write takes a sequence number under the state lock, queues its
//! store ops (`State::queue`) and a waiter. The committer, a thread of its
//! own, takes every waiter queued so far as a batch, applies all queued ops
//! as one sled write (outside the state lock: reads find them in the
//! overlay meanwhile), flushes once (blocking), and answers every waiter.
//! A waiter is queued after its ops, so the batch's write always contains
//! them.
//!
//! Flushes are spaced at least `commit_interval` apart while writes keep
//! arriving during flushes (load): they join the next flush (an fsync, and
//! a wake-up of every sled I/O thread, per batch instead of per write).
//! After a flush that nobody queued behind, the next write is flushed at
//! once, so a lone writer waiting on each write is not slowed down; and a
//! batch stops waiting once writes have stopped arriving for a quarter of
//! the interval (at most [`QUIET_MAX`]), so a few writers each waiting on
//! its own write are not held for the whole interval either.
//!
//! A thread, not a task: sled's `flush_async` hands every flush to its I/O
//! thread pool (waking all of its threads) and back, which cost more CPU
//! than the DHCP work itself at a few thousand leases a second. Should the
//! thread panic (in the store's code), writes fall back to flushing inline.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::state::State;
use super::store::Store;
use super::{Ipam, IpamError};
use crate::stats::Stats;

/// The longest pause in arrivals a batch waits out: a quarter of the
/// interval, but no more than this, so writers that each wait on their own
/// write (an API client pool) are flushed as soon as all of them are in,
/// whatever the interval. 2.5 ms: a quarter of the 10 ms default that
/// closed-loop writers were measured with (bench/RESULTS-ipam.md).
const QUIET_MAX: Duration = Duration::from_micros(2500);

/// How a waiter is answered.
type Done = oneshot::Sender<Result<(), IpamError>>;

pub struct Waiter {
    seq: u64,
    submitted: Instant,
    done: Done,
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

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("seq", &self.seq).finish()
    }
}

#[derive(Debug, Default)]
struct Queue {
    waiters: Vec<Waiter>,
    /// A committer thread takes waiters (else writers flush inline).
    live: bool,
    /// Asked to stop: flush what is queued, then exit.
    stop: bool,
    /// The thread waits on the condvar (so a submit must wake it).
    sleeping: bool,
}

/// The queue the committer thread drains; shared with the thread so the
/// thread does not keep the [`Ipam`] alive.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        let mut q = self.lock();
        q.stop = true;
        drop(q);
        self.wake.notify_all();
    }
}

#[derive(Debug)]
pub struct Committer {
    shared: Arc<Shared>,
    /// Highest sequence number known durable.
    flushed: watch::Sender<u64>,
    /// Shortest time between two flushes.
    interval: Duration,
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

    /// Starts the committer thread. Err: the thread could not be started
    /// (writes then flush inline).
    pub(super) fn start(ipam: &Arc<Ipam>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let shared = ipam.committer.shared.clone();
        shared.lock().live = true;
        let weak = Arc::downgrade(ipam);
        let interval = ipam.committer.interval;
        std::thread::Builder::new()
            .name("vpcbox-commit".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        run(&shared, &weak, interval);
                    }));
                    if ran.is_err() {
                        degrade(&shared, &weak);
                    }
                }
            })
            .inspect_err(|_| shared.lock().live = false)
    }

    /// Asks the committer thread to flush what is queued and exit.
    pub(super) fn stop(&self) {
        self.shared.stop();
    }
}

/// The committer thread: batches until stopped (or the IPAM is dropped),
/// then hands writes back to inline flushing and commits the rest.
fn run(shared: &Shared, ipam: &Weak<Ipam>, interval: Duration) {
    // When the last flush started, if writes kept arriving while it ran
    // (load: batching pays); None after a flush nobody queued behind (a
    // lone writer, or a quiet moment: flush its next write at once).
    let mut last: Option<Instant> = None;
    loop {
        let mut q = shared.lock();
        while q.waiters.is_empty() && !q.stop {
            q.sleeping = true;
            q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            q.sleeping = false;
        }
        if q.stop {
            break;
        }
        if let Some(started) = last {
            q = gather(shared, q, started + interval, (interval / 4).min(QUIET_MAX));
        }
        let batch = std::mem::take(&mut q.waiters);
        drop(q);
        let started = Instant::now();
        let Some(ipam) = ipam.upgrade() else {
            fail(batch);
            return;
        };
        commit(&ipam, batch);
        last = (!shared.lock().waiters.is_empty()).then_some(started);
    }
    hand_back(shared, ipam);
    tracing::debug!("ipam committer stopped");
}

/// Under load, lets the batch grow until `due` (the last flush's start +
/// `commit_interval`), or until writers have stopped arriving for `quiet`:
/// a fixed set of writers each waiting on its write (an API client pool)
/// are all queued by then, and waiting longer would only slow them down.
/// Takes and returns the queue lock; sleeps without it.
fn gather<'a>(
    shared: &'a Shared,
    mut q: MutexGuard<'a, Queue>,
    due: Instant,
    quiet: Duration,
) -> MutexGuard<'a, Queue> {
    loop {
        let now = Instant::now();
        let newest = q.waiters.last().map_or(now, |w| w.submitted);
        let until = due.min(newest + quiet);
        if q.stop || now >= until {
            return q;
        }
        drop(q);
        std::thread::sleep(until - now);
        q = shared.lock();
    }
}

/// After a panic on the committer thread (the store's own code): nothing
/// may wait for a thread that is gone. The batch it was working on went
/// with the panic (its waiters flush inline); the rest is handed back.
fn degrade(shared: &Shared, ipam: &Weak<Ipam>) {
    tracing::error!("ipam committer thread panicked; writes now flush inline");
    hand_back(shared, ipam);
}

/// From here on writes apply and flush inline: what is queued goes to the
/// store first, then the waiters still queued are committed.
fn hand_back(shared: &Shared, ipam: &Weak<Ipam>) {
    let Some(ipam) = ipam.upgrade() else {
        let rest = std::mem::take(&mut shared.lock().waiters);
        return fail(rest);
    };
    {
        let (_applying, mut st) = ipam.lock_store();
        st.committer_live = false;
        let _ = ipam.drain(&mut st);
    }
    let rest = {
        let mut q = shared.lock();
        q.live = false;
        std::mem::take(&mut q.waiters)
    };
    commit(&ipam, rest);
}

fn fail(batch: Vec<Waiter>) {
    for w in batch {
        let _ = w
            .done
            .send(Err(IpamError::Storage("the store was closed".into())));
    }
}

fn commit(ipam: &Ipam, batch: Vec<Waiter>) {
    let applied = ipam.drain_unlocked();
    let res = applied.and_then(|()| ipam.store.flush());
    let stats = &ipam.stats.ipam;
    if let Err(e) = &res {
        tracing::error!(error = %e, "ipam flush failed");
    } else if let Some(max) = batch.iter().map(|w| w.seq).max() {
        ipam.committer.mark_flushed(max);
    }
    let n = batch.len();
    if n == 0 {
        return;
    }
    stats.batch_size.observe(n as f64);
    stats.commits_waiting.fetch_sub(n as i64, Relaxed);
    for w in batch {
        stats
            .commit_seconds
            .observe(w.submitted.elapsed().as_secs_f64());
        let _ = w.done.send(res.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(shared: &Shared, submitted: Instant) {
        let (done, _rx) = oneshot::channel();
        shared.lock().waiters.push(Waiter {
            seq: 1,
            submitted,
            done,
        });
    }

    /// Writers stopped arriving a while ago: the batch goes now, not at `due`.
    #[test]
    fn a_batch_nobody_joins_any_more_is_not_held_to_the_interval() {
        let shared = Shared::default();
        let start = Instant::now();
        queued(&shared, start - Duration::from_millis(50));
        let due = start + Duration::from_secs(30);
        let q = gather(&shared, shared.lock(), due, Duration::from_millis(10));
        assert_eq!(q.waiters.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// Writers still arriving: the batch waits for `due`, even when the
    /// last arrival is recent all along.
    #[test]
    fn a_growing_batch_waits_until_due() {
        let shared = Arc::new(Shared::default());
        let start = Instant::now();
        queued(&shared, start);
        let due = start + Duration::from_millis(60);
        let feeder = std::thread::spawn({
            let shared = shared.clone();
            move || {
                while Instant::now() < due {
                    queued(&shared, Instant::now());
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let q = gather(&shared, shared.lock(), due, Duration::from_secs(5));
        assert!(Instant::now() >= due);
        assert!(q.waiters.len() > 1);
        drop(q);
        feeder.join().unwrap();
    }

    /// A stop request ends the wait at once.
    #[test]
    fn stop_ends_the_wait() {
        let shared = Shared::default();
        let start = Instant::now();
        queued(&shared, start);
        shared.lock().stop = true;
        let q = gather(
            &shared,
            shared.lock(),
            start + Duration::from_secs(30),
            Duration::from_secs(30),
        );
        assert!(q.stop);
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
