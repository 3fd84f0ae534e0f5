//! `vpcbox status`: the `/v1/status` page as one screen of text.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use bytesize::ByteSize;
use serde::Deserialize;

use super::render::table;

type R = Result<String, serde_json::Error>;

#[derive(Deserialize)]
struct Status {
    uptime_seconds: u64,
    health: Health,
    overload: Overload,
    memory: Memory,
    clients: Vec<Client>,
    routes: Vec<Route>,
    dhcp: Dhcp,
    isolations: Vec<Isolation>,
}

#[derive(Deserialize)]
struct Health {
    ready: bool,
    storage_degraded: Option<String>,
}

#[derive(Deserialize)]
struct Overload {
    state: String,
    rss_bytes: u64,
    budget_bytes: u64,
}

#[derive(Deserialize)]
struct Memory {
    by_owner: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Client {
    client: Option<String>,
    state: String,
    rate_1s: f64,
    rate_10s: f64,
    served_rate_1s: f64,
    drops: u64,
    pending: i64,
}

#[derive(Deserialize)]
struct Route {
    name: String,
    pending: i64,
    max_pending: u64,
}

#[derive(Deserialize)]
struct Dhcp {
    queue_depth: i64,
    queue_capacity: u64,
}

#[derive(Deserialize)]
struct Isolation {
    client: String,
    since: u64,
    source: String,
}

fn bytes(n: u64) -> String {
    ByteSize::b(n).display().iec().to_string()
}

pub fn render(body: &[u8], now: SystemTime) -> R {
    let s: Status = serde_json::from_slice(body)?;
    let mut out = String::new();
    let up = humantime::format_duration(Duration::from_secs(s.uptime_seconds));
    let ready = if s.health.ready { "ready" } else { "NOT READY" };
    let store = match &s.health.storage_degraded {
        None => "store ok".to_owned(),
        Some(why) => format!("STORE DEGRADED: {why}"),
    };
    let _ = writeln!(out, "vpcbox up {up} · {ready} · {store}");
    let o = &s.overload;
    let pct = (o.rss_bytes as f64 * 100.0) / (o.budget_bytes.max(1) as f64);
    let _ = writeln!(
        out,
        "overload {} · RSS {} of {} budget ({pct:.0}%)",
        o.state,
        bytes(o.rss_bytes),
        bytes(o.budget_bytes)
    );
    out.push_str(&memory(&s.memory));
    out.push('\n');
    out.push_str(&clients(&s.clients));
    out.push('\n');
    let mut pending: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.pending.to_string(),
                r.max_pending.to_string(),
            ]
        })
        .collect();
    pending.push(vec![
        "dhcp queue".into(),
        s.dhcp.queue_depth.to_string(),
        s.dhcp.queue_capacity.to_string(),
    ]);
    out.push_str(&table(
        &["PENDING", "NOW", "MAX"],
        &[false, true, true],
        &pending,
    ));
    out.push('\n');
    out.push_str(&isolations(&s.isolations, now));
    Ok(out)
}

fn memory(m: &Memory) -> String {
    let get = |k: &str| {
        m.by_owner
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let rows: Vec<Vec<String>> = crate::stats::MemoryByOwner::LABELS
        .iter()
        .map(|o| {
            let note = match *o {
                "other" => format!("of which unowned heap {}", bytes(get("unowned_heap"))),
                _ => String::new(),
            };
            vec![(*o).to_owned(), bytes(get(o)), note]
        })
        .collect();
    table(&["MEMORY", "BYTES", ""], &[false, true, false], &rows)
}

fn clients(rows: &[Client]) -> String {
    if rows.is_empty() {
        return "no clients yet\n".into();
    }
    let r = |x: f64| format!("{x:.1}");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.client.clone().unwrap_or_else(|| "(others)".into()),
                c.state.clone(),
                r(c.rate_1s),
                r(c.rate_10s),
                r(c.served_rate_1s),
                c.drops.to_string(),
                c.pending.to_string(),
            ]
        })
        .collect();
    let right = [false, false, true, true, true, true, true];
    let head = [
        "TOP CLIENTS",
        "STATE",
        "RATE/S",
        "10S",
        "SERVED/S",
        "DROPS",
        "PENDING",
    ];
    table(&head, &right, &rows)
}

fn isolations(list: &[Isolation], now: SystemTime) -> String {
    if list.is_empty() {
        return "no isolations\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.client.clone(),
                super::relative(i.since, now),
                i.source.clone(),
            ]
        })
        .collect();
    table(&["ISOLATED", "SINCE", "BY"], &[false, false, false], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"{
        "taken_at": 1000, "uptime_seconds": 3723,
        "health": {"ready": true, "storage_degraded": null},
        "overload": {"state": "normal", "rss_bytes": 52428800, "budget_bytes": 134217728},
        "memory": {"rss_bytes": 52428800, "heap_allocated": 1, "heap_resident": 2,
            "by_owner": {"store": 12582912, "clients": 1048576, "gateway_buffers": 0,
                "dhcp_queues": 2097152, "allocator_retained": 4194304, "allocator_dirty": 1048576,
                "other": 31457280, "unowned_heap": 10485760}},
        "clients": [{"client": "mac:02:00:00:00:00:01", "state": "limited", "rate_1s": 900.0,
            "rate_10s": 850.5, "served_rate_1s": 10.0, "requests": 9000, "served": 100,
            "drops": 8900, "drops_by_reason": {"rate_limited": 8900}, "pending": 1}],
        "routes": [{"name": "/upstream/", "pending": 3, "max_pending": 1024}],
        "dhcp": {"queue_depth": 0, "queue_capacity": 4096},
        "isolations": [{"client": "ip:10.0.0.9", "since": 940, "source": "cli"}]
    }"#;

    #[test]
    fn one_screen_with_every_section() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let text = render(PAGE.as_bytes(), now).unwrap_or_default();
        for want in [
            "vpcbox up 1h 2m 3s · ready · store ok",
            "overload normal · RSS 50.0 MiB of 128.0 MiB budget (39%)",
            "store               12.0 MiB",
            "other               30.0 MiB  of which unowned heap 10.0 MiB",
            "mac:02:00:00:00:00:01  limited   900.0",
            "/upstream/    3  1024",
            "dhcp queue    0  4096",
            "ip:10.0.0.9  1m ago  cli",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(text.lines().count() <= 30, "{text}");
    }

    #[test]
    fn a_degraded_store_and_no_clients_say_so() {
        let page = PAGE
            .replace(
                r#""storage_degraded": null"#,
                r#""storage_degraded": "disk full""#,
            )
            .replace(r#""ready": true"#, r#""ready": false"#);
        let mut v: serde_json::Value = serde_json::from_str(&page).unwrap_or_default();
        v["clients"] = serde_json::json!([]);
        let text = render(v.to_string().as_bytes(), SystemTime::now()).unwrap_or_default();
        assert!(
            text.contains("NOT READY · STORE DEGRADED: disk full"),
            "{text}"
        );
        assert!(text.contains("no clients yet"), "{text}");
        assert!(render(b"{}", SystemTime::now()).is_err());
    }
}
