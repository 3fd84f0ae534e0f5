//! DHCPv6 binding tests, each on a real sled store in a temp dir.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;

use super::*;
use crate::client::ClientKey;
use crate::ipam::tests::{at, Faulty, Running};
use crate::ipam::{Ipam, IpamError, IpamOptions, LeaseFilter, LeaseState};
use crate::stats::Stats;

/// "lab6": link fd00:77::/64, addresses fd00:77::100–`na_end`, prefixes
/// fd00:78::/48 cut into /56; valid lifetime 1000 s.
fn lab6(na_end: &str) -> Subnet6Spec {
    Subnet6Spec {
        pools: vec![Range6 {
            start: "fd00:77::100".parse().unwrap(),
            end: na_end.parse().unwrap(),
        }],
        pd_pools: vec![PdPoolSpec {
            prefix: "fd00:78::/48".parse().unwrap(),
            delegated_len: 56,
        }],
        preferred_lifetime: Duration::from_secs(500),
        valid_lifetime: Duration::from_secs(1000),
        ..Subnet6Spec::new("lab6", "fd00:77::/64".parse().unwrap())
    }
}

fn open6(dir: &Path, na_end: &str) -> (Arc<Ipam>, Arc<Stats>) {
    let stats = Stats::new(16);
    let ipam = Ipam::open(dir, IpamOptions::default(), stats.clone()).unwrap();
    ipam.apply_config6(&[lab6(na_end)]).unwrap();
    (ipam, stats)
}

fn duid(n: u32) -> ClientKey {
    let mut d = vec![0, 3, 0, 1, 2, 0, 0];
    d.extend_from_slice(&n.to_be_bytes());
    ClientKey::Duid(d.into())
}

fn na(n: u32) -> Ia6Key {
    Ia6Key {
        client: duid(n),
        kind: Ia6Kind::Na,
        iaid: 1,
    }
}

fn pd(n: u32) -> Ia6Key {
    Ia6Key {
        client: duid(n),
        kind: Ia6Kind::Pd,
        iaid: 1,
    }
}

fn net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

async fn op(ipam: &Ipam, ia: &Ia6Key, o: Ia6Op, hints: &[Ipv6Net], now: SystemTime) -> Ia6Result {
    ipam.ia6("lab6", ia, o, hints, None, now).await.unwrap()
}

/// The one member an answer holds.
#[track_caller]
fn one(r: &Ia6Result) -> Held6 {
    match r {
        Ia6Result::Held(h) if h.len() == 1 => h[0].clone(),
        other => panic!("expected one binding, got {other:?}"),
    }
}

async fn commit(ipam: &Ipam, ia: &Ia6Key, now: SystemTime) -> Ipv6Net {
    one(&op(ipam, ia, Ia6Op::Commit, &[], now).await).prefix
}

/// Advertise then Request get the same address; the IA gets it again on
/// every Commit; a free hint in the pool is honoured, one off the link is
/// NotOnLink; another IA of the same client gets another address.
#[tokio::test]
async fn an_ia_keeps_its_address_and_free_hints_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    let adv = one(&op(&ipam, &na(1), Ia6Op::Advertise, &[], at(0)).await);
    assert_eq!(adv.prefix.prefix_len(), 128);
    let got = commit(&ipam, &na(1), at(1)).await;
    assert_eq!(got, adv.prefix);
    assert_eq!(commit(&ipam, &na(1), at(2)).await, got);
    let other_iaid = Ia6Key { iaid: 2, ..na(1) };
    let other = commit(&ipam, &other_iaid, at(2)).await;
    assert_ne!(other, got);
    // A hint: free and in the pool → given; held by another IA → not.
    // (Members are handed out at random: one neither IA holds.)
    let hint = ["fd00:77::1f0/128", "fd00:77::1f1/128", "fd00:77::1f2/128"]
        .map(net)
        .into_iter()
        .find(|h| *h != got && *h != other)
        .unwrap();
    assert_eq!(
        one(&op(&ipam, &na(2), Ia6Op::Commit, &[hint], at(3)).await).prefix,
        hint
    );
    assert_ne!(
        one(&op(&ipam, &na(3), Ia6Op::Commit, &[hint], at(3)).await).prefix,
        hint
    );
    let off = net("2001:db8::1/128");
    assert_eq!(
        op(&ipam, &na(4), Ia6Op::Commit, &[off], at(4)).await,
        Ia6Result::NotOnLink
    );
    assert_eq!(
        op(&ipam, &na(1), Ia6Op::Extend, &[off], at(4)).await,
        Ia6Result::NotOnLink
    );
    // An off-link hint in a Solicit is ignored.
    assert_eq!(
        one(&op(&ipam, &na(4), Ia6Op::Advertise, &[off], at(4)).await)
            .prefix
            .prefix_len(),
        128
    );
    assert!(matches!(
        ipam.ia6("nope", &na(1), Ia6Op::Commit, &[], None, at(5))
            .await,
        Err(IpamError::UnknownSubnet(_))
    ));
}

