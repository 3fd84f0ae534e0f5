//! The process-wide budget for buffered response bytes.
//!
//! A response byte is charged from the moment the gateway takes it from an
//! upstream (or builds it, for the API) until the connection has written it
//! to the client's socket: each chunk handed to hyper is a `Bytes` whose
//! owner gives the charge back when hyper/h2 drops it after the write. That
//! covers h2's per-stream send buffers, hyper's chunk waiting for window,
//! and the HTTP/1.1 write buffer. An upstream body reserves one chunk before
//! it is polled; when the budget is full it is not polled (backpressure
//! reaches the upstream through its windows and socket), and it is woken
//! when bytes are written.
//!
//! Every chunk is also charged to its stream's [`Ctl`] (for HTTP/1.1, its
//! connection's), so a sweeper can reset a stream: one whose client
//! accepted nothing for `send_stall_timeout`; while the budget is full, the
//! heaviest streams that made no progress for [`PRESSURE_IDLE`]; and, on
//! every sweep in the governor's shed state, the heaviest streams holding
//! half the bytes of those above two chunks (Envoy's
//! `reset_high_memory_stream`). Resetting drops the stream's
//! future, so h2 sends RST_STREAM and drops its queued chunks.
//!
//! The stream's [`Ctl`] reaches its body through a thread-local set while
//! the connection's task polls that stream (see [`within`]): hyper's body
//! type cannot carry it in.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;

use crate::stats::Stats;

/// How long a stream must have made no progress to be reset while the
/// budget is full: a reading client empties its buffers far sooner.
pub(crate) const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// How long a reset stream's bytes may stay queued before its connection
/// is reset too.
const ESCALATE_MS: u64 = 500;

/// 1/HEADROOM of the budget is only for streams holding no bytes.
const HEADROOM: u64 = 8;

/// The sweeper's period at most (shorter when the stall timeout is short).
const SWEEP: Duration = Duration::from_millis(250);

/// Why a stream was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    Stall,
    Budget,
    Shed,
}

/// One stream's (or HTTP/1.1 connection's) share of the budget.
pub(crate) struct Ctl {
    buffered: AtomicU64,
    /// Milliseconds after the budget's epoch of the last chunk written (or
    /// of the first one charged after none was buffered).
    progress_ms: AtomicU64,
    killed: AtomicBool,
    killed_ms: AtomicU64,
    registered: AtomicBool,
    waker: AtomicWaker,
    /// A stream's connection: reset when the stream's bytes stay queued
    /// after the stream was (h2 sends queued DATA before the RST_STREAM,
    /// so a client that reads nothing keeps them until the socket goes).
    parent: Option<Arc<Ctl>>,
}

impl Ctl {
    pub(crate) fn new(parent: Option<Arc<Ctl>>) -> Self {
        Self {
            buffered: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            killed_ms: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            parent,
        }
    }

    /// Registers the task that owns the stream; true if it was reset.
    pub(crate) fn poll_killed(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.killed.load(Relaxed)
    }

    fn kill(&self, now_ms: u64) {
        self.killed_ms.store(now_ms, Relaxed);
        self.killed.store(true, Relaxed);
        self.waker.wake();
    }
}

pub(crate) struct ResponseBudget {
    limit: AtomicU64,
    used: AtomicU64,
    /// What an upstream body reserves before it is polled: the largest
    /// chunk it yields (an h2 DATA frame or an HTTP/1.1 read).
    chunk: u64,
    stall_ms: AtomicU64,
    epoch: Instant,
    /// Bodies waiting for room, oldest first: those of streams holding
    /// nothing, then the others.
    waiters: Mutex<[VecDeque<Waker>; 2]>,
    n_waiters: AtomicUsize,
    /// Every stream that was charged; dead entries are pruned by the sweep.
    streams: Mutex<Vec<Weak<Ctl>>>,
    stats: Arc<Stats>,
}

