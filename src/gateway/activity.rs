//! Request activity on one connection: what the connection watchdog
//! ([`super::conn`]) reads to close a silent connection or drain an idle one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Request activity on one connection, for the watchdog.
pub(crate) struct Activity {
    started: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last time `in_flight` fell to 0.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        ActivityGuard(self.clone())
    }
}

pub(crate) struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    /// `last_ms` is only read while nothing is in flight, so only the
    /// request that leaves the connection idle reads the clock.
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.last_ms.store(self.0.now_ms(), Relaxed);
        }
    }
}

pub(crate) enum Verdict {
    /// No complete first request in time: close without ceremony.
    Close,
    /// Idle: GOAWAY and let it finish.
    Drain,
}

/// Resolves when the connection should go. Cancel-safe (only sleeps).
pub(crate) async fn watchdog(act: &Activity, header_timeout: Duration, idle: Duration) -> Verdict {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    loop {
        let now = act.now_ms();
        let (deadline, verdict) = if act.requests.load(Relaxed) == 0 {
            (ms(header_timeout), Verdict::Close)
        } else if act.in_flight.load(Relaxed) == 0 {
            (
                act.last_ms.load(Relaxed).saturating_add(ms(idle)),
                Verdict::Drain,
            )
        } else {
            (now.saturating_add(ms(idle)), Verdict::Drain)
        };
        if now >= deadline {
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(deadline - now)).await;
    }
}
