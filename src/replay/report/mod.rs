//! Pure reporting: the timeline samples, the verdict against the issue's
//! targets, the printed table and the CSV. No I/O here, so all of it is
//! unit-tested.

use std::fmt::Write as _;
use std::time::Duration;

use super::phases::{reason_name, Kind, KindStats, Phase, PhaseStats, KINDS};

/// One sampler tick (every 100 ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the replay started.
    pub t: f64,
    pub phase: Phase,
    /// Target RSS: `/proc/PID/status` when spawned, else `/metrics`.
    pub rss: Option<u64>,
    /// Sum of `vpcbox_gateway_pending` over routes.
    pub pending: Option<f64>,
    pub overload: Option<f64>,
    pub health_ok: bool,
    /// Per-second rates over the last tick: (ok, err) per [`Kind`].
    pub rates: [[f64; 2]; KINDS],
}

/// The targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    pub budget: u64,
    pub legit_min: f64,
    pub recovery_max: Duration,
}

/// One line of the verdict table.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub what: String,
    pub value: String,
    pub target: String,
    pub pass: bool,
}

/// Nearest-rank percentile of `values` (unsorted), `q` in (0, 1].
pub fn percentile(values: &[u32], q: f64) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (q * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

pub fn peak_rss(samples: &[Sample]) -> Option<u64> {
    samples.iter().filter_map(|s| s.rss).max()
}

/// Seconds the health probe failed: each failed sample counts until the next.
pub fn unavailable_secs(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.health_ok)
        .map(|(i, s)| samples.get(i + 1).map_or(0.1, |n| n.t - s.t))
        .fold(0.0, |a, b| a + b) // not `sum()`: an empty f64 sum is -0.0
}

/// The RSS before the flood: the mean over the last second of the phase
/// before it (slow-upstream), or the last sample before the flood.
pub fn pre_flood_rss(samples: &[Sample]) -> Option<u64> {
    let before: Vec<&Sample> = samples
        .iter()
        .take_while(|s| s.phase < Phase::Flood)
        .collect();
    let end = before.last()?.t;
    let window: Vec<u64> = before
        .iter()
        .filter(|s| s.phase == Phase::SlowUpstream && s.t >= end - 1.0)
        .filter_map(|s| s.rss)
        .collect();
    if window.is_empty() {
        return before.iter().rev().find_map(|s| s.rss);
    }
    Some(window.iter().sum::<u64>() / window.len() as u64)
}

