//! The memory governor: samples RSS and jemalloc's statistics into
//! `stats.memory`, purges the arenas (on an interval, more often under
//! pressure, after a burst of closes) and moves the overload state with
//! hysteresis; above the shed mark services see `Stats::shedding()`.
//! A purge reaches only the calling thread's tcache, so busy gateway
//! threads flush their own ([`trim_thread_cache`]).

use std::ffi::CStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tikv_jemalloc_ctl::{epoch, epoch_mib, stats as jstats};
use tokio_util::sync::CancellationToken;

use crate::config::MemoryConfig;
use crate::events::{EventKind, EventLog};
use crate::stats::Stats;

pub use crate::stats::OverloadState as State;

/// How often the heap is divided by owner: that walks the owners' page
/// tables (`crate::heap`), whose cost grows with what they mapped, so it
/// runs at the snapshots' pace, not every sample (the state machine reads
/// RSS every sample).
const OWNERS_EVERY: Duration = Duration::from_millis(250);

/// The marks in bytes, derived from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marks {
    pub shrink: u64,
    pub shed: u64,
    /// Bytes below a mark before its state is left.
    pub hysteresis: u64,
}

impl Marks {
    pub fn from_config(c: &MemoryConfig) -> Self {
        let at = |f: f64| (c.budget as f64 * f) as u64;
        Self {
            shrink: at(c.shrink_at),
            shed: at(c.shed_at),
            hysteresis: at(c.hysteresis),
        }
    }
}

/// The state machine: pure, so its hysteresis is tested without memory.
pub fn next_state(current: State, rss: u64, m: Marks) -> State {
    let above = |mark: u64| rss >= mark;
    let below = |mark: u64| rss < mark.saturating_sub(m.hysteresis);
    match current {
        _ if above(m.shed) => State::Shed,
        State::Shed if !below(m.shed) => State::Shed,
        State::Normal if above(m.shrink) => State::Shrink,
        State::Normal => State::Normal,
        // Leaving shed or staying in shrink: drop to normal only well below the shrink mark.
        State::Shed | State::Shrink if below(m.shrink) => State::Normal,
        State::Shed | State::Shrink => State::Shrink,
    }
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a constant.
        #[allow(unsafe_code)]
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
    })
}

/// jemalloc's view of the heap, read through cached MIBs.
pub struct Heap {
    epoch: epoch_mib,
    allocated: jstats::allocated_mib,
    resident: jstats::resident_mib,
    retained: jstats::retained_mib,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    pub allocated: u64,
    pub resident: u64,
    pub retained: u64,
}

impl Heap {
    pub fn new() -> Option<Self> {
        Some(Self {
            epoch: epoch::mib().ok()?,
            allocated: jstats::allocated::mib().ok()?,
            resident: jstats::resident::mib().ok()?,
            retained: jstats::retained::mib().ok()?,
        })
    }

    /// Advances the epoch (jemalloc caches its statistics) and reads them.
    pub fn read(&self) -> HeapStats {
        let _ = self.epoch.advance();
        let rd = |r: Result<usize, _>| r.map(|v: usize| v as u64).unwrap_or(0);
        HeapStats {
            allocated: rd(self.allocated.read()),
            resident: rd(self.resident.read()),
            retained: rd(self.retained.read()),
        }
    }
}

/// Returns every arena's dirty and muzzy pages to the OS.
///
/// `arena.<MALLCTL_ARENAS_ALL>.purge` takes no value, which the safe
/// `tikv_jemalloc_ctl::raw` helpers cannot express, so it is one raw
/// `mallctl` call with null pointers. The calling thread's tcache is flushed
/// first so its cached blocks are purgeable too.
pub fn purge() -> bool {
    const PURGE: &CStr = c"arena.4096.purge"; // 4096 == MALLCTL_ARENAS_ALL
    let _ = flush_thread_cache();
    void_ctl(PURGE)
}

/// Hands the calling thread's cached free blocks (its jemalloc tcache) back
/// to their arenas, where whole free pages can then be purged. Other
/// threads' caches are out of reach: each thread flushes its own.
pub fn flush_thread_cache() -> bool {
    void_ctl(c"thread.tcache.flush")
}

/// A `mallctl` that takes and returns nothing.
fn void_ctl(name: &CStr) -> bool {
    // SAFETY: only called with "void" controls: jemalloc reads no input
    // and writes no output when all four pointers are null/0.
    #[allow(unsafe_code)]
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

/// Bytes the calling thread has allocated since it started (a counter).
fn thread_allocated() -> Option<u64> {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .ok()
        .map(|p| p.get())
}

/// Flushes made by [`trim_thread_cache`] on every thread (what its test
/// checks: jemalloc also trims tcaches on its own, so their size cannot
/// tell whether the trim ran).
#[cfg(test)]
static TRIM_FLUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Keeps the calling thread's tcache from holding on to a burst: every
/// `every`, if the thread allocated since the last look, its tcache is
/// flushed. jemalloc trims a tcache only as its thread allocates, so after
/// a burst a thread that goes quiet would otherwise keep up to a few MiB of
/// free blocks cached — and the pages under them resident — indefinitely
/// (the governor's purge cannot reach another thread's cache). Costs one
/// flush per `every` while busy, nothing while idle.
///
/// Must run on a current-thread runtime (a gateway thread's): the counter
/// and the cache are the polling thread's. Cancel-safe: holds no state
/// worth keeping.
pub async fn trim_thread_cache(every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = thread_allocated();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = thread_allocated();
        if now != seen {
            let _ = flush_thread_cache();
            #[cfg(test)]
            TRIM_FLUSHES.fetch_add(1, Relaxed);
            // The flush itself may allocate bookkeeping; count from here.
            seen = thread_allocated();
        }
    }
}

