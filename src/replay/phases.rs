//! The replay's phases and the recorder every load generator reports to.
//!
//! Each result is filed under the phase that was current when its request
//! *started*, so a slow answer that lands in the next phase still counts
//! against the phase that caused it. Cumulative per-kind totals (atomics)
//! feed the sampler's per-100 ms rates; per-phase results keep latencies for
//! the percentiles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The incident, step by step. Loads are cumulative: each loaded phase keeps
/// the loads of the phases before it, except the flood, which is a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// No load: the idle baseline.
    Idle,
    /// Legit API over HTTP/2 and legit DHCP clients.
    Steady,
    /// + requests to a slow upstream behind a `[[route]]`.
    SlowUpstream,
    /// + one MAC flooding DISCOVER/REQUEST.
    Flood,
    /// + HTTP/2 streams with large bodies that never read their responses.
    Finale,
    /// All load stopped: does memory come back?
    Tail,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::Steady,
        Phase::SlowUpstream,
        Phase::Flood,
        Phase::Finale,
        Phase::Tail,
    ];
    /// The phases that carry legit load and are judged on it.
    pub const LOADED: [Phase; 4] = [
        Phase::Steady,
        Phase::SlowUpstream,
        Phase::Flood,
        Phase::Finale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Steady => "steady",
            Phase::SlowUpstream => "slow-upstream",
            Phase::Flood => "dhcp-flood",
            Phase::Finale => "finale",
            Phase::Tail => "tail",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    fn from_index(i: u8) -> Phase {
        Phase::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Phase::Tail)
    }
}

/// What a result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Legit API requests (leases list and allocations).
    Api,
    /// Requests to the slow upstream route.
    Upstream,
    /// Legit DHCP clients: one result per full DORA.
    Dhcp,
    /// Flood packets sent.
    FloodSent,
    /// Replies to flood packets received.
    FloodAnswered,
    /// Finale streams opened.
    Finale,
}

pub const KINDS: usize = 6;

/// Results of one kind within one phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindStats {
    pub ok: u64,
    pub err: u64,
    /// Latencies of the successful results, microseconds.
    pub lat_us: Vec<u32>,
    /// Failures by reason: an HTTP status, or one of [`TIMEOUT`],
    /// [`TRANSPORT`], [`SKIPPED`].
    pub reasons: BTreeMap<u16, u64>,
}

/// Failure reason: no answer in time.
pub const TIMEOUT: u16 = 0;
/// Failure reason: connection or protocol error (or no reply for DHCP).
pub const TRANSPORT: u16 = 1;
/// Failure reason: not sent, the replay's own in-flight cap was reached.
pub const SKIPPED: u16 = 2;

/// A reason as text: `503`, `timeout`, `transport`, `skipped`.
pub fn reason_name(code: u16) -> String {
    match code {
        TIMEOUT => "timeout".into(),
        TRANSPORT => "transport".into(),
        SKIPPED => "skipped".into(),
        c => c.to_string(),
    }
}

impl KindStats {
    pub fn total(&self) -> u64 {
        self.ok + self.err
    }
    /// Success ratio, `None` when nothing was tried.
    pub fn success(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.ok as f64 / total as f64)
    }
}

/// Every kind's results within one phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseStats {
    pub kinds: [KindStats; KINDS],
}

impl PhaseStats {
    pub fn get(&self, kind: Kind) -> &KindStats {
        &self.kinds[kind as usize]
    }
}

/// Shared by the load generators and the sampler.
pub struct Recorder {
    started: Instant,
    phase: AtomicU8,
    /// Cumulative (ok, err) per kind, for rates.
    totals: [[AtomicU64; 2]; KINDS],
    /// std Mutex: held only to push a number, never across an `.await`.
    per_phase: Mutex<Vec<PhaseStats>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: AtomicU8::new(0),
            totals: Default::default(),
            per_phase: Mutex::new(vec![PhaseStats::default(); Phase::ALL.len()]),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn phase(&self) -> Phase {
        Phase::from_index(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn ok(&self, kind: Kind, phase: Phase, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.add(kind, phase, 1, 0, Some(us));
    }

    pub fn err(&self, kind: Kind, phase: Phase) {
        self.fail(kind, phase, TRANSPORT);
    }

    /// A failure with its reason (see [`KindStats::reasons`]).
    pub fn fail(&self, kind: Kind, phase: Phase, reason: u16) {
        self.add(kind, phase, 0, 1, None);
        let mut g = self.per_phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = g.get_mut(phase.index()) {
            *s.kinds[kind as usize].reasons.entry(reason).or_default() += 1;
        }
    }

    /// Counts `n` successes without latency (flood packets).
    pub fn count(&self, kind: Kind, phase: Phase, n: u64) {
        self.add(kind, phase, n, 0, None);
    }

    fn add(&self, kind: Kind, phase: Phase, ok: u64, err: u64, lat: Option<u32>) {
        let t = &self.totals[kind as usize];
        t[0].fetch_add(ok, Ordering::Relaxed);
        t[1].fetch_add(err, Ordering::Relaxed);
        let mut g = self.per_phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = g.get_mut(phase.index()) {
            let k = &mut s.kinds[kind as usize];
            k.ok += ok;
            k.err += err;
            k.lat_us.extend(lat);
        }
    }

    /// Cumulative (ok, err) of every kind.
    pub fn totals(&self) -> [[u64; 2]; KINDS] {
        let mut out = [[0; 2]; KINDS];
        for (o, t) in out.iter_mut().zip(&self.totals) {
            *o = [t[0].load(Ordering::Relaxed), t[1].load(Ordering::Relaxed)];
        }
        out
    }

    pub fn phases(&self) -> Vec<PhaseStats> {
        self.per_phase
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_land_in_the_phase_they_started_in() {
        let r = Recorder::new();
        r.set_phase(Phase::Flood);
        r.ok(Kind::Api, Phase::SlowUpstream, Duration::from_millis(3));
        r.err(Kind::Api, Phase::Flood);
        r.fail(Kind::Api, Phase::Flood, 503);
        r.fail(Kind::Api, Phase::Flood, 503);
        r.count(Kind::FloodSent, Phase::Flood, 500);
        let p = r.phases();
        assert_eq!(p[Phase::SlowUpstream.index()].get(Kind::Api).ok, 1);
        assert_eq!(p[Phase::SlowUpstream.index()].get(Kind::Api).lat_us, [3000]);
        assert_eq!(p[Phase::Flood.index()].get(Kind::Api).err, 3);
        let reasons = &p[Phase::Flood.index()].get(Kind::Api).reasons;
        assert_eq!(reasons.get(&503), Some(&2));
        assert_eq!(reasons.get(&TRANSPORT), Some(&1));
        assert_eq!(reason_name(TIMEOUT), "timeout");
        assert_eq!(p[Phase::Flood.index()].get(Kind::FloodSent).ok, 500);
        assert_eq!(r.totals()[Kind::Api as usize], [1, 3]);
        assert_eq!(r.phase(), Phase::Flood);
    }

    #[test]
    fn success_ratio() {
        let k = KindStats {
            ok: 99,
            err: 1,
            ..KindStats::default()
        };
        assert_eq!(k.success(), Some(0.99));
        assert_eq!(KindStats::default().success(), None);
    }
}
