//! A fixed-bucket histogram of atomics (Prometheus `le` semantics).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds shared by every histogram here: they cover both seconds
/// (100 µs … 10 s) and batch sizes (1 … 4096) well enough.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0, 4.0, 16.0, 64.0, 256.0,
    1024.0, 4096.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    /// Sum in micro-units so it can live in an integer atomic.
    sum_micros: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bound in [`BOUNDS`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&self, v: f64) {
        let i = BOUNDS.iter().position(|b| v <= *b).unwrap_or(BOUNDS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        // Saturating float→int cast; negative or NaN observations count as 0.
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Relaxed),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(0.0002);
        h.observe(0.5);
        h.observe(1e9);
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[1], 1);
        assert_eq!(s.cumulative[9], 2);
        assert_eq!(s.cumulative.last(), Some(&2), "1e9 lands only in +Inf");
    }
}
