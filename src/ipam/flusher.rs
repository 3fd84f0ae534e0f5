//! The committer thread: one sled write and one flush per batch of queued
//! writes, flushes spaced `commit_interval` apart under load. A failed
//! apply or flush rolls the index back to the store ([`Ipam::roll_back`])
//! and refuses writes until a probe succeeds (a cluster node's lost race
//! rolls back without refusing). A thread, not a task: sled's
//! `flush_async` wakes its whole I/O pool per flush.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::commit::{answer, Queue, Shared, Waiter};
use super::error::IpamError;
use super::handle::Ipam;
use super::load::load;
use super::state::State;
use super::store::{Op, TreeId};

/// The longest pause in arrivals a batch waits out (a quarter of the
/// interval, at most this), so writers that each wait on their own write
/// are flushed once all are in (bench/RESULTS-ipam.md).
const QUIET_MAX: Duration = Duration::from_micros(2500);

/// While the store refuses writes, how often the committer tries a
/// durable probe write (reopening the store first).
const PROBE_EVERY: Duration = Duration::from_secs(1);

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
                let _owner = crate::heap::enter_thread(crate::heap::Owner::Store);
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

/// The committer thread: batches until stopped (or the IPAM is dropped),
/// then hands writes back to inline flushing and commits the rest. While
/// the store refuses writes it probes it every [`PROBE_EVERY`].
fn run(shared: &Shared, ipam: &Weak<Ipam>, interval: Duration) {
    // When the last flush started, if writes kept arriving while it ran
    // (load: batching pays); None after a flush nobody queued behind (a
    // lone writer, or a quiet moment: flush its next write at once).
    let mut last: Option<Instant> = None;
    loop {
        let mut q = shared.lock();
        let mut probe = false;
        while q.waiters.is_empty() && !q.stop {
            q.sleeping = true;
            if q.degraded {
                let (g, timeout) = shared
                    .wake
                    .wait_timeout(q, PROBE_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                q = g;
                if timeout.timed_out() {
                    q.sleeping = false;
                    probe = true;
                    break;
                }
            } else {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.sleeping = false;
        }
        if q.stop {
            break;
        }
        if probe {
            drop(q);
            let Some(ipam) = ipam.upgrade() else { return };
            if ipam.probe() {
                shared.lock().degraded = false;
            }
            continue;
        }
        if let Some(started) = last {
            q = gather(shared, q, started + interval, (interval / 4).min(QUIET_MAX));
        }
        drop(q);
        let started = Instant::now();
        let Some(ipam) = ipam.upgrade() else {
            let batch = std::mem::take(&mut shared.lock().waiters);
            fail(batch);
            return;
        };
        commit(&ipam);
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

/// After a panic on the committer thread (the store's own code): the batch
/// it was working on went with the panic (its waiters get an error, its
/// writes may be lost), so the index is rolled back to the store; the rest
/// is handed back to inline flushing.
fn degrade(shared: &Shared, ipam: &Weak<Ipam>) {
    tracing::error!("ipam committer thread panicked; writes now flush inline");
    if let Some(ipam) = ipam.upgrade() {
        {
            let (_applying, mut st) = ipam.lock_store();
            let e = IpamError::Storage("the committer thread panicked".into());
            ipam.roll_back(&mut st, &e);
        }
        // No thread is left to probe: try once now (a panic is no I/O error).
        if ipam.probe() {
            shared.lock().degraded = false;
        }
    }
    hand_back(shared, ipam);
}

/// From here on writes apply and flush inline: what is queued goes to the
/// store first (under the state lock, so no inline write overtakes it),
/// then its waiters are answered.
fn hand_back(shared: &Shared, ipam: &Weak<Ipam>) {
    let Some(ipam) = ipam.upgrade() else {
        let rest = std::mem::take(&mut shared.lock().waiters);
        return fail(rest);
    };
    let (batch, res) = {
        let (_applying, mut st) = ipam.lock_store();
        st.committer_live = false;
        let (ops, batch) = take_batch(&ipam, &mut st);
        shared.lock().live = false;
        let res = write_batch(&ipam, &st, &ops);
        match &res {
            // Degraded already: nothing was tried.
            Ok(()) | Err(IpamError::Degraded(_)) => {}
            Err(e) => ipam.roll_back(&mut st, e),
        }
        (batch, res)
    };
    answer(&ipam.stats, batch, res);
}

fn fail(batch: Vec<Waiter>) {
    for w in batch {
        let _ = w
            .done
            .send(Err(IpamError::Storage("the store was closed".into())));
    }
}

/// Takes the queued ops and exactly their waiters (both are queued under
/// the state lock, which the caller holds).
fn take_batch(ipam: &Ipam, st: &mut State) -> (Vec<Op>, Vec<Waiter>) {
    let batch = std::mem::take(&mut ipam.committer.shared.lock().waiters);
    (std::mem::take(&mut st.queue), batch)
}

/// Applies and flushes a batch. A batch without writes (waiters of
/// `Ipam::flush`) while writes are refused has nothing to make durable
/// that is not already on disk, and must not touch the failed store.
fn write_batch(ipam: &Ipam, st: &State, ops: &[Op]) -> Result<(), IpamError> {
    if ops.is_empty() {
        st.writable()?;
    }
    ipam.store.apply(ops)?;
    ipam.store.flush()
}

/// One group commit: applies and flushes the queued ops (outside the state
/// lock) and answers their waiters with the result.
fn commit(ipam: &Ipam) {
    let _applying = ipam.applying.lock().unwrap_or_else(|e| e.into_inner());
    let (ops, batch, drained, st_ok) = {
        let mut st = ipam.lock();
        let (ops, batch) = take_batch(ipam, &mut st);
        st.drains += 1;
        let ok = if ops.is_empty() {
            st.writable()
        } else {
            Ok(())
        };
        (ops, batch, st.drains - 1, ok)
    };
    let res = st_ok.and_then(|()| {
        ipam.store.apply(&ops)?;
        ipam.store.flush()
    });
    match &res {
        Ok(()) => {
            let mut st = ipam.lock();
            st.overlay.retain(|_, (queued, _)| *queued > drained);
            st.v6.overlay.retain(|_, (queued, _)| *queued > drained);
            drop(st);
            if let Some(max) = batch.iter().map(|w| w.seq).max() {
                ipam.committer.mark_flushed(max);
            }
        }
        // Degraded already: nothing was tried.
        Err(IpamError::Degraded(_)) => {}
        Err(e) => ipam.roll_back(&mut ipam.lock(), e),
    }
    answer(&ipam.stats, batch, res);
}

impl Ipam {
    /// A store write or flush failed: writes not yet durable are lost.
    /// Answers every queued waiter with the error, drops the queued writes,
    /// reopens the store (sled refuses all writes after an I/O error) and
    /// rebuilds the index from it, so memory holds exactly what is on disk;
    /// then refuses writes until [`Ipam::probe`] succeeds. A lost race
    /// ([`IpamError::Conflict`]: another cluster node wrote a key first) is
    /// no storage fault: the index is rebuilt the same way but writes go on
    /// at once. The caller holds `applying` and the state lock.
    pub(super) fn roll_back(&self, st: &mut State, e: &IpamError) {
        let race = matches!(e, IpamError::Conflict(_));
        if race {
            tracing::warn!(error = %e, "ipam write lost a race; rolling back to the store");
        } else {
            tracing::error!(error = %e, "ipam write failed; rolling back to the store");
            self.stats.ipam.storage_errors_total.fetch_add(1, Relaxed);
        }
        st.queue.clear();
        st.overlay.clear();
        st.pending.clear();
        st.v6.overlay.clear();
        st.v6.pending.clear();
        let queued = {
            let mut q = self.committer.shared.lock();
            q.degraded |= !race;
            std::mem::take(&mut q.waiters)
        };
        let fresh = self
            .store
            .reopen()
            .and_then(|()| load(self.store.as_ref(), st.tuning.clone()));
        match fresh {
            Ok(fresh) => self.replace_state(st, fresh),
            Err(e) => {
                tracing::error!(error = %e, "reopening the store failed; retrying");
                st.stale = true;
                st.epoch += 1;
                if race {
                    // Nothing current to write on: refuse until a probe reloads.
                    self.committer.shared.lock().degraded = true;
                    self.degrade(st, &format!("reloading the index failed ({e})"));
                }
            }
        }
        if !race {
            let why = format!("a store write failed ({e}); writes are refused until one succeeds");
            self.degrade(st, &why);
        }
        answer(&self.stats, queued, Err(e.clone()));
    }

    /// Refuses writes for `why` until [`Ipam::probe`] succeeds.
    fn degrade(&self, st: &mut State, why: &str) {
        if st.degraded.is_none() {
            self.event(why);
        }
        st.degraded = Some(why.to_owned());
        self.stats.ipam.storage_degraded.store(1, Relaxed);
    }

    /// Puts a freshly loaded index in place, keeping the sequence numbers
    /// and flags that outlive a reload.
    pub(super) fn replace_state(&self, st: &mut State, mut fresh: State) {
        fresh.seq = st.seq;
        fresh.drains = st.drains;
        fresh.committer_live = st.committer_live;
        fresh.degraded = st.degraded.take();
        fresh.epoch = st.epoch + 1;
        *st = fresh;
        self.refresh_specs(st);
        self.publish_locked(st);
    }

    /// While writes are refused: reopens the store and tries one durable
    /// write. On success writes are accepted again (the index is reloaded
    /// first if the roll-back could not). Returns whether it succeeded.
    pub(super) fn probe(&self) -> bool {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let probe = Op {
            tree: TreeId::Meta,
            key: b"probe".to_vec(),
            value: Some(vec![0; 64]),
        };
        let res = self
            .store
            .reopen()
            .and_then(|()| self.store.apply(&[probe]))
            .and_then(|()| self.store.flush());
        let mut st = self.lock();
        let res = res.and_then(|()| {
            if st.stale {
                let fresh = load(self.store.as_ref(), st.tuning.clone())?;
                self.replace_state(&mut st, fresh);
                st.stale = false;
            }
            Ok(())
        });
        match res {
            Ok(()) => {
                st.degraded = None;
                self.stats.ipam.storage_degraded.store(0, Relaxed);
                tracing::warn!("ipam store accepts writes again");
                self.event("the store accepts writes again");
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "ipam store still refuses writes");
                false
            }
        }
    }

    fn event(&self, message: &str) {
        if let Some(events) = self.events.get() {
            events.push(crate::events::EventKind::Storage, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

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
        // The feeder's first arrival is in before the wait starts: a loaded
        // machine may not run the thread again before `due`.
        let (first_in, joined) = std::sync::mpsc::channel();
        let feeder = std::thread::spawn({
            let shared = shared.clone();
            move || {
                queued(&shared, Instant::now());
                let _ = first_in.send(());
                while Instant::now() < due {
                    std::thread::sleep(Duration::from_millis(2));
                    queued(&shared, Instant::now());
                }
            }
        });
        joined.recv().unwrap();
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