/// A /48 cut into /56 gives exactly 256 distinct prefixes, then NoPrefixAvail.
#[tokio::test]
async fn delegated_prefixes_fill_the_pool_then_exhaust() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    let pool = net("fd00:78::/48");
    let mut given = Vec::new();
    for n in 0..256 {
        let p = commit(&ipam, &pd(n), at(0)).await;
        assert_eq!(p.prefix_len(), 56);
        assert!(pool.contains(&p), "{p}");
        assert!(!given.contains(&p), "{p} given twice");
        given.push(p);
    }
    assert_eq!(
        op(&ipam, &pd(999), Ia6Op::Advertise, &[], at(1)).await,
        Ia6Result::Exhausted
    );
    assert_eq!(
        op(&ipam, &pd(999), Ia6Op::Commit, &[], at(1)).await,
        Ia6Result::Exhausted
    );
    // The one prefix released is the one left.
    op(&ipam, &pd(7), Ia6Op::Release, &[], at(2)).await;
    assert_eq!(commit(&ipam, &pd(999), at(3)).await, given[7]);
}

/// A small address pool: four IAs fill it, a fifth is told NoAddrsAvail.
#[tokio::test]
async fn a_small_address_pool_exhausts() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::103");
    let mut seen = HashSet::new();
    for n in 0..4 {
        assert!(seen.insert(commit(&ipam, &na(n), at(0)).await));
    }
    assert_eq!(
        op(&ipam, &na(9), Ia6Op::Advertise, &[], at(1)).await,
        Ia6Result::Exhausted
    );
    assert_eq!(
        op(&ipam, &na(9), Ia6Op::Commit, &[], at(1)).await,
        Ia6Result::Exhausted
    );
}

/// A /64 pool: nothing per address (this would not finish otherwise), and
/// a thousand IAs get a thousand addresses.
#[tokio::test]
async fn a_slash_64_pool_allocates_without_walking_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = lab6("fd00:77::1ff");
    spec.pools[0].start = "fd00:77::".parse().unwrap();
    spec.pools[0].end = "fd00:77::ffff:ffff:ffff:ffff".parse().unwrap();
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    ipam.apply_config6(&[spec]).unwrap();
    let mut seen = HashSet::new();
    for n in 0..1000 {
        let a = one(&op(&ipam, &na(n), Ia6Op::Advertise, &[], at(0)).await).prefix;
        assert!(seen.insert(a));
    }
    assert_eq!(ipam.usage6()[0].addresses, u64::MAX);
    assert_eq!(ipam.usage6()[0].offered, 1000);
}