impl ResponseBudget {
    pub(crate) fn new(cfg: &crate::config::GatewayConfig, stats: Arc<Stats>) -> Self {
        let b = Self {
            limit: AtomicU64::new(cfg.response_budget),
            used: AtomicU64::new(0),
            chunk: u64::from(cfg.max_frame_size).max(16 * 1024),
            stall_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            waiters: Mutex::new([VecDeque::new(), VecDeque::new()]),
            n_waiters: AtomicUsize::new(0),
            streams: Mutex::new(Vec::new()),
            stats,
        };
        b.reconfigure(cfg);
        b
    }

    /// A reloaded budget and stall timeout (SIGHUP). A smaller budget
    /// pauses bodies until enough is written.
    pub(crate) fn reconfigure(&self, cfg: &crate::config::GatewayConfig) {
        self.limit.store(cfg.response_budget, Relaxed);
        let stall = u64::try_from(cfg.send_stall_timeout.as_millis()).unwrap_or(u64::MAX);
        self.stall_ms.store(stall, Relaxed);
        self.stats
            .gateway
            .response_budget
            .store(cfg.response_budget, Relaxed);
        self.wake_all();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Relaxed);
        self.stats
            .gateway
            .response_buffered
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
    }

    fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Relaxed);
        self.stats
            .gateway
            .response_buffered
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
        if self.n_waiters.load(Relaxed) > 0 {
            self.wake_room();
        }
    }

    /// What streams already holding bytes may fill: the last eighth is
    /// kept for streams whose clients took everything sent so far, so
    /// never-reading clients cannot starve reading ones.
    fn heavy_limit(limit: u64) -> u64 {
        limit - limit / HEADROOM
    }

    /// Wakes as many waiting bodies as there is room for chunks, light ones
    /// first, first come first woken: waking all of them on every write
    /// would poll thousands of streams for one chunk.
    fn wake_room(&self) {
        let limit = self.limit.load(Relaxed);
        let used = self.used();
        let chunks =
            |cap: u64| usize::try_from(cap.saturating_sub(used) / self.chunk).unwrap_or(usize::MAX);
        let (k_all, k_heavy) = (chunks(limit), chunks(Self::heavy_limit(limit)));
        if k_all == 0 {
            return;
        }
        let woken: Vec<Waker> = {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let [light, heavy] = &mut *w;
            let n_light = k_all.min(light.len());
            let n_heavy = k_heavy.saturating_sub(n_light).min(heavy.len());
            let woken = light
                .drain(..n_light)
                .chain(heavy.drain(..n_heavy))
                .collect();
            self.n_waiters.store(light.len() + heavy.len(), Relaxed);
            woken
        };
        woken.into_iter().for_each(Waker::wake);
    }

    fn try_reserve(&self, n: u64, limit: u64) -> bool {
        let ok = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| {
                (u.saturating_add(n) <= limit).then_some(u + n)
            })
            .is_ok();
        if ok {
            self.stats
                .gateway
                .response_buffered
                .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
        }
        ok
    }

    /// One chunk's reservation, or `Pending` until bytes are written.
    pub(crate) fn poll_reserve(self: &Arc<Self>, cx: &Context<'_>) -> Poll<Reservation> {
        let n = self.chunk;
        let light = current_buffered() == 0;
        let limit = self.limit.load(Relaxed);
        let limit = if light {
            limit
        } else {
            Self::heavy_limit(limit)
        };
        if !self.try_reserve(n, limit) {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            w[usize::from(!light)].push_back(cx.waker().clone());
            self.n_waiters.store(w[0].len() + w[1].len(), Relaxed);
            drop(w);
            // Bytes written between the first try and the registration.
            if !self.try_reserve(n, limit) {
                return Poll::Pending;
            }
        }
        Poll::Ready(Reservation {
            budget: self.clone(),
            n,
        })
    }

    fn wake_all(&self) {
        let woken = {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            self.n_waiters.store(0, Relaxed);
            std::mem::take(&mut *w)
        };
        woken.into_iter().flatten().for_each(Waker::wake);
    }

    /// Charges `data` (already counted in `held`, a reservation, or not
    /// yet) to the budget and to the current stream; the charge returns
    /// when the returned `Bytes` (and every slice of it) is dropped.
    pub(crate) fn charge(self: &Arc<Self>, data: Bytes, held: Option<Reservation>) -> Bytes {
        let n = data.len() as u64;
        match held {
            Some(mut r) => {
                if n <= r.n {
                    r.n -= n;
                } else {
                    self.add(n - r.n);
                    r.n = 0;
                }
                // `r` returns the unused part of the reservation.
            }
            None => self.add(n),
        }
        let ctl = current_ctl(self);
        if ctl.buffered.fetch_add(n, Relaxed) == 0 {
            ctl.progress_ms.store(self.now_ms(), Relaxed);
        }
        Bytes::from_owner(Charged {
            data,
            n,
            budget: self.clone(),
            ctl,
        })
    }

    fn register(&self, ctl: &Arc<Ctl>) {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(ctl));
    }

    /// Resets the streams that must go; runs until `cancel`.
    pub(crate) async fn sweeper(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let stall = Duration::from_millis(self.stall_ms.load(Relaxed));
            let period = (stall / 4).clamp(Duration::from_millis(10), SWEEP);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            self.sweep();
        }
    }

    /// One pass: prunes finished streams, resets stalled ones, and the
    /// heaviest when the budget is full or the governor sheds.
    pub(crate) fn sweep(&self) {
        // A woken body may have gone without taking its room.
        self.wake_room();
        let now = self.now_ms();
        let stall = self.stall_ms.load(Relaxed);
        let mut live: Vec<(Arc<Ctl>, u64, u64)> = Vec::new();
        {
            let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
            streams.retain(|w| match w.upgrade() {
                Some(c) if !c.killed.load(Relaxed) => {
                    let b = c.buffered.load(Relaxed);
                    if b > 0 {
                        let idle = now.saturating_sub(c.progress_ms.load(Relaxed));
                        live.push((c, b, idle));
                    }
                    true
                }
                Some(c) => {
                    let killed_for = now.saturating_sub(c.killed_ms.load(Relaxed));
                    if c.buffered.load(Relaxed) > 0 && killed_for >= ESCALATE_MS {
                        if let Some(p) = c.parent.as_ref().filter(|p| !p.killed.load(Relaxed)) {
                            tracing::debug!(
                                "connection reset: its reset stream's bytes stay queued"
                            );
                            p.kill(now);
                        }
                    }
                    true
                }
                None => false,
            });
        }
        let g = &self.stats.gateway;
        live.retain(|(c, _, idle)| {
            if *idle >= stall {
                tracing::debug!(idle_ms = *idle, reason = ?Reset::Stall, "response stream reset");
                c.kill(now);
                g.response_resets_stall.fetch_add(1, Relaxed);
                return false;
            }
            true
        });
        let limit = self.limit.load(Relaxed);
        let shedding = super::limiters::shedding(&self.stats);
        let full = self.used().saturating_add(self.chunk) > Self::heavy_limit(limit);
        if !shedding && !full {
            return;
        }
        let (target, reason) = if shedding {
            // Half of what is buffered, heaviest first, progress or not;
            // a stream holding a chunk or two costs no more than its state.
            let min = 2 * self.chunk;
            live.retain(|(_, b, _)| *b > min);
            let total: u64 = live.iter().map(|(_, b, _)| b).sum();
            (total.div_ceil(2), Reset::Shed)
        } else {
            let idle_ms = u64::try_from(PRESSURE_IDLE.as_millis()).unwrap_or(u64::MAX);
            live.retain(|(_, _, idle)| *idle >= idle_ms);
            (limit / 4, Reset::Budget)
        };
        for (c, b) in heaviest(live.into_iter().map(|(c, b, _)| (c, b)), target) {
            tracing::debug!(buffered = b, ?reason, "response stream reset");
            c.kill(now);
            match reason {
                Reset::Shed => g.response_resets_shed.fetch_add(1, Relaxed),
                _ => g.response_resets_budget.fetch_add(1, Relaxed),
            };
        }
    }
}

