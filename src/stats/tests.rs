//! Tests of the client table, the Prometheus rendering and the publisher.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::client::ClientKey;

fn mac(i: u32) -> ClientKey {
    let b = i.to_be_bytes();
    ClientKey::Mac([0x02, 0, b[0], b[1], b[2], b[3]])
}

fn after(t0: Instant, secs: f64) -> Instant {
    t0 + Duration::from_secs_f64(secs)
}

#[test]
fn heavy_hitter_survives_a_million_spoofed_macs() {
    const K: usize = 1024;
    const DISTINCT: u32 = 1_000_000;
    let heavy = ClientKey::Mac([0x0e, 0xee, 0xee, 0xee, 0xee, 0xee]);
    let table = ClientTable::new(K);
    let now = Instant::now();
    for i in 0..DISTINCT {
        if i % 20 == 0 {
            table.request(&heavy, now);
        }
        table.request(&mac(i), now);
    }
    table.assert_valid();
    assert_eq!(table.len(), K, "memory is bounded by capacity");

    let rows = table.rows(now);
    assert_eq!(rows.len(), K + 1);
    let top = &rows[0];
    assert_eq!(top.client.as_ref(), Some(&heavy));
    assert!(top.requests >= 50_000, "{top:?}");
    // Space-saving: requests <= true <= requests + error, and error is at
    // most the stream length over K.
    assert!(top.requests <= 50_000 && top.requests + top.error >= 50_000);
    assert!(top.error <= 1_050_000 / K as u64, "error {}", top.error);

    let others = rows.last().map(|r| (r.client.clone(), r.requests));
    let sum: u64 = rows.iter().map(|r| r.requests).sum();
    assert_eq!(sum, 1_050_000, "evicted counts are folded, not lost");
    assert!(matches!(others, Some((None, n)) if n > 1_000_000 - K as u64 * 2));
}

#[test]
fn rates_over_1s_and_10s() {
    let table = ClientTable::new(8);
    let c = mac(1);
    let t0 = Instant::now();
    for _ in 0..10 {
        table.request(&c, t0);
    }
    let r = &table.rows(after(t0, 0.9))[0];
    assert_eq!((r.rate_1s, r.rate_10s), (10.0, 1.0));

    let t1 = after(t0, 1.5);
    for _ in 0..10 {
        table.request(&c, t1);
    }
    for _ in 0..5 {
        table.served(&c, t1);
    }
    let r = &table.rows(t1)[0];
    assert_eq!((r.rate_1s, r.rate_10s, r.served_rate_1s), (10.0, 2.0, 5.0));
    assert_eq!((r.requests, r.served), (20, 5));

    let r = &table.rows(after(t0, 9.6))[0];
    assert_eq!(
        (r.rate_1s, r.rate_10s),
        (0.0, 2.0),
        "both batches still in 10 s"
    );

    let r = &table.rows(after(t1, 11.0))[0];
    assert_eq!((r.rate_1s, r.rate_10s, r.served_rate_1s), (0.0, 0.0, 0.0));
    assert_eq!(r.requests, 20, "totals stay");
}

#[test]
fn rows_sort_by_10s_rate_with_others_last() {
    let table = ClientTable::new(8);
    let t0 = Instant::now();
    table.request(&mac(1), t0);
    for _ in 0..3 {
        table.request(&mac(2), t0);
    }
    // mac(3) has more requests in total, but all of them long ago.
    for _ in 0..5 {
        table.request(&mac(3), t0);
    }
    let t = after(t0, 20.0);
    table.request(&mac(1), t);
    table.request(&mac(2), t);
    table.request(&mac(2), t);
    let rows = table.rows(t);
    let order: Vec<_> = rows.iter().map(|r| r.client.clone()).collect();
    assert_eq!(order, vec![Some(mac(2)), Some(mac(1)), Some(mac(3)), None]);
}