/// Extend inside the cache threshold (a quarter of the valid lifetime)
/// writes nothing and answers the binding as it is; after it, one write
/// and a new expiry.
#[tokio::test]
async fn extend_inside_cache_threshold_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, stats) = open6(dir.path(), "fd00:77::1ff");
    let first = one(&op(&ipam, &na(1), Ia6Op::Commit, &[], at(0)).await);
    assert_eq!(first.expires_at, at(1000));
    let writes = stats.ipam.writes_total.load(Relaxed);
    let r = one(&op(&ipam, &na(1), Ia6Op::Extend, &[first.prefix], at(249)).await);
    assert_eq!(r, first);
    let r = one(&op(&ipam, &na(1), Ia6Op::Commit, &[], at(249)).await);
    assert_eq!(r, first);
    assert_eq!(stats.ipam.writes_total.load(Relaxed), writes);
    let r = one(&op(&ipam, &na(1), Ia6Op::Extend, &[], at(250)).await);
    assert_eq!((r.prefix, r.expires_at), (first.prefix, at(1250)));
    assert_eq!(stats.ipam.writes_total.load(Relaxed), writes + 1);
    // Another IA has nothing to extend.
    assert_eq!(
        op(&ipam, &na(2), Ia6Op::Extend, &[], at(251)).await,
        Ia6Result::NoBinding
    );
    // vpcbox_ipam_leases counts v6 bindings beside v4 leases.
    ipam.publish_counts(true);
    let counts = stats.ipam.leases.lock().unwrap().clone();
    let bound = counts
        .iter()
        .find(|c| c.subnet == "lab6" && c.state == "bound");
    assert_eq!(bound.map(|c| c.count), Some(1), "{counts:?}");
}

/// Bindings survive a restart (the same IA gets the same address back, no
/// other IA gets it); offers do not; the server DUID stays the same.
#[tokio::test]
async fn bindings_and_the_server_duid_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, p, offered, duid) = {
        let (ipam, _) = open6(dir.path(), "fd00:77::101");
        let running = Running::committer(&ipam);
        let a = commit(&ipam, &na(1), at(0)).await;
        let p = commit(&ipam, &pd(1), at(0)).await;
        let o = one(&op(&ipam, &na(2), Ia6Op::Advertise, &[], at(0)).await).prefix;
        let duid = ipam.server_duid().unwrap();
        assert_eq!(&duid[..2], &[0, 4]);
        assert_eq!(duid.len(), 18);
        running.stop().await;
        (a, p, o, duid)
    };
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    assert_eq!(ipam.server_duid().unwrap(), duid);
    assert_eq!(ipam.subnets6()[0].id, "lab6");
    // The pool has two addresses: one bound to na(1), the other free again.
    assert_eq!(commit(&ipam, &na(3), at(1)).await, offered);
    assert_eq!(
        op(&ipam, &na(4), Ia6Op::Commit, &[a], at(1)).await,
        Ia6Result::Exhausted
    );
    assert_eq!(commit(&ipam, &na(1), at(2)).await, a);
    assert_eq!(commit(&ipam, &pd(1), at(2)).await, p);
    let listed = ipam.bindings6(&LeaseFilter::default(), None, 100, 100);
    assert_eq!(listed.bindings.len(), 3);
    assert!(listed.bindings.iter().all(|b| b.state == LeaseState::Bound));
    assert!(listed
        .bindings
        .iter()
        .any(|b| b.kind == Ia6Kind::Pd && b.ip == p.to_string()));
}

/// A declined address is quarantined (600 s), then given again.
#[tokio::test]
async fn a_declined_address_is_quarantined_then_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::100");
    let a = commit(&ipam, &na(1), at(0)).await;
    assert_eq!(
        op(&ipam, &na(1), Ia6Op::Decline, &[a], at(1)).await,
        Ia6Result::Held(vec![])
    );
    assert_eq!(
        op(&ipam, &na(1), Ia6Op::Extend, &[a], at(2)).await,
        Ia6Result::NoBinding
    );
    assert_eq!(
        op(&ipam, &na(2), Ia6Op::Commit, &[], at(600)).await,
        Ia6Result::Exhausted
    );
    assert_eq!(ipam.usage6()[0].declined, 1);
    ipam.reap(at(601)).unwrap();
    assert_eq!(commit(&ipam, &na(2), at(601)).await, a);
    // Nothing to decline.
    assert_eq!(
        op(&ipam, &na(3), Ia6Op::Decline, &[a], at(602)).await,
        Ia6Result::NoBinding
    );
}

