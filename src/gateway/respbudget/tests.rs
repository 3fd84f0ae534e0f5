use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::sweep::heaviest;
use super::*;
use crate::stats::Stats;

#[test]
fn heaviest_takes_the_largest_until_the_target() {
    let got = heaviest([("a", 5), ("b", 50), ("c", 20), ("d", 1)].into_iter(), 60);
    assert_eq!(got, vec![("b", 50), ("c", 20)]);
    let one = heaviest([("a", 5), ("b", 7)].into_iter(), 0);
    assert_eq!(one, vec![("b", 7)]);
    assert!(heaviest(std::iter::empty::<((), u64)>(), 10).is_empty());
}

fn budget(limit: &str, stall: &str) -> Arc<ResponseBudget> {
    let mut cfg = crate::config::Config::embedded().unwrap().gateway;
    cfg.response_budget = crate::config::parse::size(limit).unwrap();
    cfg.send_stall_timeout = crate::config::parse::duration(stall).unwrap();
    Arc::new(ResponseBudget::new(&cfg, Stats::new(16)))
}

#[test]
fn a_full_budget_pauses_until_a_chunk_is_written() {
    const C: u64 = 16 * 1024;
    let b = budget("1MiB", "10s");
    let waker = futures::task::noop_waker();
    let cx = Context::from_waker(&waker);
    let fill = |slot: &mut Option<Arc<Ctl>>, held: &mut Vec<Bytes>| {
        within(&b, slot, None, || {
            while let Poll::Ready(r) = b.poll_reserve(&cx) {
                held.push(b.charge(Bytes::from(vec![0u8; C as usize]), Some(r)));
            }
        });
    };
    let (mut heavy, mut held) = (None, Vec::new());
    fill(&mut heavy, &mut held);
    // A stream holding bytes stops at 7/8 of the budget.
    assert_eq!(held.len(), 56);
    assert_eq!(b.used(), 56 * C);
    assert_eq!(heavy.as_ref().unwrap().buffered.load(Relaxed), 56 * C);
    // A stream holding nothing may use the rest, one chunk at a time.
    let mut light_held = Vec::new();
    for _ in 0..8 {
        let mut light = None;
        within(&b, &mut light, None, || {
            let Poll::Ready(r) = b.poll_reserve(&cx) else {
                panic!("headroom for a light stream")
            };
            light_held.push(b.charge(Bytes::from(vec![0u8; C as usize]), Some(r)));
        });
    }
    assert_eq!(b.used(), 1 << 20);
    assert!(within(&b, &mut None, None, || b.poll_reserve(&cx)).is_pending());
    // A slice keeps the charge; the last piece returns it.
    let piece = light_held[0].slice(0..10);
    light_held.remove(0);
    assert_eq!(b.used(), 1 << 20);
    drop(piece);
    assert_eq!(b.used(), (1 << 20) - C);
    let Poll::Ready(r) = within(&b, &mut None, None, || b.poll_reserve(&cx)) else {
        panic!("room for one chunk")
    };
    assert_eq!(b.used(), 1 << 20);
    drop(r);
    assert_eq!(b.used(), (1 << 20) - C, "the reservation came back");
    drop((held, light_held));
    assert_eq!(b.used(), 0);
}

#[test]
fn stalled_and_heaviest_streams_are_killed() {
    let b = budget("1MiB", "10s");
    let (mut light, mut heavy) = (None, None);
    let _l = within(&b, &mut light, None, || {
        b.charge(Bytes::from(vec![0u8; 1000]), None)
    });
    let _h = within(&b, &mut heavy, None, || {
        b.charge(Bytes::from(vec![0u8; 40_000]), None)
    });
    b.sweep();
    let (light, heavy) = (light.unwrap(), heavy.unwrap());
    assert!(!light.killed.load(Relaxed) && !heavy.killed.load(Relaxed));
    b.stats.memory.overload_state.store(2, Relaxed);
    b.sweep();
    assert!(heavy.killed.load(Relaxed), "the heaviest goes first");
    assert!(!light.killed.load(Relaxed));
    b.stats.memory.overload_state.store(0, Relaxed);
    b.stall_ms.store(0, Relaxed);
    b.sweep();
    assert!(light.killed.load(Relaxed), "stalled");
    assert_eq!(b.stats.gateway.response_resets_stall.load(Relaxed), 1);
    assert_eq!(b.stats.gateway.response_resets_shed.load(Relaxed), 1);
}