#[test]
fn drops_by_reason() {
    let stats = Stats::new(4);
    let now = Instant::now();
    let c = mac(7);
    stats.clients.request(&c, now);
    stats.drop_for(&c, DropReason::RateLimited, now);
    stats.drop_for(&c, DropReason::RateLimited, now);
    stats.drop_for(&c, DropReason::Isolated, now);
    stats.drop_anonymous(DropReason::Malformed);
    assert_eq!(stats.drops(DropReason::RateLimited), 2);
    assert_eq!(stats.drops(DropReason::Malformed), 1);

    let row = stats.clients.get(&c, now);
    let row = row
        .as_ref()
        .map(|r| (r.requests, r.drops, r.drops_by_reason.clone()));
    assert_eq!(
        row,
        Some((
            1,
            3,
            vec![(DropReason::Isolated, 1), (DropReason::RateLimited, 2)]
        ))
    );
    // A client refused without a counted request still shows up.
    stats.drop_for(&mac(8), DropReason::Isolated, now);
    assert_eq!(stats.clients.len(), 2);
}

#[test]
fn pending_never_admits_and_balances_across_eviction() {
    let table = ClientTable::new(1);
    let now = Instant::now();
    let (a, b) = (mac(1), mac(2));
    table.pending(&a, -1);
    assert!(table.is_empty(), "a decrement does not create an entry");
    table.pending(&a, 1);
    assert!(table.is_empty(), "nor does an increment");
    let others = |t: &ClientTable| t.rows(now).last().map(|r| r.pending);
    assert_eq!(others(&table), Some(0));

    table.request(&a, now);
    table.pending(&a, 2);
    table.request(&b, now);
    table.request(&b, now); // b evicts a; a's 2 in-flight go to "others"
    assert_eq!(others(&table), Some(2));
    table.pending(&a, -1); // a is out: "others" takes it
    assert_eq!(others(&table), Some(1));
    for _ in 0..3 {
        table.request(&a, now); // a evicts b
    }
    table.pending(&a, -1); // below zero for a: the rest comes from "others"
    let rows = table.rows(now);
    let pend: Vec<_> = rows.iter().map(|r| (r.client.clone(), r.pending)).collect();
    assert_eq!(pend, vec![(Some(a), 0), (None, 0)]);
}

#[test]
fn zero_capacity_counts_everything_as_others() {
    let table = ClientTable::new(0);
    let now = Instant::now();
    table.request(&mac(1), now);
    table.served(&mac(1), now);
    table.drop(&mac(1), DropReason::QueueFull, now);
    let rows = table.rows(now);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].requests, rows[0].served, rows[0].drops), (1, 1, 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The space-saving guarantees hold against exact counts.
    #[test]
    fn space_saving_bounds(stream in proptest::collection::vec(0u32..40, 0..400)) {
        const K: usize = 8;
        let table = ClientTable::new(K);
        let now = Instant::now();
        let mut truth: HashMap<u32, u64> = HashMap::new();
        for &i in &stream {
            table.request(&mac(i), now);
            *truth.entry(i).or_default() += 1;
        }
        table.assert_valid();
        let rows = table.rows(now);
        prop_assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), stream.len() as u64);
        prop_assert!(table.len() <= K);
        for r in rows.iter().filter(|r| r.client.is_some()) {
            let i = (0..40).find(|i| r.client.as_ref() == Some(&mac(*i)));
            let t = i.and_then(|i| truth.get(&i).copied()).unwrap_or(0);
            prop_assert!(r.requests <= t && t <= r.requests + r.error, "{:?} true {}", r, t);
        }
        // Any key seen more than N/K times must be in the table.
        for (i, t) in &truth {
            if *t > stream.len() as u64 / K as u64 {
                prop_assert!(table.get(&mac(*i), now).is_some(), "mac {} seen {}", i, t);
            }
        }
    }
}

