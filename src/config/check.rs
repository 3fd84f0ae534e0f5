//! The small parsers every config section uses: each error names its key
//! and quotes the value.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{self, Rate};
use super::ConfigError;

pub type R<T> = Result<T, ConfigError>;

/// `Err` of [`ConfigError::invalid`].
pub fn fail<T>(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> R<T> {
    Err(ConfigError::invalid(key, value, reason))
}

pub fn at<T>(key: &str, value: &str, r: Result<T, &'static str>) -> R<T> {
    r.map_err(|reason| ConfigError::invalid(key, value, reason))
}

pub fn dur(key: &str, v: &str) -> R<Duration> {
    let d = at(key, v, parse::duration(v))?;
    if d.is_zero() {
        return fail(key, v, "must be longer than 0s");
    }
    Ok(d)
}

pub fn size(key: &str, v: &str) -> R<u64> {
    at(key, v, parse::size(v))
}

pub fn size_in(key: &str, v: &str, lo: u64, hi: u64) -> R<u64> {
    let n = size(key, v)?;
    if !(lo..=hi).contains(&n) {
        return fail(key, v, format!("must be between {lo} and {hi} bytes"));
    }
    Ok(n)
}

pub fn rate(key: &str, v: &str) -> R<Rate> {
    at(key, v, parse::rate(v))
}

pub fn ip(key: &str, v: &str) -> R<Ipv4Addr> {
    at(key, v, parse::ipv4(v))
}

pub fn sock(key: &str, v: &str) -> R<SocketAddr> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(key, v, "is not a socket address (e.g. \"0.0.0.0:67\")"))
}

/// [`range_check`] of `$raw.$field`, naming it `$section.$field`: the key
/// is spelt once, by the field it checks.
macro_rules! within {
    ($section:literal, $raw:ident . $field:ident, $lo:expr, $hi:expr) => {
        $crate::config::check::range_check(
            concat!($section, ".", stringify!($field)),
            $raw.$field,
            $lo,
            $hi,
        )
    };
}
pub(crate) use within;

pub fn range_check<T: PartialOrd + std::fmt::Display>(key: &str, v: T, lo: T, hi: T) -> R<T> {
    if v < lo || v > hi {
        let reason = format!("must be between {lo} and {hi}");
        return fail(key, v, reason);
    }
    Ok(v)
}

pub fn min_dur(key: &str, v: &str, min: Duration) -> R<Duration> {
    let d = dur(key, v)?;
    if d < min {
        let reason = format!("must be at least {}", parse::fmt_duration(min));
        return fail(key, v, reason);
    }
    Ok(d)
}

pub fn non_empty_path(key: &str, v: &str) -> R<PathBuf> {
    if v.trim().is_empty() {
        return fail(key, v, "must not be empty");
    }
    Ok(PathBuf::from(v))
}

pub fn indexed<T, U>(items: &[T], f: impl Fn(usize, &T) -> R<U>) -> R<Vec<U>> {
    items.iter().enumerate().map(|(j, v)| f(j, v)).collect()
}
