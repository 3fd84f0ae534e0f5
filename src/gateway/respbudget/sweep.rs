//! The sweeper: resets the streams whose client accepted nothing for
//! `send_stall_timeout`; while the budget is full, the heaviest streams that
//! made no progress for [`PRESSURE_IDLE`]; and, while the governor sheds,
//! the heaviest streams holding half the bytes of those above two chunks
//! (Envoy's `reset_high_memory_stream`). A reset drops the stream's future,
//! so h2 sends RST_STREAM and drops its queued chunks.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::budget::ResponseBudget;
use super::ctl::{Ctl, Reset};

/// How long a stream must have made no progress to be reset while the
/// budget is full: a reading client empties its buffers far sooner.
pub(crate) const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// How long a reset stream's bytes may stay queued before its connection
/// is reset too.
const ESCALATE_MS: u64 = 500;

/// The sweeper's period at most (shorter when the stall timeout is short).
const SWEEP: Duration = Duration::from_millis(250);

impl ResponseBudget {
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
        let shedding = self.stats.shedding();
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
pub(super) fn heaviest<T>(items: impl Iterator<Item = (T, u64)>, target: u64) -> Vec<(T, u64)> {
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