/// The heaviest entries whose bytes together reach `target` (at least one
/// when there is any).
fn heaviest<T>(items: impl Iterator<Item = (T, u64)>, target: u64) -> Vec<(T, u64)> {
    let mut v: Vec<(T, u64)> = items.collect();
    v.sort_unstable_by_key(|(_, b)| std::cmp::Reverse(*b));
    let mut sum = 0;
    let mut n = 0;
    for (_, b) in &v {
        if sum >= target && n > 0 {
            break;
        }
        sum += b;
        n += 1;
    }
    v.truncate(n);
    v
}

/// Bytes reserved for a chunk not yet read; returned when dropped.
pub(crate) struct Reservation {
    budget: Arc<ResponseBudget>,
    n: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.sub(self.n);
        }
    }
}

/// The owner of a charged chunk.
struct Charged {
    data: Bytes,
    n: u64,
    budget: Arc<ResponseBudget>,
    ctl: Arc<Ctl>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.budget.sub(self.n);
        self.ctl.buffered.fetch_sub(self.n, Relaxed);
        self.ctl.progress_ms.store(self.budget.now_ms(), Relaxed);
    }
}

struct Scope {
    budget: Arc<ResponseBudget>,
    ctl: Option<Arc<Ctl>>,
    parent: Option<Arc<Ctl>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` (a poll of one stream, or of an HTTP/1.1 connection) with
/// `slot` as its [`Ctl`]; a body charging its first chunk fills `slot`
/// (with `parent`, the stream's connection).
pub(crate) fn within<R>(
    budget: &Arc<ResponseBudget>,
    slot: &mut Option<Arc<Ctl>>,
    parent: Option<&Arc<Ctl>>,
    f: impl FnOnce() -> R,
) -> R {
    let scope = Scope {
        budget: budget.clone(),
        ctl: slot.take(),
        parent: parent.cloned(),
    };
    let prev = CURRENT.with(|c| c.replace(Some(scope)));
    let r = f();
    if let Some(scope) = CURRENT.with(|c| c.replace(prev)) {
        *slot = scope.ctl;
    }
    r
}

/// Bytes the stream being polled holds now.
fn current_buffered() -> u64 {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|s| s.ctl.as_ref())
            .map_or(0, |ctl| ctl.buffered.load(Relaxed))
    })
}

/// The budget of the stream being polled, if any.
pub(crate) fn current() -> Option<Arc<ResponseBudget>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|s| s.budget.clone()))
}

/// The current stream's control, created and registered on first use
/// (outside any scope, one of its own that only the stall sweep sees).
fn current_ctl(budget: &ResponseBudget) -> Arc<Ctl> {
    let existing = CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let scope = c.as_mut()?;
        Some(match &scope.ctl {
            Some(ctl) => ctl.clone(),
            None => {
                let ctl = Arc::new(Ctl::new(scope.parent.clone()));
                scope.ctl = Some(ctl.clone());
                ctl
            }
        })
    });
    let ctl = existing.unwrap_or_else(|| Arc::new(Ctl::new(None)));
    if !ctl.registered.swap(true, Relaxed) {
        budget.register(&ctl);
    }
    ctl
}

#[cfg(test)]
mod tests {
    use crate::gateway::respbudget::*;

    #[test]
    fn heaviest_takes_the_largest_until_the_target() {
        let got = heaviest([("a", 5), ("b", 50), ("c", 20), ("d", 1)].into_iter(), 60);
        assert_eq!(got, vec![("b", 50), ("c", 20)]);
        let one = heaviest([("a", 5), ("b", 7)].into_iter(), 0);
        assert_eq!(one, vec![("b", 7)]);
        assert!(heaviest(std::iter::empty::<((), u64)>(), 10).is_empty());
    }

    fn budget(limit: &str, stall: &str) -> Arc<ResponseBudget> {
        let mut cfg = crate::config::Config::embedded().unwrap().gateway;
        cfg.response_budget = crate::config::parse::size(limit).unwrap();
        cfg.send_stall_timeout = crate::config::parse::duration(stall).unwrap();
        Arc::new(ResponseBudget::new(&cfg, Stats::new(16)))
    }

    #[test]
    fn a_full_budget_pauses_until_a_chunk_is_written() {
        const C: u64 = 16 * 1024;
        let b = budget("1MiB", "10s");
        let waker = futures::task::noop_waker();
        let cx = Context::from_waker(&waker);
        let fill = |slot: &mut Option<Arc<Ctl>>, held: &mut Vec<Bytes>| {
            within(&b, slot, None, || {
                while let Poll::Ready(r) = b.poll_reserve(&cx) {
                    held.push(b.charge(Bytes::from(vec![0u8; C as usize]), Some(r)));
                }
            });
        };
        let (mut heavy, mut held) = (None, Vec::new());
        fill(&mut heavy, &mut held);
        // A stream holding bytes stops at 7/8 of the budget.
        assert_eq!(held.len(), 56);
        assert_eq!(b.used(), 56 * C);
        assert_eq!(heavy.as_ref().unwrap().buffered.load(Relaxed), 56 * C);
        // A stream holding nothing may use the rest, one chunk at a time.
        let mut light_held = Vec::new();
        for _ in 0..8 {
            let mut light = None;
            within(&b, &mut light, None, || {
                let Poll::Ready(r) = b.poll_reserve(&cx) else {
                    panic!("headroom for a light stream")
                };
                light_held.push(b.charge(Bytes::from(vec![0u8; C as usize]), Some(r)));
            });
        }
        assert_eq!(b.used(), 1 << 20);
        assert!(within(&b, &mut None, None, || b.poll_reserve(&cx)).is_pending());
        // A slice keeps the charge; the last piece returns it.
        let piece = light_held[0].slice(0..10);
        light_held.remove(0);
        assert_eq!(b.used(), 1 << 20);
        drop(piece);
        assert_eq!(b.used(), (1 << 20) - C);
        let Poll::Ready(r) = within(&b, &mut None, None, || b.poll_reserve(&cx)) else {
            panic!("room for one chunk")
        };
        assert_eq!(b.used(), 1 << 20);
        drop(r);
        assert_eq!(b.used(), (1 << 20) - C, "the reservation came back");
        drop((held, light_held));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn stalled_and_heaviest_streams_are_killed() {
        let b = budget("1MiB", "10s");
        let (mut light, mut heavy) = (None, None);
        let _l = within(&b, &mut light, None, || {
            b.charge(Bytes::from(vec![0u8; 1000]), None)
        });
        let _h = within(&b, &mut heavy, None, || {
            b.charge(Bytes::from(vec![0u8; 40_000]), None)
        });
        b.sweep();
        let (light, heavy) = (light.unwrap(), heavy.unwrap());
        assert!(!light.killed.load(Relaxed) && !heavy.killed.load(Relaxed));
        b.stats.memory.overload_state.store(2, Relaxed);
        b.sweep();
        assert!(heavy.killed.load(Relaxed), "the heaviest goes first");
        assert!(!light.killed.load(Relaxed));
        b.stats.memory.overload_state.store(0, Relaxed);
        b.stall_ms.store(0, Relaxed);
        b.sweep();
        assert!(light.killed.load(Relaxed), "stalled");
        assert_eq!(b.stats.gateway.response_resets_stall.load(Relaxed), 1);
        assert_eq!(b.stats.gateway.response_resets_shed.load(Relaxed), 1);
    }
}