/// An Advertise holds its address for the offer time (30 s), memory only.
#[tokio::test]
async fn an_offer_holds_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, stats) = open6(dir.path(), "fd00:77::100");
    let writes = stats.ipam.writes_total.load(Relaxed);
    let a = one(&op(&ipam, &na(1), Ia6Op::Advertise, &[], at(0)).await).prefix;
    assert_eq!(stats.ipam.writes_total.load(Relaxed), writes);
    assert_eq!(
        op(&ipam, &na(2), Ia6Op::Advertise, &[], at(29)).await,
        Ia6Result::Exhausted
    );
    assert_eq!(
        one(&op(&ipam, &na(2), Ia6Op::Advertise, &[], at(30)).await).prefix,
        a
    );
    // Releasing an offer drops it.
    assert_eq!(
        op(&ipam, &na(2), Ia6Op::Release, &[], at(31)).await,
        Ia6Result::Held(vec![])
    );
    assert_eq!(commit(&ipam, &na(3), at(31)).await, a);
}

/// Release frees the binding for others; a release without one is NoBinding;
/// a binding past its valid lifetime is reaped and cannot be extended.
#[tokio::test]
async fn release_and_expiry_free_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::100");
    let a = commit(&ipam, &na(1), at(0)).await;
    assert_eq!(
        op(&ipam, &na(1), Ia6Op::Release, &[a], at(1)).await,
        Ia6Result::Held(vec![])
    );
    assert_eq!(
        op(&ipam, &na(1), Ia6Op::Release, &[a], at(2)).await,
        Ia6Result::NoBinding
    );
    assert_eq!(commit(&ipam, &na(2), at(3)).await, a);
    ipam.reap(at(1003)).unwrap();
    assert_eq!(
        ipam.bindings6(&LeaseFilter::default(), None, 10, 10)
            .bindings,
        vec![]
    );
    assert_eq!(
        op(&ipam, &na(2), Ia6Op::Extend, &[a], at(1004)).await,
        Ia6Result::NoBinding
    );
    assert_eq!(commit(&ipam, &na(3), at(1005)).await, a);
}

/// One relay port holds at most its cap; its own bindings are not one
/// more; another port is unaffected.
#[tokio::test]
async fn a_relay_port_holds_at_most_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    ipam.set_port_cap6(2);
    let (pa, pb): (&[u8], &[u8]) = (b"fe80::1/eth0", b"fe80::1/eth1");
    let via = |ia: Ia6Key, o, port| {
        let ipam = ipam.clone();
        async move { ipam.ia6("lab6", &ia, o, &[], Some(port), at(0)).await }
    };
    via(na(1), Ia6Op::Commit, pa).await.unwrap();
    via(na(2), Ia6Op::Advertise, pa).await.unwrap();
    assert!(matches!(
        via(na(3), Ia6Op::Advertise, pa).await,
        Err(IpamError::PortFull { cap: 2 })
    ));
    via(na(2), Ia6Op::Commit, pa).await.unwrap();
    via(na(1), Ia6Op::Commit, pa).await.unwrap();
    via(na(3), Ia6Op::Commit, pb).await.unwrap();
}