/// Seconds from the start of the quiet tail until RSS is within 10 % of
/// `pre`; `None` when it never got there.
pub fn recovery_secs(samples: &[Sample], pre: u64) -> Option<f64> {
    let t0 = samples.iter().find(|s| s.phase == Phase::Tail)?.t;
    let limit = pre as f64 * 1.10;
    samples
        .iter()
        .filter(|s| s.phase == Phase::Tail)
        .find(|s| s.rss.is_some_and(|r| r as f64 <= limit))
        .map(|s| s.t - t0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn legit_line(what: &str, phase: Phase, k: &KindStats, min: f64) -> Line {
    let p99 = percentile(&k.lat_us, 0.99)
        .map_or("-".into(), |us| format!("{:.1} ms", f64::from(us) / 1000.0));
    let (value, pass) = match k.success() {
        Some(r) => (
            format!("{:.2} % of {} (p99 {p99})", r * 100.0, k.total()),
            r >= min,
        ),
        None => ("no requests".into(), false),
    };
    Line {
        what: format!("{what} success, {}", phase.name()),
        value,
        target: format!(">= {:.0} %", min * 100.0),
        pass,
    }
}

/// The verdict: one line per target; `failure` is a fatal event (target
/// crashed or was killed at the RSS cap) that fails the run outright.
pub fn verdict(
    samples: &[Sample],
    phases: &[PhaseStats],
    t: &Targets,
    failure: Option<&str>,
) -> Vec<Line> {
    let mut lines = Vec::new();
    lines.push(Line {
        what: "target survived".into(),
        value: failure.unwrap_or("yes").into(),
        target: "no crash, no kill".into(),
        pass: failure.is_none(),
    });
    let peak = peak_rss(samples);
    lines.push(Line {
        what: "peak RSS".into(),
        value: peak.map_or("unknown".into(), mib),
        target: format!("<= {} (budget)", mib(t.budget)),
        pass: peak.is_some_and(|p| p <= t.budget),
    });
    let down = unavailable_secs(samples);
    lines.push(Line {
        what: "unavailable (health probe failed)".into(),
        value: format!("{down:.1} s"),
        target: "0 s".into(),
        pass: down == 0.0,
    });
    for phase in Phase::LOADED {
        let Some(p) = phases.get(phase.index()) else {
            continue;
        };
        lines.push(legit_line(
            "legit API",
            phase,
            p.get(Kind::Api),
            t.legit_min,
        ));
        lines.push(legit_line(
            "legit DHCP",
            phase,
            p.get(Kind::Dhcp),
            t.legit_min,
        ));
    }
    let pre = pre_flood_rss(samples);
    let rec = pre.and_then(|p| recovery_secs(samples, p));
    let tail = {
        let mut t = samples
            .iter()
            .filter(|s| s.phase == Phase::Tail)
            .map(|s| s.t);
        let first = t.next().unwrap_or(0.0);
        t.next_back().map_or(0.0, |last| last - first)
    };
    lines.push(Line {
        what: format!(
            "RSS back within 10 % of pre-flood ({})",
            pre.map_or("unknown".into(), mib)
        ),
        value: rec.map_or(format!("not within {tail:.1} s"), |s| format!("{s:.1} s")),
        target: format!("<= {:.0} s", t.recovery_max.as_secs_f64()),
        pass: rec.is_some_and(|s| s <= t.recovery_max.as_secs_f64()),
    });
    lines
}

/// Informational numbers from the timeline: RSS at idle, before the flood,
/// at its peak and at the end; the most pending requests; the worst
/// overload state.
pub fn summary(samples: &[Sample]) -> String {
    let idle: Vec<u64> = samples
        .iter()
        .filter(|s| s.phase == Phase::Idle)
        .filter_map(|s| s.rss)
        .collect();
    let idle = (!idle.is_empty()).then(|| idle.iter().sum::<u64>() / idle.len() as u64);
    // `rev()`: max_by picks the last of equals; we want the first.
    let peak = samples
        .iter()
        .rev()
        .filter(|s| s.rss.is_some())
        .max_by_key(|s| s.rss);
    let pending = samples
        .iter()
        .rev()
        .filter(|s| s.pending.is_some())
        .max_by(|a, b| {
            a.pending
                .partial_cmp(&b.pending)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    let overload = samples
        .iter()
        .filter_map(|s| s.overload)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let end = samples.iter().rev().find_map(|s| s.rss);
    let at = |s: Option<&Sample>, v: String| {
        s.map_or("unknown".into(), |s| {
            format!("{v} at {:.1} s ({})", s.t, s.phase.name())
        })
    };
    let opt_mib = |v: Option<u64>| v.map_or("unknown".into(), mib);
    format!(
        "RSS idle {}, pre-flood {}, peak {}, end {}; most pending {}; worst overload state {}\n",
        opt_mib(idle),
        opt_mib(pre_flood_rss(samples)),
        at(peak, opt_mib(peak.and_then(|s| s.rss))),
        opt_mib(end),
        at(
            pending,
            pending
                .and_then(|s| s.pending)
                .map_or(String::new(), |p| format!("{p:.0}"))
        ),
        overload.map_or("unknown".into(), |o| format!("{o:.0}")),
    )
}

/// Informational per-phase numbers that have no target.
pub fn phase_table(phases: &[PhaseStats]) -> String {
    let mut out = String::from("phase          api ok/err    upstream ok/err   dhcp ok/err  flood sent/answered  finale streams\n");
    for phase in Phase::ALL {
        let Some(p) = phases.get(phase.index()) else {
            continue;
        };
        let pair = |k: Kind| format!("{}/{}", p.get(k).ok, p.get(k).err);
        let _ = writeln!(
            out,
            "{:<14} {:<13} {:<17} {:<12} {:<20} {}",
            phase.name(),
            pair(Kind::Api),
            pair(Kind::Upstream),
            pair(Kind::Dhcp),
            format!(
                "{}/{}",
                p.get(Kind::FloodSent).ok,
                p.get(Kind::FloodAnswered).ok
            ),
            p.get(Kind::Finale).ok,
        );
        for (kind, name) in [(Kind::Api, "api"), (Kind::Upstream, "upstream")] {
            let reasons = &p.get(kind).reasons;
            if !reasons.is_empty() {
                let list: Vec<String> = reasons
                    .iter()
                    .map(|(r, n)| format!("{} x{n}", reason_name(*r)))
                    .collect();
                let _ = writeln!(out, "{:<14}   {name} errors: {}", "", list.join(", "));
            }
        }
    }
    out
}

pub fn render_verdict(lines: &[Line]) -> String {
    let w = lines.iter().map(|l| l.what.len()).max().unwrap_or(0);
    let v = lines.iter().map(|l| l.value.len()).max().unwrap_or(0);
    let g = lines.iter().map(|l| l.target.len()).max().unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(
            out,
            "{:<w$}  {:<v$}  {:<g$}  {}",
            l.what,
            l.value,
            l.target,
            if l.pass { "PASS" } else { "FAIL" }
        );
    }
    out
}

pub const CSV_HEADER: &str = "t,phase,rss_bytes,pending,overload_state,health_ok,api_ok_s,api_err_s,upstream_ok_s,upstream_err_s,dhcp_ok_s,dhcp_err_s,flood_sent_s,flood_answered_s,finale_streams_s";

pub fn csv(samples: &[Sample]) -> String {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let mut out = format!("{CSV_HEADER}\n");
    for s in samples {
        let r = &s.rates;
        let _ = writeln!(
            out,
            "{:.2},{},{},{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
            s.t,
            s.phase.name(),
            opt(s.rss.map(|v| v.to_string())),
            opt(s.pending.map(|v| v.to_string())),
            opt(s.overload.map(|v| v.to_string())),
            u8::from(s.health_ok),
            r[Kind::Api as usize][0],
            r[Kind::Api as usize][1],
            r[Kind::Upstream as usize][0],
            r[Kind::Upstream as usize][1],
            r[Kind::Dhcp as usize][0],
            r[Kind::Dhcp as usize][1],
            r[Kind::FloodSent as usize][0],
            r[Kind::FloodAnswered as usize][0],
            r[Kind::Finale as usize][0],
        );
    }
    out
}

#[cfg(test)]
mod tests;
