//! Tests of the client table, the Prometheus rendering and the publisher.

use std::collections::HashMap;
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