/// A failed flush: the Commit gets the error (no Reply), memory holds what
/// the store holds, writes are refused until the store recovers; after a
/// restart every Commit answered Ok is there, and no address twice.
#[tokio::test]
async fn no_commit_answered_ok_before_its_write_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut ok = Vec::new();
    {
        let store = Faulty::open(dir.path());
        let ipam = Ipam::with_store(
            dir.path().into(),
            store.clone(),
            IpamOptions::default(),
            Stats::new(16),
        )
        .unwrap();
        ipam.apply_config6(&[lab6("fd00:77::1ff")]).unwrap();
        let running = Running::committer(&ipam);
        ok.push((na(1), commit(&ipam, &na(1), at(0)).await));
        for (n, fault) in [(2, &store.fail_apply), (3, &store.fail_flush)] {
            fault.store(1, Relaxed);
            let r = ipam
                .ia6("lab6", &na(n), Ia6Op::Commit, &[], None, at(1))
                .await;
            assert!(matches!(r, Err(IpamError::Storage(_))), "{r:?}");
            assert!(ipam.degraded().is_some());
            let r = ipam
                .ia6("lab6", &pd(n), Ia6Op::Commit, &[], None, at(1))
                .await;
            assert!(matches!(r, Err(IpamError::Degraded(_))), "{r:?}");
            // Memory holds what the store holds.
            let listed = ipam
                .bindings6(&LeaseFilter::default(), None, 10, 10)
                .bindings;
            let on_disk = listed.iter().any(|b| b.client == duid(n));
            let held = op(&ipam, &na(n), Ia6Op::Extend, &[], at(1)).await != Ia6Result::NoBinding;
            assert_eq!(held, on_disk, "client {n}");
            for _ in 0..300 {
                if ipam.degraded().is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(ipam.degraded(), None);
            ok.push((pd(n), commit(&ipam, &pd(n), at(2)).await));
        }
        running.stop().await;
    }
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    let listed = ipam
        .bindings6(&LeaseFilter::default(), None, 10, 10)
        .bindings;
    for (ia, got) in &ok {
        assert!(
            listed.iter().any(|b| b.client == ia.client
                && b.kind == ia.kind
                && b.ip == Ipam::key6_text(*got)),
            "{ia} {got} lost: {listed:?}"
        );
    }
    let ips: HashSet<&str> = listed.iter().map(|b| b.ip.as_str()).collect();
    assert_eq!(ips.len(), listed.len());
}

