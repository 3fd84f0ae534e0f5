//! Per-second rates over the last minute (the dashboard's sparklines) or
//! minutes (the web page's charts), derived from the cumulative counters of
//! successive snapshots. The snapshot's own uptime is the clock, so this is
//! pure and tests need no sleeping.

use std::collections::VecDeque;
use std::time::Duration;

use super::labels::DropReason;
use super::snapshot::Snapshot;

/// Points kept per series by default: one per second.
pub const SECONDS: usize = 60;
const N_REASON: usize = DropReason::ALL.len();

#[derive(Debug, Clone, PartialEq)]
struct Totals {
    at: Duration,
    dhcp: u64,
    api: u64,
    drops: [u64; N_REASON],
}

impl Totals {
    fn of(s: &Snapshot) -> Self {
        let mut drops = [0; N_REASON];
        for (reason, n) in &s.drops {
            if let Some(i) = DropReason::ALL.iter().position(|r| r == reason) {
                drops[i] = *n;
            }
        }
        Self {
            at: s.uptime,
            dhcp: s.dhcp_total,
            api: s.gateway_requests_total,
            drops,
        }
    }
}

/// Per-second series, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    last: Option<Totals>,
    /// Points kept per series.
    points: usize,
    /// Points added so far (readers that copy the series see a new one).
    pub added: u64,
    pub dhcp: VecDeque<u64>,
    pub api: VecDeque<u64>,
    pub drops: VecDeque<u64>,
    /// Drops per second by reason over the last point; nonzero ones only,
    /// busiest first.
    pub drops_by_reason: Vec<(DropReason, u64)>,
}

impl Default for History {
    fn default() -> Self {
        Self::with_points(SECONDS)
    }
}

impl History {
    /// A history keeping `points` seconds per series.
    pub fn with_points(points: usize) -> Self {
        Self {
            last: None,
            points: points.max(1),
            added: 0,
            dhcp: VecDeque::new(),
            api: VecDeque::new(),
            drops: VecDeque::new(),
            drops_by_reason: Vec::new(),
        }
    }

    /// Folds in a snapshot; adds a point once a second or more has passed
    /// since the last one. A snapshot from a restarted process starts over.
    pub fn observe(&mut self, snap: &Snapshot) {
        let now = Totals::of(snap);
        let Some(prev) = &self.last else {
            self.last = Some(now);
            return;
        };
        if now.at < prev.at || now.dhcp < prev.dhcp || now.api < prev.api {
            *self = Self::with_points(self.points);
            self.last = Some(now);
            return;
        }
        let dt = (now.at - prev.at).as_secs_f64();
        if dt < 1.0 {
            return;
        }
        let per_sec = |a: u64, b: u64| (b.saturating_sub(a) as f64 / dt).round() as u64;
        let pts = self.points;
        push(&mut self.dhcp, pts, per_sec(prev.dhcp, now.dhcp));
        push(&mut self.api, pts, per_sec(prev.api, now.api));
        let by: Vec<(DropReason, u64)> = DropReason::ALL
            .iter()
            .zip(prev.drops.iter().zip(&now.drops))
            .map(|(r, (a, b))| (*r, per_sec(*a, *b)))
            .filter(|(_, n)| *n > 0)
            .collect();
        push(&mut self.drops, pts, by.iter().map(|(_, n)| n).sum());
        self.drops_by_reason = by;
        self.drops_by_reason
            .sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        self.added += 1;
        self.last = Some(now);
    }

    /// The latest per-second values `(dhcp, api, drops)`.
    pub fn latest(&self) -> (u64, u64, u64) {
        let last = |q: &VecDeque<u64>| q.back().copied().unwrap_or(0);
        (last(&self.dhcp), last(&self.api), last(&self.drops))
    }
}

fn push(q: &mut VecDeque<u64>, points: usize, v: u64) {
    if q.len() >= points {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(secs: u64, dhcp: u64, rate_limited: u64) -> Snapshot {
        Snapshot {
            uptime: Duration::from_secs(secs),
            dhcp_total: dhcp,
            drops: vec![(DropReason::RateLimited, rate_limited)],
            ..Snapshot::default()
        }
    }

    #[test]
    fn one_point_per_second_bounded() {
        let mut h = History::default();
        for s in 0..100 {
            h.observe(&snap(s, s * 50, s * 10));
        }
        assert_eq!(h.dhcp.len(), SECONDS);
        assert_eq!(h.latest(), (50, 0, 10));
        assert_eq!(h.drops_by_reason, vec![(DropReason::RateLimited, 10)]);
    }

    #[test]
    fn sub_second_snapshots_accumulate_and_restart_resets() {
        let mut h = History::default();
        h.observe(&snap(10, 0, 0));
        h.observe(&Snapshot {
            uptime: Duration::from_millis(10_500),
            dhcp_total: 100,
            ..Snapshot::default()
        });
        assert!(h.dhcp.is_empty());
        h.observe(&snap(12, 400, 0));
        assert_eq!(h.dhcp.back(), Some(&200));
        h.observe(&snap(1, 0, 0));
        assert!(h.dhcp.is_empty());
    }
}
