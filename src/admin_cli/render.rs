//! Tables for the admin CLI: pure functions from the API's JSON to text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

use serde::Deserialize;

type R = Result<String, serde_json::Error>;

/// Left-aligned text columns, right-aligned numeric ones (`right[i]`).
pub fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&width).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            let _ = if right.get(i).copied().unwrap_or(false) {
                write!(line, "{sep}{cell:>w$}")
            } else {
                write!(line, "{sep}{cell:<w$}")
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `items` as a table under `columns` (a leading `>` right-aligns one), or
/// the line `empty` when there are none.
fn listing<T>(
    items: &[T],
    empty: &str,
    columns: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> String {
    if items.is_empty() {
        return format!("{empty}\n");
    }
    let right: Vec<bool> = columns.iter().map(|c| c.starts_with('>')).collect();
    let headers: Vec<&str> = columns.iter().map(|c| c.trim_start_matches('>')).collect();
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(&headers, &right, &rows)
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

#[derive(Deserialize)]
struct Clients {
    clients: Vec<ClientRow>,
}

#[derive(Deserialize)]
struct ClientRow {
    client: Option<String>,
    state: String,
    rate_1s: f64,
    rate_10s: f64,
    served_rate_1s: f64,
    requests: u64,
    drops: u64,
    drops_by_reason: BTreeMap<String, u64>,
    pending: i64,
}

pub fn clients(body: &[u8]) -> R {
    let c: Clients = serde_json::from_slice(body)?;
    let columns = [
        "CLIENT",
        "STATE",
        ">REQ/S",
        ">REQ/S 10S",
        ">SERVED/S",
        ">REQUESTS",
        ">DROPS",
        ">PENDING",
        "TOP DROP",
    ];
    Ok(listing(
        &c.clients,
        "no client activity yet",
        &columns,
        |r| {
            let top = r
                .drops_by_reason
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or_else(String::new, |(k, n)| format!("{k} {n}"));
            vec![
                r.client.clone().unwrap_or_else(|| "(others)".into()),
                r.state.clone(),
                rate(r.rate_1s),
                rate(r.rate_10s),
                rate(r.served_rate_1s),
                r.requests.to_string(),
                r.drops.to_string(),
                r.pending.to_string(),
                top,
            ]
        },
    ))
}

#[derive(Deserialize)]
struct Isolation {
    client: String,
    source: String,
}

pub fn isolated(body: &[u8], fresh: bool) -> R {
    let i: Isolation = serde_json::from_slice(body)?;
    Ok(if fresh {
        format!("isolated {}\n", i.client)
    } else {
        format!("{} was already isolated (by {})\n", i.client, i.source)
    })
}

#[derive(Deserialize)]
struct Leases {
    leases: Vec<Lease>,
    truncated: bool,
}

#[derive(Deserialize)]
struct Lease {
    ip: String,
    subnet: String,
    client: String,
    state: String,
    expires_at: u64,
    hostname: Option<String>,
}

pub fn leases(body: &[u8], now: SystemTime) -> R {
    let l: Leases = serde_json::from_slice(body)?;
    let columns = ["IP", "SUBNET", "CLIENT", "STATE", "EXPIRES", "HOSTNAME"];
    let mut out = listing(&l.leases, "no leases", &columns, |x| {
        vec![
            x.ip.clone(),
            x.subnet.clone(),
            x.client.clone(),
            x.state.clone(),
            super::relative(x.expires_at, now),
            x.hostname.clone().unwrap_or_default(),
        ]
    });
    if l.truncated && !l.leases.is_empty() {
        let _ = writeln!(
            out,
            "(first {} shown; more match: use --limit)",
            l.leases.len()
        );
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Subnets {
    subnets: Vec<Subnet>,
}

/// A v4 subnet (`cidr`, `lease_time`) or a v6 one (`prefix`,
/// `valid_lifetime`, `pd_pools`).
#[derive(Deserialize)]
struct Subnet {
    id: String,
    #[serde(alias = "prefix")]
    cidr: String,
    pools: Vec<Pool>,
    #[serde(default)]
    pd_pools: Vec<PdPool>,
    gateway: Option<String>,
    #[serde(alias = "valid_lifetime")]
    lease_time: String,
    usage: Usage,
}

#[derive(Deserialize)]
struct PdPool {
    prefix: String,
    delegated_len: u8,
}

#[derive(Deserialize)]
struct Pool {
    start: String,
    end: String,
}

#[derive(Deserialize)]
struct Usage {
    size: u64,
    used: u64,
}

pub fn subnets(body: &[u8]) -> R {
    let s: Subnets = serde_json::from_slice(body)?;
    let columns = [
        "ID", "CIDR", "POOLS", "GATEWAY", "LEASE", ">USED", ">SIZE", ">USE",
    ];
    Ok(listing(&s.subnets, "no subnets", &columns, |x| {
        let pools: Vec<String> = x
            .pools
            .iter()
            .map(|p| format!("{}-{}", p.start, p.end))
            .chain(
                x.pd_pools
                    .iter()
                    .map(|p| format!("{} by /{}", p.prefix, p.delegated_len)),
            )
            .collect();
        let pct = (x.usage.used as f64 * 100.0) / (x.usage.size.max(1) as f64);
        vec![
            x.id.clone(),
            x.cidr.clone(),
            pools.join(","),
            x.gateway.clone().unwrap_or_else(|| "-".into()),
            x.lease_time.clone(),
            x.usage.used.to_string(),
            x.usage.size.to_string(),
            format!("{pct:.0}%"),
        ]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "NUM"],
            &[false, true],
            &[
                vec!["long-name".into(), "5".into()],
                vec!["x".into(), "1234".into()],
            ],
        );
        assert_eq!(t, "A           NUM\nlong-name     5\nx          1234\n");
    }

    #[test]
    fn clients_table() {
        let body = br#"{"taken_at":1,"clients":[
            {"client":"mac:02:00:00:00:00:01","state":"limited","rate_1s":512.0,"rate_10s":480.5,
             "served_rate_1s":10.0,"requests":9000,"served":100,"drops":8900,
             "drops_by_reason":{"rate_limited":8800,"queue_full":100},"pending":3},
            {"client":null,"state":"ok","rate_1s":0.5,"rate_10s":0.2,"served_rate_1s":0.5,
             "requests":7,"served":7,"drops":0,"drops_by_reason":{},"pending":0}]}"#;
        let t = clients(body).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CLIENT"));
        assert!(
            lines[1].contains("limited") && lines[1].contains("rate_limited 8800"),
            "{t}"
        );
        assert!(lines[2].starts_with("(others)"));
        assert_eq!(
            clients(br#"{"clients":[]}"#).unwrap(),
            "no client activity yet\n"
        );
    }

    #[test]
    fn leases_table() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let body = br#"{"truncated":true,"leases":[{"ip":"10.0.0.100","subnet":"lab",
            "client":"mac:02:00:00:00:00:01","state":"bound","expires_at":1003600,
            "updated_at":1000000,"hostname":null}]}"#;
        let t = leases(body, now).unwrap();
        assert!(t.contains("10.0.0.100") && t.contains("in 1h"), "{t}");
        assert!(t.contains("more match"), "{t}");
    }

    #[test]
    fn subnets_table() {
        let body = br#"{"subnets":[{"id":"lab","cidr":"10.0.0.0/24",
            "pools":[{"start":"10.0.0.100","end":"10.0.0.199"}],"gateway":"10.0.0.1",
            "lease_time":"1h","usage":{"size":100,"used":25,"free":75,"by_state":{}}}]}"#;
        let t = subnets(body).unwrap();
        assert!(
            t.contains("10.0.0.100-10.0.0.199") && t.contains("25%"),
            "{t}"
        );
    }

    /// v6 subnets and bindings (as `/v1/subnets` and `/v1/leases` give them)
    /// list beside the v4 ones.
    #[test]
    fn v6_subnets_and_leases_list() {
        let body = br#"{"subnets":[{"family":6,"id":"lab6","prefix":"fd00:77::/64",
            "pools":[{"start":"fd00:77::100","end":"fd00:77::1ff"}],
            "pd_pools":[{"prefix":"fd00:78::/48","delegated_len":56}],
            "preferred_lifetime":"30m","valid_lifetime":"1h","prefixes":256,
            "usage":{"size":512,"used":2,"free":510,"by_state":{}}}]}"#;
        let t = subnets(body).unwrap();
        assert!(
            t.contains("fd00:77::/64") && t.contains("fd00:78::/48 by /56"),
            "{t}"
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let body = br#"{"truncated":false,"leases":[{"ip":"fd00:78:0:100::/56",
            "subnet":"lab6","client":"duid:000300010a","kind":"pd","iaid":1,
            "state":"bound","expires_at":1003600,"updated_at":1000000}]}"#;
        let t = leases(body, now).unwrap();
        assert!(
            t.contains("fd00:78:0:100::/56") && t.contains("duid:000300010a"),
            "{t}"
        );
    }
}
