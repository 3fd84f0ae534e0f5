//! The process-wide budget for buffered response bytes. A byte is charged
//! from when the gateway takes it from an upstream (or builds it) until
//! the connection has written it: each chunk handed to hyper is a `Bytes`
//! whose owner gives the charge back when dropped after the write. An
//! upstream body reserves one chunk before it is polled and is not polled
//! while the budget is full (backpressure reaches the upstream). A stream's
//! [`Ctl`] reaches its body through a thread-local set while the
//! connection polls that stream ([`within`]): hyper's body type cannot
//! carry it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::ctl::Ctl;
use crate::stats::Stats;

/// 1/HEADROOM of the budget is only for streams holding no bytes.
const HEADROOM: u64 = 8;

pub(crate) struct ResponseBudget {
    pub(super) limit: AtomicU64,
    used: AtomicU64,
    /// What an upstream body reserves before it is polled: the largest
    /// chunk it yields (an h2 DATA frame or an HTTP/1.1 read).
    pub(super) chunk: u64,
    pub(super) stall_ms: AtomicU64,
    epoch: Instant,
    /// Bodies waiting for room, oldest first: those of streams holding
    /// nothing, then the others.
    waiters: Mutex<[VecDeque<Waker>; 2]>,
    n_waiters: AtomicUsize,
    /// Every stream that was charged; dead entries are pruned by the sweep.
    pub(super) streams: Mutex<Vec<Weak<Ctl>>>,
    pub(super) stats: Arc<Stats>,
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

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// The `response_buffered` gauge follows `used`.
    fn gauge(&self, n: u64, up: bool) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let g = &self.stats.gateway.response_buffered;
        match up {
            true => g.fetch_add(n, Relaxed),
            false => g.fetch_sub(n, Relaxed),
        };
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Relaxed);
        self.gauge(n, true);
    }

    fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Relaxed);
        self.gauge(n, false);
        if self.n_waiters.load(Relaxed) > 0 {
            self.wake_room();
        }
    }

    /// What streams already holding bytes may fill: the last eighth is
    /// kept for streams whose clients took everything sent so far, so
    /// never-reading clients cannot starve reading ones.
    pub(super) fn heavy_limit(limit: u64) -> u64 {
        limit - limit / HEADROOM
    }

    /// Wakes as many waiting bodies as there is room for chunks, light ones
    /// first, first come first woken: waking all of them on every write
    /// would poll thousands of streams for one chunk.
    pub(super) fn wake_room(&self) {
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
            self.gauge(n, true);
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

    /// Ends a stream (an HTTP/1.1 stream's connection) from outside its
    /// task, as the sweeper does.
    pub(crate) fn reset(&self, ctl: &Ctl) {
        ctl.kill(self.now_ms());
    }

    fn register(&self, ctl: &Arc<Ctl>) {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(ctl));
    }
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

/// The control of the stream being polled, once a chunk was charged to it.
pub(crate) fn current_stream() -> Option<Arc<Ctl>> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|s| s.ctl.clone()))
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