/// Metric names DESIGN.md promises, with their Prometheus types.
const DESIGN_METRICS: [(&str, &str); 14] = [
    ("vpcbox_dhcp_packets_total", "counter"),
    ("vpcbox_dhcp_queue_depth", "gauge"),
    ("vpcbox_ipam_leases", "gauge"),
    ("vpcbox_ipam_commit_seconds", "histogram"),
    ("vpcbox_gateway_requests_total", "counter"),
    ("vpcbox_gateway_pending", "gauge"),
    ("vpcbox_gateway_streams", "gauge"),
    ("vpcbox_memory_rss_bytes", "gauge"),
    ("vpcbox_heap_allocated_bytes", "gauge"),
    ("vpcbox_heap_resident_bytes", "gauge"),
    ("vpcbox_heap_shrinks_total", "counter"),
    ("vpcbox_overload_state", "gauge"),
    ("vpcbox_isolated_clients", "gauge"),
    ("vpcbox_client_drops_total", "counter"),
];

/// One parsed sample line: `name{k="v",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let bad = |why: &str| format!("{why}: {line:?}");
    let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().map_err(|_| bad("bad value"))?,
    };
    let (name, mut rest) = match series.split_once('{') {
        Some((n, r)) => (
            n,
            r.strip_suffix('}').ok_or_else(|| bad("unclosed labels"))?,
        ),
        None => (series, ""),
    };
    let name_ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !name_ok {
        return Err(bad("bad name"));
    }
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (k, r) = rest.split_once("=\"").ok_or_else(|| bad("bad label"))?;
        let end = r.find('"').ok_or_else(|| bad("unclosed label value"))?;
        labels.push((k.to_owned(), r[..end].to_owned()));
        rest = r[end + 1..].strip_prefix(',').unwrap_or(&r[end + 1..]);
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses a whole exposition: `(name -> type, samples)`; every sample must
/// belong to a family whose `# TYPE` came before it.
fn parse_exposition(text: &str) -> Result<(HashMap<String, String>, Vec<Sample>), String> {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, ty) = t.split_once(' ').ok_or(format!("bad type line {line:?}"))?;
            types.insert(name.to_owned(), ty.to_owned());
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            let s = parse_sample(line)?;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| s.name.strip_suffix(suf).filter(|f| types.contains_key(*f)))
                .unwrap_or(&s.name);
            if !types.contains_key(family) {
                return Err(format!("sample before its # TYPE: {line:?}"));
            }
            samples.push(s);
        }
    }
    Ok((types, samples))
}

fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

#[test]
fn empty_snapshot_renders_every_metric() {
    let text = prometheus::render(&Snapshot::default(), true);
    let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, ty) in DESIGN_METRICS {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(ty),
            "{name}\n{text}"
        );
    }
    assert_eq!(
        series(&samples, "vpcbox_dhcp_packets_total").len(),
        DhcpKind::ALL.len() * DhcpOutcome::ALL.len()
    );
    assert_eq!(
        series(&samples, "vpcbox_client_drops_total").len(),
        DropReason::ALL.len()
    );
    assert_eq!(
        series(&samples, "vpcbox_ipam_commit_seconds_bucket").len(),
        17
    );
}

