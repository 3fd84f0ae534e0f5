//! Parsers for the human-written value forms of the config: sizes
//! (`"64KiB"`), durations (`"30s"`), rates (`"10/s"`), address ranges.
//! Each returns the reason text; the caller adds the key and the value.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;

/// A quota: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

pub fn size(s: &str) -> Result<u64, &'static str> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is not a size (e.g. \"64KiB\")");
    }
    // A bare number is bytes.
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    bytesize::ByteSize::from_str(t)
        .map(|b| b.as_u64())
        .map_err(|_| "is not a size (e.g. \"64KiB\")")
}

/// Formats a byte count the way it would be written: `64KiB`, `1MiB`, `1000`.
pub fn fmt_size(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(u, _)| n >= *u && n % u == 0)
        .map(|(u, name)| format!("{}{name}", n / u))
        .unwrap_or_else(|| n.to_string())
}

pub fn duration(s: &str) -> Result<Duration, &'static str> {
    humantime::parse_duration(s.trim()).map_err(|_| "is not a duration (e.g. \"30s\", \"250ms\")")
}

pub use crate::ipam::fmt_duration;

pub fn rate(s: &str) -> Result<Rate, &'static str> {
    const BAD: &str = "is not a rate (e.g. \"10/s\", \"600/m\")";
    let (n, unit) = s.trim().split_once('/').ok_or(BAD)?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(BAD),
    };
    let count: u32 = n.trim().parse().map_err(|_| BAD)?;
    if count == 0 {
        return Err("must be at least 1/s");
    }
    Ok(Rate { count, per })
}

pub fn ipv4(s: &str) -> Result<Ipv4Addr, &'static str> {
    s.trim().parse().map_err(|_| "is not an IPv4 address")
}

pub fn cidr(s: &str) -> Result<Ipv4Net, &'static str> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| "is not an IPv4 CIDR (e.g. \"10.0.0.0/24\")")?;
    if net.network() != net.addr() {
        return Err("has host bits set (use the network address)");
    }
    Ok(net)
}

/// `"10.0.0.100-10.0.0.199"` or a CIDR `"10.0.0.128/25"` (all its hosts).
pub fn range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), &'static str> {
    const BAD: &str = "is not an address range (e.g. \"10.0.0.100-10.0.0.199\")";
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (ipv4(a).map_err(|_| BAD)?, ipv4(b).map_err(|_| BAD)?);
        if a > b {
            return Err("starts after it ends");
        }
        return Ok((a, b));
    }
    let net: Ipv4Net = s.trim().parse().map_err(|_| BAD)?;
    let hosts = net.hosts();
    match (hosts.clone().next(), hosts.last()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(BAD),
    }
}

/// Hex bytes, with optional `:` separators: `"0a000001"`, `"0a:00:00:01"`.
pub fn hex(s: &str) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "is not hex bytes (e.g. \"0a000001\")";
    let t: String = s.chars().filter(|c| *c != ':').collect();
    hex::decode(t).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("123"), Ok(123));
        assert!(size("lots").is_err());
        for n in [0, 1000, 65536, 1 << 20, 3 << 30] {
            assert_eq!(size(&fmt_size(n)), Ok(n));
        }
    }

    #[test]
    fn rates() {
        assert_eq!(
            rate("10/s"),
            Ok(Rate {
                count: 10,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(rate("600/m").map(|r| r.per_second()), Ok(10.0));
        assert_eq!(rate("0/s"), Err("must be at least 1/s"));
        assert!(rate("ten/s").is_err());
        assert!(rate("10").is_err());
    }

    #[test]
    fn durations_round_trip() {
        for d in ["30s", "250ms", "1h", "1h 30m", "5m"] {
            let v = duration(d).unwrap();
            assert_eq!(duration(&fmt_duration(v)), Ok(v));
        }
    }

    #[test]
    fn ranges() {
        let a = Ipv4Addr::new(10, 0, 0, 100);
        let b = Ipv4Addr::new(10, 0, 0, 199);
        assert_eq!(range("10.0.0.100-10.0.0.199"), Ok((a, b)));
        assert_eq!(
            range("10.0.0.0/30"),
            Ok((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert!(range("10.0.0.199-10.0.0.100").is_err());
        assert!(range("nope").is_err());
    }

    #[test]
    fn hex_bytes_with_optional_colons() {
        assert_eq!(hex("0a000001"), Ok(vec![10, 0, 0, 1]));
        assert_eq!(hex("0A:00:00:01"), Ok(vec![10, 0, 0, 1]));
        assert_eq!(hex(""), Ok(vec![]));
        for bad in ["0a0", "0g", "+a", "é0"] {
            assert!(hex(bad).is_err(), "{bad}");
        }
    }
}
