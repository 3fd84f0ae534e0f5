//! When a receive loop (v4's and v6's) is busy enough to coalesce: under
//! load it sleeps [`COALESCE`] between looks and takes what gathered
//! meanwhile in one go, a few datagrams per system call and per wake-up.

use std::time::{Duration, Instant};

/// Under load the loop sleeps this long between looks and takes what
/// gathered meanwhile in one go: waking for every datagram (and waking the
/// peer for every reply) costs more CPU than answering it. Bounds the extra
/// wait of a packet under load; see `bench/RESULTS-*.md`.
pub const COALESCE: Duration = Duration::from_micros(500);

/// Datagrams per second from which the loop sleeps [`COALESCE`] between
/// looks: enough that a look finds a few; below it, every datagram wakes
/// the loop at once.
const BUSY_RATE: u32 = 5_000;

/// Counts arrivals per 10 ms window: is the loop busy enough to coalesce?
#[derive(Debug)]
pub struct Pace {
    since: Instant,
    count: u32,
    previous: u32,
}

impl Pace {
    const WINDOW: Duration = Duration::from_millis(10);
    const BUSY: u32 = BUSY_RATE / 100;

    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            count: 0,
            previous: 0,
        }
    }

    /// Counts `got` arrivals at `now`; whether the loop should coalesce.
    pub fn busy(&mut self, got: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Self::WINDOW {
            // A quiet window after a busy one counts as quiet.
            self.previous = if elapsed >= 2 * Self::WINDOW {
                0
            } else {
                self.count
            };
            self.count = 0;
            self.since = now;
        }
        self.count = self.count.saturating_add(got as u32);
        self.count.max(self.previous) >= Self::BUSY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop coalesces from BUSY_RATE datagrams a second on, and stops
    /// once a whole window passes below it.
    #[test]
    fn pace_turns_busy_at_the_busy_rate_and_quiet_after_a_quiet_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = Pace::new(t0);
        // 1,000 a second: one every millisecond.
        assert!((0..30).all(|i| !pace.busy(1, ms(i))));
        // 10,000 a second: ten every millisecond.
        assert!(!pace.busy(10, ms(30)));
        assert!(pace.busy(Pace::BUSY as usize, ms(31)));
        assert!(pace.busy(1, ms(41)), "the busy window still counts");
        // Silence for two windows: quiet at once.
        assert!(!pace.busy(1, ms(70)));
    }
}