/// `db export` carries v6 subnets, stored bindings (not offers) and the
/// server DUID; `db import` restores them whole, and refuses a dump whose
/// binding names an unknown subnet6 or lies outside its subnet6, or whose
/// DUID is not one.
#[tokio::test]
async fn export_import_round_trip_with_v6() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    let a = commit(&ipam, &na(1), at(0)).await;
    commit(&ipam, &pd(1), at(0)).await;
    commit(&ipam, &na(2), at(0)).await;
    op(&ipam, &na(2), Ia6Op::Decline, &[], at(1)).await;
    op(&ipam, &na(3), Ia6Op::Advertise, &[], at(1)).await;
    let duid = ipam.server_duid().unwrap();
    let dump = ipam.export().unwrap();
    assert_eq!(dump.server_duid, Some(hex::encode(&duid)));
    assert_eq!(dump.subnets6.len(), 1);
    assert_eq!(dump.leases6.len(), 3, "{:?}", dump.leases6);
    let json = serde_json::to_string(&dump).unwrap();
    let other = tempfile::tempdir().unwrap();
    let copy = Ipam::open(other.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    copy.import(serde_json::from_str(&json).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(copy.export().unwrap(), dump);
    assert_eq!(copy.server_duid().unwrap(), duid, "clients' Renews name it");
    // The restored binding holds: another IA cannot take it.
    let other = one(&op(&copy, &na(9), Ia6Op::Commit, &[a], at(2)).await);
    assert_ne!(other.prefix, a);
    assert_eq!(commit(&copy, &na(1), at(2)).await, a);
    let mut bad = dump.clone();
    bad.leases6[0].subnet = "nope".into();
    assert!(matches!(
        copy.import(bad, true).await,
        Err(IpamError::InvalidDump(_))
    ));
    let mut bad = dump.clone();
    bad.leases6[0].ip = "2001:db8::1".into();
    assert!(matches!(
        copy.import(bad, true).await,
        Err(IpamError::InvalidDump(_))
    ));
    for d in ["zz00ff", "0004"] {
        let mut bad = dump.clone();
        bad.server_duid = Some(d.into());
        let e = copy.import(bad, true).await.unwrap_err();
        assert!(e.to_string().contains("server_duid"), "{e}");
    }
}

/// The running reaper wakes for a v6 binding's end (no call to `reap`):
/// a binding of a 1 s lifetime is gone within seconds.
#[tokio::test]
async fn the_reaper_ends_v6_bindings_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = lab6("fd00:77::1ff");
    (spec.preferred_lifetime, spec.valid_lifetime) =
        (Duration::from_secs(1), Duration::from_secs(1));
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    ipam.apply_config6(&[spec]).unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    ipam.spawn(&tracker, cancel.clone());
    let got = ipam
        .ia6("lab6", &na(1), Ia6Op::Commit, &[], None, SystemTime::now())
        .await;
    one(&got.unwrap());
    let listed = || {
        ipam.bindings6(&LeaseFilter::default(), None, 10, 10)
            .bindings
            .len()
    };
    assert_eq!(listed(), 1);
    let mut left = 1;
    for _ in 0..200 {
        left = listed();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the binding outlived its lifetime by 10 s");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

/// Live offers stop at OFFER_CAP6 however many DUIDs solicit: past it an
/// Advertise still names a free address, without holding it.
#[tokio::test]
async fn live_offers_stay_under_their_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = lab6("fd00:77::1ff");
    spec.pools[0].end = "fd00:77::ffff:ffff:ffff:ffff".parse().unwrap();
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    ipam.apply_config6(&[spec]).unwrap();
    for n in 0..OFFER_CAP6 as u32 + 100 {
        one(&op(&ipam, &na(n), Ia6Op::Advertise, &[], at(0)).await);
    }
    assert_eq!(ipam.usage6()[0].offered, OFFER_CAP6 as u64);
    // An IA holding an offer may still move it.
    one(&op(&ipam, &na(1), Ia6Op::Advertise, &[], at(1)).await);
    assert_eq!(ipam.usage6()[0].offered, OFFER_CAP6 as u64);
    // The unheld answer is still bound by a Request if free.
    one(&op(
        &ipam,
        &na(OFFER_CAP6 as u32 + 50),
        Ia6Op::Commit,
        &[],
        at(2),
    )
    .await);
}

/// Pages of any size and scan budget cover every binding once, in order.
#[tokio::test]
async fn binding_pages_cover_every_binding_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    // Real time: the listing shows offers live now.
    let now = SystemTime::now();
    for n in 0..20 {
        commit(&ipam, &na(n), now).await;
        commit(&ipam, &pd(n), now).await;
    }
    op(&ipam, &na(99), Ia6Op::Advertise, &[], now).await;
    let all = ipam
        .bindings6(&LeaseFilter::default(), None, 1000, 1000)
        .bindings;
    assert_eq!(all.len(), 41);
    for (limit, budget) in [(1, 1000), (3, 2), (7, 1), (1000, 5)] {
        let (mut seen, mut after) = (Vec::new(), None);
        for _ in 0..200 {
            let page = ipam.bindings6(&LeaseFilter::default(), after, limit, budget);
            seen.extend(page.bindings);
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(seen, all, "limit {limit} budget {budget}");
    }
}

/// One DUID holds at most `IA_CAP6` IAs of each type, bound or offered,
/// whatever IAIDs it makes up: past it a new IA is Exhausted (no binding,
/// no offer); an IA it holds is still served; a released one makes room;
/// the count is rebuilt from the store on restart.
#[tokio::test]
async fn one_duid_holds_at_most_its_cap_of_ias() {
    let dir = tempfile::tempdir().unwrap();
    let cap = IA_CAP6;
    let ia = |kind, iaid| Ia6Key {
        client: duid(9),
        kind,
        iaid,
    };
    {
        let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
        let running = Running::committer(&ipam);
        for iaid in 0..cap - 2 {
            commit(&ipam, &ia(Ia6Kind::Na, iaid), at(0)).await;
        }
        for iaid in cap - 2..cap {
            one(&op(&ipam, &ia(Ia6Kind::Na, iaid), Ia6Op::Advertise, &[], at(0)).await);
        }
        for iaid in cap..cap + 20 {
            for o in [Ia6Op::Advertise, Ia6Op::Commit] {
                let r = op(&ipam, &ia(Ia6Kind::Na, iaid), o, &[], at(1)).await;
                assert_eq!(r, Ia6Result::Exhausted, "iaid {iaid} {o:?}");
            }
        }
        assert_eq!(ipam.usage6()[0].bound, u64::from(cap - 2));
        assert_eq!(ipam.usage6()[0].offered, 2);
        // Offered IAs bind; other types and other clients have caps of their own.
        commit(&ipam, &ia(Ia6Kind::Na, cap - 1), at(2)).await;
        commit(&ipam, &ia(Ia6Kind::Pd, 77), at(2)).await;
        commit(&ipam, &na(1), at(2)).await;
        let held = ia(Ia6Kind::Na, 0);
        let a = commit(&ipam, &held, at(3)).await;
        assert_eq!(
            op(&ipam, &held, Ia6Op::Release, &[a], at(4)).await,
            Ia6Result::Held(vec![])
        );
        commit(&ipam, &ia(Ia6Kind::Na, 1000), at(5)).await;
        running.stop().await;
    }
    // Offers are memory only: after a restart 7 bound IAs, room for one.
    let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
    commit(&ipam, &ia(Ia6Kind::Na, 1001), at(6)).await;
    let r = op(&ipam, &ia(Ia6Kind::Na, 1002), Ia6Op::Commit, &[], at(6)).await;
    assert_eq!(r, Ia6Result::Exhausted, "the cap after a restart");
    commit(&ipam, &ia(Ia6Kind::Na, 1), at(6)).await;
}

/// A message's IA_NA and IA_PD are bound under one lock and answered after
/// one durable write (one waiter on the group commit, not one per IA), and
/// both survive a restart.
#[tokio::test]
async fn a_message_binds_all_its_ias_in_one_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, p) = {
        let (ipam, stats) = open6(dir.path(), "fd00:77::1ff");
        let running = Running::committer(&ipam);
        let (ia_na, ia_pd) = (na(7), pd(7));
        let asks = [
            IaAsk {
                ia: &ia_na,
                hints: &[],
            },
            IaAsk {
                ia: &ia_pd,
                hints: &[],
            },
        ];
        let waiters = || stats.ipam.commit_seconds.snapshot().count;
        let before = waiters();
        let got = ipam
            .ias6("lab6", &asks, Ia6Op::Commit, None, at(0))
            .await
            .unwrap();
        assert_eq!(waiters(), before + 1, "one waiter for the message");
        assert_eq!(got.len(), 2);
        let (a, p) = (one(&got[0]).prefix, one(&got[1]).prefix);
        assert_eq!(a.prefix_len(), 128);
        assert_eq!(p.prefix_len(), 56);
        // Asked again (a retransmission): both cached, no write.
        let again = ipam
            .ias6("lab6", &asks, Ia6Op::Commit, None, at(1))
            .await
            .unwrap();
        assert_eq!((one(&again[0]).prefix, one(&again[1]).prefix), (a, p));
        assert_eq!(waiters(), before + 1);
        running.stop().await;
        (a, p)
    };
    let (ipam, _) = open6(dir.path(), "fd00:77::1ff");
    assert_eq!(
        one(&op(&ipam, &na(7), Ia6Op::Extend, &[], at(2)).await).prefix,
        a
    );
    assert_eq!(
        one(&op(&ipam, &pd(7), Ia6Op::Extend, &[], at(2)).await).prefix,
        p
    );
}