#[test]
fn live_snapshot_renders_and_parses() {
    let stats = Stats::new(64);
    let t0 = Instant::now();
    stats.dhcp.packet(DhcpKind::Discover, DhcpOutcome::Offer);
    stats.dhcp.packet(DhcpKind::Discover, DhcpOutcome::Offer);
    stats.ipam.commit_seconds.observe(0.003);
    stats.ipam.commit_seconds.observe(20.0);
    let api = stats.gateway.route("api", 1024);
    api.response(200);
    api.response(503);
    stats.gateway.route("upstream", 16); // no traffic yet
    *stats.ipam.leases.lock().unwrap_or_else(|e| e.into_inner()) = vec![LeaseCount {
        subnet: "lab".into(),
        state: "active",
        count: 3,
    }];
    for i in 0..30 {
        stats.clients.request(&mac(i), t0);
    }
    stats.drop_for(&mac(1), DropReason::QueueFull, t0);
    let m = &stats.memory;
    m.rss_bytes.store(100 << 20, Relaxed);
    m.heap_allocated.store(40 << 20, Relaxed);
    m.heap_resident.store(50 << 20, Relaxed);
    m.heap_dirty.store(4 << 20, Relaxed);
    m.heap_metadata.store(6 << 20, Relaxed);
    m.owner_store.store(10 << 20, Relaxed);
    m.owner_gateway.store(20 << 20, Relaxed);
    m.heap_unowned.store(10 << 20, Relaxed);
    let (mut publisher, _rx) = Publisher::new(stats.clone());
    let snap = publisher.take(t0);
    assert_eq!(snap.clients.len(), 31, "30 clients and the others row");

    let text = prometheus::render(&snap, true);
    println!("{text}");
    let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, ty) in DESIGN_METRICS {
        assert_eq!(types.get(name).map(String::as_str), Some(ty), "{name}");
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    };
    let offers = [("type", "discover"), ("result", "offer")];
    assert_eq!(value("vpcbox_dhcp_packets_total", &offers), Some(2.0));
    let acks = [("type", "request"), ("result", "ack")];
    assert_eq!(value("vpcbox_dhcp_packets_total", &acks), Some(0.0));
    let code = [("route", "api"), ("code", "503")];
    assert_eq!(value("vpcbox_gateway_requests_total", &code), Some(1.0));
    let idle = [("route", "upstream")];
    assert_eq!(value("vpcbox_gateway_pending", &idle), Some(0.0));
    let queue_full = [("reason", "queue_full")];
    assert_eq!(value("vpcbox_client_drops_total", &queue_full), Some(1.0));
    let lab = [("subnet", "lab"), ("state", "active")];
    assert_eq!(value("vpcbox_ipam_leases", &lab), Some(3.0));

    let le = |b: &str| value("vpcbox_ipam_commit_seconds_bucket", &[("le", b)]);
    assert_eq!(
        (le("0.001"), le("0.005"), le("+Inf")),
        (Some(0.0), Some(1.0), Some(2.0))
    );
    assert_eq!(value("vpcbox_ipam_commit_seconds_count", &[]), Some(2.0));
    let owner = |o: &str| value("vpcbox_memory_bytes", &[("owner", o)]);
    assert_eq!(owner("store"), Some(f64::from(10 << 20)));
    assert_eq!(owner("gateway_buffers"), Some(f64::from(20 << 20)));
    assert_eq!(owner("allocator_retained"), Some(f64::from(6 << 20)));
    let parts: f64 = series(&samples, "vpcbox_memory_bytes")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(parts, f64::from(100 << 20), "the owners add up to RSS");
    assert_eq!(
        series(&samples, "vpcbox_client_rate").len(),
        20,
        "top 20 only"
    );
}

#[tokio::test]
async fn publisher_sends_snapshots_until_cancelled() {
    let stats = Stats::new(8);
    stats.clients.request(&mac(1), Instant::now());
    stats
        .isolated_clients
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let (publisher, mut rx) = Publisher::new(stats);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(publisher.run(Duration::from_millis(5), cancel.clone()));
    let changed = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
    assert!(matches!(changed, Ok(Ok(()))));
    let snap = rx.borrow_and_update().clone();
    assert!(snap.seq >= 1);
    assert_eq!(snap.isolated_clients, 2);
    assert_eq!(
        snap.clients.first().and_then(|r| r.client.clone()),
        Some(mac(1))
    );
    cancel.cancel();
    let joined = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(joined, Ok(Ok(()))), "run returns on cancel");
}

#[test]
fn shedding_follows_the_overload_gauge() {
    let stats = Stats::new(4);
    assert!(!stats.shedding());
    stats
        .memory
        .overload_state
        .store(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats.overload(), OverloadState::Shrink);
    assert!(!stats.shedding());
    stats
        .memory
        .overload_state
        .store(2, std::sync::atomic::Ordering::Relaxed);
    assert!(stats.shedding());
}
