//! Number and time formatting shared by the views. Short, fixed-width-ish
//! strings so columns stay aligned as numbers grow.

use std::time::Duration;

/// `0`, `9.5`, `123`, `12.3k`, `1.2M`.
pub fn rate(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    if v == 0.0 {
        "0".to_owned()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 1_000.0 {
        format!("{v:.0}")
    } else if v < 1_000_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{:.1}M", v / 1_000_000.0)
    }
}

/// Counts: `999`, `12.3k`, `4.5M`, `1.2G`.
pub fn count(v: u64) -> String {
    match v {
        0..=9_999 => v.to_string(),
        10_000..=999_999 => format!("{:.1}k", v as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", v as f64 / 1e6),
        _ => format!("{:.1}G", v as f64 / 1e9),
    }
}

/// Binary sizes: `512 B`, `12.0 KiB`, `45.2 MiB`, `1.5 GiB`.
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if v < 1024 {
        return format!("{v} B");
    }
    let mut x = v as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

/// Binary sizes in at most 4 characters: `512B`, `12K`, `3.4M`, `45M`, `1.5G`.
pub fn bytes_short(v: u64) -> String {
    const UNITS: [char; 4] = ['K', 'M', 'G', 'T'];
    if v < 1024 {
        return format!("{v}B");
    }
    let mut x = v as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if x < 1023.5 {
            break;
        }
        x /= 1024.0;
        unit = *u;
    }
    if x < 9.95 {
        format!("{x:.1}{unit}")
    } else {
        format!("{x:.0}{unit}")
    }
}

/// `42s`, `3m07s`, `1h02m`, `2d03h`.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// `HH:MM:SS` (UTC) of milliseconds since the Unix epoch.
pub fn clock_utc(at_ms: u64) -> String {
    let s = at_ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3_600) % 24, (s / 60) % 60, s % 60)
}

/// Cuts `s` to at most `width` characters, marking the cut with `…`.
pub fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(9.54), "9.5");
        assert_eq!(rate(1999.0), "2.0k");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes_short(512), "512B");
        assert_eq!(bytes_short(3 * 1024 * 1024 / 2), "1.5M");
        assert_eq!(bytes_short(45 << 20), "45M");
        assert_eq!(bytes_short((1 << 20) - 1), "1.0M");
        assert_eq!(uptime(Duration::from_secs(3_720)), "1h02m");
        assert_eq!(clock_utc(3_723_000), "01:02:03");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
