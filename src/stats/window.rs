//! A sliding-window event counter: a ring of fixed-width time buckets.
//!
//! Time is a tick number derived from the `now` the caller passes in (the
//! table never reads the clock, so tests use fixed instants). A window sum
//! covers the current, partly elapsed bucket plus the ones before it, so a
//! burst shows at once; the price is that right after a bucket boundary
//! the window is short by up to one bucket and under-reads by that share.

use std::time::Duration;

/// Width of one bucket.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// Buckets per second.
pub(super) const TICKS_PER_SEC: u64 = 4;

#[derive(Debug, Clone)]
pub(super) struct Window<const N: usize> {
    /// Tick of the newest bucket.
    last: u64,
    /// No bucket older than this tick holds a count.
    oldest: u64,
    buckets: [u32; N],
}

impl<const N: usize> Default for Window<N> {
    fn default() -> Self {
        Self {
            last: 0,
            oldest: 0,
            buckets: [0; N],
        }
    }
}

impl<const N: usize> Window<N> {
    /// Counts `n` events at `tick`. An older tick than the newest bucket
    /// (threads take `now` before the lock, so they can arrive slightly out
    /// of order) counts in the newest bucket.
    pub(super) fn add(&mut self, tick: u64, n: u32) {
        self.advance(tick);
        let b = &mut self.buckets[(self.last % N as u64) as usize];
        *b = b.saturating_add(n);
    }

    /// Events in the `span` buckets ending at `tick` (inclusive): the ticks
    /// both in that span and still in the ring, one contiguous run of it.
    pub(super) fn sum(&self, tick: u64, span: u64) -> u64 {
        let n = N as u64;
        let span = span.min(n);
        if span == 0 {
            return 0;
        }
        let lo = tick
            .saturating_sub(span - 1)
            .max(self.last.saturating_sub(n - 1));
        let hi = tick.min(self.last);
        if lo > hi {
            return 0;
        }
        let (before, from) = self.buckets.split_at((lo % n) as usize);
        let len = (hi - lo + 1) as usize;
        from.iter()
            .chain(before)
            .take(len)
            .map(|&b| u64::from(b))
            .sum()
    }

    /// Adds `other`'s buckets into this one, aligned by tick. Walks only
    /// the ticks `other` may have counted in, which for a client evicted
    /// after a short life is one or two buckets: this runs per eviction.
    pub(super) fn merge(&mut self, other: &Self) {
        self.advance(other.last);
        let from = other.oldest.max(other.last.saturating_sub(N as u64 - 1));
        self.oldest = self.oldest.min(from);
        for t in from..=other.last {
            if self.holds(t) {
                let i = (t % N as u64) as usize;
                self.buckets[i] = self.buckets[i].saturating_add(other.buckets[i]);
            }
        }
    }

    /// Whether the bucket for tick `t` is still in the ring.
    fn holds(&self, t: u64) -> bool {
        t <= self.last && self.last - t < N as u64
    }

    /// Moves the ring forward to `tick`, clearing the buckets it skips.
    fn advance(&mut self, tick: u64) {
        if tick <= self.last {
            return;
        }
        if tick - self.last >= N as u64 {
            self.buckets = [0; N];
            self.oldest = tick;
        } else {
            for t in self.last + 1..=tick {
                self.buckets[(t % N as u64) as usize] = 0;
            }
        }
        self.last = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_slide_and_expire() {
        let mut w = Window::<8>::default();
        w.add(0, 3);
        w.add(2, 5);
        assert_eq!(w.sum(2, 1), 5);
        assert_eq!(w.sum(2, 3), 8);
        assert_eq!(w.sum(9, 8), 5, "tick 0 left the ring");
        assert_eq!(w.sum(100, 8), 0);
        w.add(1, 1);
        assert_eq!(w.sum(2, 1), 6, "a late event counts in the newest bucket");
    }

    proptest::proptest! {
        /// The run of buckets summed is the ticks the span and the ring share.
        #[test]
        fn sum_is_the_ticks_in_span_and_ring(
            adds in proptest::collection::vec((0u64..40, 1u32..5), 0..30),
            tick in 0u64..50,
            span in 0u64..12,
        ) {
            let mut w = Window::<8>::default();
            for (t, n) in adds {
                w.add(t, n);
            }
            let naive: u64 = (0..span.min(8))
                .filter_map(|k| tick.checked_sub(k))
                .filter(|&t| w.holds(t))
                .map(|t| u64::from(w.buckets[(t % 8) as usize]))
                .sum();
            proptest::prop_assert_eq!(w.sum(tick, span), naive);
        }
    }

    #[test]
    fn merge_aligns_by_tick() {
        let mut a = Window::<4>::default();
        let mut b = Window::<4>::default();
        a.add(1, 1);
        b.add(5, 2);
        b.add(3, 7);
        a.merge(&b);
        assert_eq!(a.sum(5, 4), 9, "a's tick 1 fell out when a moved to 5");
        assert_eq!(a.sum(5, 1), 9);
    }
}