/// The sampler/governor task. Cancel-safe: all state is local.
pub struct Governor {
    stats: Arc<Stats>,
    events: Arc<EventLog>,
    config: MemoryConfig,
    heap: Option<Heap>,
    state: State,
    last_purge: Instant,
    last_connections: i64,
    /// When the heap was last divided by owner.
    owners_at: Option<Instant>,
}

impl Governor {
    pub fn new(stats: Arc<Stats>, events: Arc<EventLog>, config: MemoryConfig) -> Self {
        crate::heap::init();
        stats.memory.budget_bytes.store(config.budget, Relaxed);
        Self {
            stats,
            events,
            config,
            heap: Heap::new(),
            state: State::Normal,
            last_purge: Instant::now(),
            last_connections: 0,
            owners_at: None,
        }
    }

    /// New marks and intervals from a reloaded config.
    pub fn reconfigure(&mut self, config: MemoryConfig) {
        self.stats.memory.budget_bytes.store(config.budget, Relaxed);
        self.config = config;
    }

    /// Samples until `cancel`; new marks from `updates` (SIGHUP) apply at
    /// once. Cancel-safe: all state is local.
    pub async fn run(
        mut self,
        mut updates: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.sample_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.step(Instant::now()),
                Ok(()) = updates.changed() => {
                    let memory = updates.borrow_and_update().memory.clone();
                    tracing::info!(budget = memory.budget, "memory marks reloaded");
                    if memory.sample_interval != self.config.sample_interval {
                        tick = tokio::time::interval(memory.sample_interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    }
                    self.reconfigure(memory);
                }
            }
        }
    }

    /// One sample: publish, move the state machine, purge if due.
    pub fn step(&mut self, now: Instant) {
        let rss = rss_bytes();
        self.publish(rss, now);
        let next = next_state(self.state, rss, Marks::from_config(&self.config));
        if next != self.state {
            self.transition(next, rss);
        }
        let conns = self.stats.gateway.connections.load(Relaxed);
        let burst_closed = self.last_connections - conns >= 64.max(self.last_connections / 2);
        self.last_connections = conns;
        let every = match self.state {
            State::Normal => self.config.shrink_interval,
            State::Shrink => self.config.shrink_interval / 5,
            State::Shed => self.config.sample_interval * 2,
        };
        if burst_closed
            || now.duration_since(self.last_purge) >= every.max(Duration::from_millis(50))
        {
            self.shrink(now, rss);
        }
    }

    /// Stores the figures, RSS last: a snapshot taken meanwhile divides the
    /// previous RSS, never a new RSS among owners not yet read (all 0 at start).
    /// The owners are read every [`OWNERS_EVERY`]; jemalloc's allocated
    /// bytes only with them (the same epoch as the figures they divide).
    fn publish(&mut self, rss: u64, now: Instant) {
        let m = &self.stats.memory;
        let owners_due = self
            .owners_at
            .is_none_or(|t| now.saturating_duration_since(t) >= OWNERS_EVERY);
        if let Some(h) = &self.heap {
            let s = h.read();
            if owners_due {
                m.heap_allocated.store(s.allocated, Relaxed);
            }
            m.heap_resident.store(s.resident, Relaxed);
            m.heap_retained.store(s.retained, Relaxed);
        }
        if let Some(h) = owners_due.then(crate::heap::read).flatten() {
            self.owners_at = Some(now);
            m.owner_store.store(h.store, Relaxed);
            m.owner_clients.store(h.clients, Relaxed);
            m.owner_dhcp.store(h.dhcp, Relaxed);
            m.owner_gateway.store(h.gateway, Relaxed);
            m.heap_unowned.store(h.unowned, Relaxed);
            m.heap_dirty.store(h.dirty, Relaxed);
            m.heap_metadata.store(h.metadata, Relaxed);
            // The owners' epoch: the same instant as the figures they divide.
            m.heap_allocated.store(h.allocated, Relaxed);
        }
        m.rss_bytes.store(rss, Relaxed);
    }

    fn transition(&mut self, next: State, rss: u64) {
        let msg = format!(
            "overload {} -> {}: rss {} MiB of {} MiB budget",
            self.state.as_str(),
            next.as_str(),
            rss >> 20,
            self.config.budget >> 20
        );
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    from = self.state.as_str(),
                    to = next.as_str(),
                    rss,
                    budget = self.config.budget,
                    "{msg}"
                )
            };
        }
        if next > self.state {
            log!(warn);
        } else {
            log!(info);
        }
        self.events.push(EventKind::Overload, msg);
        self.state = next;
        self.stats.memory.overload_state.store(next as u64, Relaxed);
        if next > State::Normal {
            // Entering shrink or shed: purge now, not at the next interval.
            self.last_purge = Instant::now() - self.config.shrink_interval;
        }
    }

    fn shrink(&mut self, now: Instant, rss_before: u64) {
        self.last_purge = now;
        if !purge() {
            return;
        }
        let rss_after = rss_bytes();
        let reclaimed = rss_before.saturating_sub(rss_after);
        let m = &self.stats.memory;
        m.heap_shrinks.fetch_add(1, Relaxed);
        m.last_reclaim_bytes.store(reclaimed, Relaxed);
        m.rss_bytes.store(rss_after, Relaxed);
        if reclaimed >= 1 << 20 {
            let msg = format!("heap shrink returned {} MiB", reclaimed >> 20);
            tracing::debug!(reclaimed, "{msg}");
            self.events.push(EventKind::HeapShrink, msg);
        }
    }
}

#[cfg(test)]
mod tests;
