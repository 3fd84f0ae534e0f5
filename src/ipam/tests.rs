//! IPAM unit tests: every one runs on a real sled store in a temp dir.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::client::ClientKey;
use crate::stats::Stats;

pub fn spec(id: &str, cidr: &str, start: &str, end: &str) -> SubnetSpec {
    let pool = PoolRange {
        start: ip(start),
        end: ip(end),
    };
    SubnetSpec::new(id, cidr.parse().unwrap(), pool).with_lease_time(Duration::from_secs(1000))
}

pub fn mac(n: u8) -> ClientKey {
    ClientKey::Mac([2, 0, 0, 0, 0, n])
}

pub fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn open(dir: &Path) -> Arc<Ipam> {
    Ipam::open(dir, IpamOptions::default(), Stats::new(16)).unwrap()
}

/// An IPAM with `opts` and one subnet configured at `at(0)`, and its stats.
fn with_stats(dir: &Path, opts: IpamOptions, spec: SubnetSpec) -> (Arc<Ipam>, Arc<Stats>) {
    let stats = Stats::new(16);
    let ipam = Ipam::open(dir, opts, stats.clone()).unwrap();
    ipam.apply_config(&[spec], &[], at(0)).unwrap();
    (ipam, stats)
}

/// A test IPAM's committer (and reaper, with [`Running::spawn`]), until `stop`.
pub(crate) struct Running {
    tracker: tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
}

impl Running {
    pub(crate) fn spawn(ipam: &Arc<Ipam>) -> Self {
        let r = Self::new();
        ipam.spawn(&r.tracker, r.cancel.clone());
        r
    }

    /// The committer only: the test drives expiry with `reap`.
    pub(crate) fn committer(ipam: &Arc<Ipam>) -> Self {
        let r = Self::new();
        ipam.spawn_committer(&r.tracker, r.cancel.clone());
        r
    }

    fn new() -> Self {
        Self {
            tracker: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Subnet "lab" = 10.0.0.0/24, pool .10–.13.
fn lab_spec() -> SubnetSpec {
    spec("lab", "10.0.0.0/24", "10.0.0.10", "10.0.0.13")
}

/// A store with subnet [`lab_spec`].
fn lab(dir: &Path) -> Arc<Ipam> {
    let ipam = open(dir);
    ipam.apply_config(&[lab_spec()], &[], at(0)).unwrap();
    ipam
}

async fn bind_new(ipam: &Ipam, c: &ClientKey, now: SystemTime) -> Lease {
    let offer = ipam.offer("lab", c, None, now).unwrap();
    ipam.bind("lab", c, offer.ip, None, now).await.unwrap()
}

/// [`bind_new`] for each of `clients` in turn: their addresses.
async fn bind_each(ipam: &Ipam, clients: RangeInclusive<u8>, now: SystemTime) -> Vec<Ipv4Addr> {
    let mut ips = Vec::new();
    for n in clients {
        ips.push(bind_new(ipam, &mac(n), now).await.ip);
    }
    ips
}

/// The "lab" pool has no address left to offer `c` at `now`.
#[track_caller]
fn assert_exhausted(ipam: &Ipam, c: &ClientKey, now: SystemTime) {
    let r = ipam.offer("lab", c, None, now);
    assert!(matches!(r, Err(IpamError::PoolExhausted { .. })), "{r:?}");
}

#[tokio::test]
async fn allocation_order() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    // Free addresses first, in order.
    let a = bind_new(&ipam, &mac(1), at(0)).await;
    let b = bind_new(&ipam, &mac(2), at(1)).await;
    assert_eq!((a.ip, b.ip), (ip("10.0.0.10"), ip("10.0.0.11")));
    // Its current lease.
    assert_eq!(ipam.offer("lab", &mac(1), None, at(2)).unwrap().ip, a.ip);
    assert_eq!(
        ipam.offer("lab", &mac(1), None, at(2)).unwrap().state,
        LeaseState::Bound
    );
    // A requested free address.
    assert_eq!(
        ipam.offer("lab", &mac(3), Some(ip("10.0.0.13")), at(2))
            .unwrap()
            .ip,
        ip("10.0.0.13")
    );
    // A requested address in use by another is not given.
    assert_eq!(
        ipam.offer("lab", &mac(4), Some(a.ip), at(2)).unwrap().ip,
        ip("10.0.0.12")
    );
    // Released: its previous address, if still free.
    ipam.release(&mac(2), b.ip, at(3)).await.unwrap();
    assert_eq!(ipam.offer("lab", &mac(2), None, at(4)).unwrap().ip, b.ip);
    // Pool now: .10 bound(1), .11 offered(2), .12 offered(4), .13 offered(3).
    assert_exhausted(&ipam, &mac(5), at(4));
    // Offers time out after offer_hold (30 s): the oldest released/expired
    // address is reused only once no never-used one is left.
    ipam.release(&mac(1), a.ip, at(40)).await.unwrap();
    let c = ipam.offer("lab", &mac(6), None, at(41)).unwrap();
    assert_ne!(c.ip, a.ip, "never-used addresses come before released ones");
}

#[tokio::test]
async fn oldest_released_is_reused_first() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let ips = bind_each(&ipam, 1..=4, at(0)).await;
    ipam.release(&mac(3), ips[2], at(10)).await.unwrap();
    ipam.release(&mac(1), ips[0], at(20)).await.unwrap();
    assert_eq!(ipam.offer("lab", &mac(9), None, at(30)).unwrap().ip, ips[2]);
    let got = ipam
        .bind("lab", &mac(9), ips[2], None, at(30))
        .await
        .unwrap();
    assert_eq!(got.client, mac(9));
    // mac(3) lost its previous address and gets the next reusable one.
    assert_eq!(ipam.offer("lab", &mac(3), None, at(31)).unwrap().ip, ips[0]);
    assert_eq!(ipam.lookup(ips[2]).unwrap().client, mac(9));
}

#[tokio::test]
async fn reservations_and_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = open(dir.path());
    let mut s = spec("lab", "10.0.0.0/24", "10.0.0.1", "10.0.0.6");
    s.gateway = Some(ip("10.0.0.1"));
    s.exclude = vec![ip("10.0.0.2")];
    let r = ReservationSpec {
        subnet: "lab".into(),
        client: mac(7),
        ip: ip("10.0.0.3"),
        hostname: None,
    };
    let out = ReservationSpec {
        subnet: "lab".into(),
        client: mac(8),
        ip: ip("10.0.0.200"),
        hostname: None,
    };
    ipam.apply_config(&[s], &[r.clone(), out], at(0)).unwrap();
    assert_eq!(ipam.utilisation()[0].size, 4);
    let got = bind_each(&ipam, 1..=3, at(0)).await;
    assert_eq!(got, [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")]);
    assert_exhausted(&ipam, &mac(4), at(0));
    assert!(matches!(
        ipam.bind("lab", &mac(4), r.ip, None, at(0)).await,
        Err(IpamError::Reserved { .. })
    ));
    assert!(matches!(
        ipam.bind("lab", &mac(4), ip("10.0.0.2"), None, at(0)).await,
        Err(IpamError::NotInSubnet { .. })
    ));
    assert!(matches!(
        ipam.bind("lab", &mac(4), ip("10.0.0.1"), None, at(0)).await,
        Err(IpamError::NotInSubnet { .. })
    ));
    assert_eq!(bind_new(&ipam, &mac(7), at(0)).await.ip, r.ip);
    assert_eq!(bind_new(&ipam, &mac(8), at(0)).await.ip, ip("10.0.0.200"));
    // Reserving an address leased to another client is refused.
    let steal = ReservationSpec {
        subnet: "lab".into(),
        client: mac(9),
        ip: got[0],
        hostname: None,
    };
    assert!(matches!(
        ipam.add_reservation(steal).await,
        Err(IpamError::ReservationConflict(_))
    ));
    ipam.delete_reservation("lab", &mac(7)).await.unwrap();
    assert_eq!(ipam.reservations().len(), 1);
}

#[tokio::test]
async fn renew_inside_cache_threshold_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, stats) = with_stats(dir.path(), IpamOptions::default(), lab_spec());
    let l = bind_new(&ipam, &mac(1), at(0)).await;
    let writes = stats.ipam.writes_total.load(Relaxed);
    // Lease time 1000 s, threshold 0.25: renewals before 250 s are cached.
    let r = ipam.renew(&mac(1), l.ip, at(249)).await.unwrap();
    assert_eq!(r.expires_at, l.expires_at);
    assert_eq!(stats.ipam.writes_total.load(Relaxed), writes);
    let r = ipam.renew(&mac(1), l.ip, at(250)).await.unwrap();
    assert_eq!(r.expires_at, at(1250));
    assert_eq!(stats.ipam.writes_total.load(Relaxed), writes + 1);
    assert!(matches!(
        ipam.renew(&mac(2), l.ip, at(251)).await,
        Err(IpamError::NotOwner { .. })
    ));
    assert!(matches!(
        ipam.renew(&mac(2), ip("10.0.0.12"), at(251)).await,
        Err(IpamError::NoLease)
    ));
}

#[tokio::test]
async fn decline_quarantines_then_frees() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let l = bind_new(&ipam, &mac(1), at(0)).await;
    ipam.decline(&mac(1), l.ip, at(1)).await.unwrap();
    assert_eq!(ipam.lookup(l.ip).unwrap().state, LeaseState::Declined);
    bind_each(&ipam, 2..=4, at(2)).await;
    // Quarantine is 600 s.
    assert_exhausted(&ipam, &mac(5), at(600));
    assert!(matches!(
        ipam.bind("lab", &mac(5), l.ip, None, at(600)).await,
        Err(IpamError::AddressTaken { .. })
    ));
    assert_eq!(ipam.offer("lab", &mac(5), None, at(601)).unwrap().ip, l.ip);
}

#[tokio::test]
async fn expiry_with_explicit_now() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let ips = bind_each(&ipam, 1..=4, at(0)).await;
    assert_exhausted(&ipam, &mac(9), at(999));
    ipam.reap(at(1000)).unwrap();
    assert_eq!(ipam.lookup(ips[0]).unwrap().state, LeaseState::Expired);
    let by_state = &ipam.utilisation()[0].by_state;
    assert!(by_state.contains(&(LeaseState::Expired, 4)));
    // An expired client renewing its still-free address gets it back.
    assert_eq!(
        ipam.renew(&mac(2), ips[1], at(1001)).await.unwrap().state,
        LeaseState::Bound
    );
    let l = ipam.allocate("lab", &mac(9), at(1002)).await.unwrap();
    assert_eq!(l.ip, ips[0]);
    // Idempotent per client.
    assert_eq!(ipam.allocate("lab", &mac(9), at(1003)).await.unwrap(), l);
}

#[tokio::test]
async fn restart_keeps_bindings_and_drops_offers() {
    let dir = tempfile::tempdir().unwrap();
    let (bound, offered) = {
        let ipam = lab(dir.path());
        let b = bind_new(&ipam, &mac(1), at(0)).await;
        let o = ipam.offer("lab", &mac(2), None, at(0)).unwrap();
        (b, o)
    };
    let ipam = open(dir.path());
    assert_eq!(ipam.lease_of(&mac(1)), Some(bound.clone()));
    assert_eq!(ipam.lookup(offered.ip), None);
    assert_eq!(
        ipam.subnet("lab").unwrap().cidr,
        "10.0.0.0/24".parse().unwrap()
    );
    assert!(matches!(
        ipam.bind("lab", &mac(3), bound.ip, None, at(1)).await,
        Err(IpamError::AddressTaken { .. })
    ));
}

/// A relay port holds at most its cap of addresses, offers and bound
/// leases together; the client's own offer or bound lease is not one
/// more; another port is unaffected; an ended lease frees its place; and
/// the counts are rebuilt from the store at open (offers are not kept).
#[tokio::test]
async fn a_port_holds_at_most_its_cap_and_the_count_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a: &[u8] = b"\x0a\x00\x00\x02port-a";
    let b: &[u8] = b"\x0a\x00\x00\x02port-b";
    let port = |id| Some(Port { id, cap: 2 });
    let leases = {
        let ipam = lab(dir.path());
        let one = ipam
            .offer_via("lab", &mac(1), None, port(a), at(0))
            .unwrap();
        let one = ipam
            .bind_via("lab", &mac(1), one.ip, None, port(a), at(0))
            .await
            .unwrap();
        let two = ipam
            .offer_via("lab", &mac(2), None, port(a), at(0))
            .unwrap();
        assert_eq!(ipam.port_held(a), 2, "a bound lease and an offer");
        assert!(matches!(
            ipam.offer_via("lab", &mac(3), None, port(a), at(0)),
            Err(IpamError::PortFull { cap: 2 })
        ));
        // Nor a bind without an offer (an INIT-REBOOT or SELECTING REQUEST
        // naming a free address).
        assert!(matches!(
            ipam.bind_via("lab", &mac(3), ip("10.0.0.13"), None, port(a), at(0))
                .await,
            Err(IpamError::PortFull { cap: 2 })
        ));
        // The client's own offer and bound lease are no more.
        ipam.bind_via("lab", &mac(2), two.ip, None, port(a), at(0))
            .await
            .unwrap();
        assert_eq!(
            ipam.offer_via("lab", &mac(1), None, port(a), at(1))
                .unwrap()
                .ip,
            one.ip
        );
        ipam.bind_via("lab", &mac(1), one.ip, None, port(a), at(1))
            .await
            .unwrap();
        assert_eq!(
            ipam.renew(&mac(1), one.ip, at(600)).await.unwrap().state,
            LeaseState::Bound
        );
        assert_eq!(ipam.port_held(a), 2);
        // Another port is not affected.
        ipam.offer_via("lab", &mac(4), None, port(b), at(0))
            .unwrap();
        assert_eq!(ipam.port_held(b), 1);
        (one, two)
    };
    let ipam = open(dir.path());
    assert_eq!(ipam.port_held(a), 2, "rebuilt from the stored leases");
    assert_eq!(ipam.port_held(b), 0, "offers are not stored");
    assert!(matches!(
        ipam.offer_via("lab", &mac(5), None, port(a), at(2)),
        Err(IpamError::PortFull { .. })
    ));
    // A released lease frees its place.
    ipam.release(&mac(2), leases.1.ip, at(3)).await.unwrap();
    assert_eq!(ipam.port_held(a), 1);
    ipam.offer_via("lab", &mac(5), None, port(a), at(3))
        .unwrap();
    assert_eq!(ipam.port_held(a), 2);
    // Without a cap, a port is counted but never refused.
    let open_port = Some(Port { id: a, cap: 0 });
    ipam.offer_via("lab", &mac(6), None, open_port, at(3))
        .unwrap();
    assert_eq!(ipam.port_held(a), 3);
}

#[test]
fn second_open_is_locked_and_garbage_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(4)).unwrap_err();
    assert!(matches!(err, IpamError::Locked { .. }), "{err:?}");

    let junk = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = vec![0u8; 64 * 1024];
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(junk.path().join("db"), &bytes).unwrap();
    std::fs::write(junk.path().join("conf"), &bytes[..512]).unwrap();
    let err = Ipam::open(junk.path(), IpamOptions::default(), Stats::new(4)).unwrap_err();
    assert!(matches!(err, IpamError::Corrupt { .. }), "{err:?}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let op = store::Op {
            tree: store::TreeId::Meta,
            key: b"schema".to_vec(),
            value: Some(99u32.to_be_bytes().to_vec()),
        };
        s.apply(&[op]).unwrap();
        s.flush().unwrap();
    }
    let err = open_unlocked(dir.path(), IpamOptions::default()).unwrap_err();
    assert_eq!(
        err,
        IpamError::NewerSchema {
            found: 99,
            supported: SCHEMA
        }
    );
}

#[tokio::test]
async fn subnets_relays_and_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let mut other = spec("far", "10.1.0.0/24", "10.1.0.10", "10.1.0.20");
    other.relays = vec![ip("192.0.2.1")];
    ipam.add_subnet(other).await.unwrap();
    let dup = spec("dup", "10.0.0.0/25", "10.0.0.10", "10.0.0.20");
    assert!(matches!(
        ipam.add_subnet(dup).await,
        Err(IpamError::SubnetOverlap { .. })
    ));
    assert!(matches!(
        ipam.add_subnet(spec("lab", "10.9.0.0/24", "10.9.0.1", "10.9.0.2"))
            .await,
        Err(IpamError::SubnetExists(_))
    ));
    let bad = spec("bad", "10.2.0.0/24", "10.2.0.0", "10.2.0.9");
    assert!(matches!(
        ipam.add_subnet(bad).await,
        Err(IpamError::InvalidSubnet(_))
    ));
    assert_eq!(ipam.subnet_for_relay(ip("192.0.2.1")).unwrap().id, "far");
    // A giaddr merely inside a subnet's CIDR selects nothing: anyone can
    // forge it; only listed relays count.
    assert!(ipam.subnet_for_relay(ip("10.1.0.1")).is_none());
    assert!(ipam.is_relay(ip("192.0.2.1")) && !ipam.is_relay(ip("10.1.0.1")));
    assert_eq!(ipam.subnet_for_interface(ip("10.0.0.1")).unwrap().id, "lab");
    assert!(ipam.subnet_for_relay(ip("10.3.0.1")).is_none());
    let l = ipam.allocate("far", &mac(1), at(0)).await.unwrap();
    ipam.delete_subnet("far").await.unwrap();
    assert!(ipam.lookup(l.ip).is_none() && ipam.lease_of(&mac(1)).is_none());
    drop(ipam);
    assert_eq!(open(dir.path()).subnets().len(), 1);
}

#[tokio::test]
async fn group_commit_batches_concurrent_binds() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, stats) = with_stats(
        dir.path(),
        IpamOptions::default(),
        spec("lab", "10.0.0.0/16", "10.0.1.0", "10.0.4.255"),
    );
    let running = Running::spawn(&ipam);
    let now = SystemTime::now();
    let tasks: Vec<_> = (0..200u32)
        .map(|n| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let c = ClientKey::Id(n.to_be_bytes().into());
                ipam.allocate("lab", &c, now).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let b = stats.ipam.batch_size.snapshot();
    assert_eq!(b.sum as u64, 200, "every write was committed");
    assert!(b.count < 200, "{b:?}: writes shared flushes");
    assert_eq!(stats.ipam.commits_waiting.load(Relaxed), 0);
    running.stop().await;
    let leases = stats.ipam.leases.lock().unwrap().clone();
    assert!(
        leases.iter().any(|c| c.state == "bound" && c.count == 200),
        "{leases:?}"
    );
}

#[tokio::test]
async fn export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    bind_new(&ipam, &mac(1), at(0)).await;
    let l2 = bind_new(&ipam, &mac(2), at(0)).await;
    ipam.release(&mac(2), l2.ip, at(5)).await.unwrap();
    let r = ReservationSpec {
        subnet: "lab".into(),
        client: mac(3),
        ip: ip("10.0.0.50"),
        hostname: Some("db".into()),
    };
    ipam.add_reservation(r).await.unwrap();
    let iso = crate::isolation::IsolationSet::open(ipam.isolation_store()).unwrap();
    iso.isolate(&mac(66), "test").unwrap();
    let dump = ipam.export().unwrap();
    let json = serde_json::to_string(&dump).unwrap();
    let back: Dump = serde_json::from_str(&json).unwrap();
    assert!(matches!(
        ipam.import(back.clone(), false).await,
        Err(IpamError::NotEmpty)
    ));

    let dir2 = tempfile::tempdir().unwrap();
    let fresh = open(dir2.path());
    fresh.import(back, false).await.unwrap();
    assert_eq!(fresh.export().unwrap(), dump);
    drop(fresh);
    let reopened = open(dir2.path());
    assert_eq!(reopened.export().unwrap(), dump);
    assert_eq!(
        reopened.lease_of(&mac(2)).unwrap().state,
        LeaseState::Released
    );
    assert!(
        crate::isolation::IsolationSet::open(reopened.isolation_store())
            .unwrap()
            .is_isolated(&mac(66))
    );
}

#[test]
fn subnet_json_shape() {
    let mut s = lab_spec();
    s.options = vec![DhcpOption {
        code: 150,
        data: vec![10, 0, 0, 1],
    }];
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v["options"][0],
        serde_json::json!({"code": 150, "hex": "0a000001"})
    );
    assert_eq!(v["lease_time"], "16m 40s");
    let back: SubnetSpec = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}

#[tokio::test]
async fn reaper_expires_on_time_after_being_woken() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IpamOptions {
        offer_hold: Duration::from_secs(1),
        ..IpamOptions::default()
    };
    let s = lab_spec();
    let (ipam, stats) = with_stats(dir.path(), opts, s.with_lease_time(Duration::from_secs(1)));
    // The reaper starts with nothing to do (a long sleep) and must be woken.
    let running = Running::spawn(&ipam);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let l = ipam
        .allocate("lab", &mac(1), SystemTime::now())
        .await
        .unwrap();
    let o = ipam.offer("lab", &mac(2), None, SystemTime::now()).unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(ipam.lookup(l.ip).unwrap().state, LeaseState::Expired);
    assert_eq!(ipam.lookup(o.ip), None, "the offer timed out");
    let counts = stats.ipam.leases.lock().unwrap().clone();
    assert!(
        counts.iter().any(|c| c.state == "expired" && c.count == 1),
        "{counts:?}"
    );
    assert!(stats.ipam.commit_seconds.snapshot().count >= 1);
    running.stop().await;
}

/// A sled store whose first `flush` panics (as sled might on a bug).
/// A sled store with injected faults: the next `fail_apply` applies and
/// `fail_flush` flushes fail; `armed` makes the next flush panic.
pub struct Faulty {
    inner: SledStore,
    armed: std::sync::atomic::AtomicBool,
    pub fail_apply: std::sync::atomic::AtomicU32,
    pub fail_flush: std::sync::atomic::AtomicU32,
    /// Faults injected so far.
    pub hits: std::sync::atomic::AtomicU32,
}

impl Faulty {
    pub fn open(dir: &Path) -> Arc<Self> {
        Arc::new(Faulty {
            inner: SledStore::open(dir, 1 << 20).unwrap(),
            armed: false.into(),
            fail_apply: 0.into(),
            fail_flush: 0.into(),
            hits: 0.into(),
        })
    }
}

fn take_one(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

impl Store for Faulty {
    fn get(&self, tree: store::TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, IpamError> {
        self.inner.get(tree, key)
    }
    fn scan(&self, tree: store::TreeId, from: &[u8], to: Option<&[u8]>) -> store::KvIter<'_> {
        self.inner.scan(tree, from, to)
    }
    fn apply(&self, ops: &[store::Op]) -> Result<(), IpamError> {
        if !ops.is_empty() && take_one(&self.fail_apply) {
            self.hits.fetch_add(1, Relaxed);
            return Err(IpamError::Storage("injected: apply failed".into()));
        }
        self.inner.apply(ops)
    }
    fn flush(&self) -> Result<(), IpamError> {
        if self.armed.swap(false, Relaxed) {
            panic!("injected: the store panicked in flush");
        }
        if take_one(&self.fail_flush) {
            self.hits.fetch_add(1, Relaxed);
            return Err(IpamError::Storage("injected: flush failed".into()));
        }
        self.inner.flush()
    }
    fn flush_async(&self) -> futures::future::BoxFuture<'static, Result<(), IpamError>> {
        self.inner.flush_async()
    }
    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }
    fn reopen(&self) -> Result<(), IpamError> {
        self.inner.reopen()
    }
}

/// A lab IPAM over a [`Faulty`] store, with its committer running.
fn faulty_lab(
    dir: &Path,
    pool_end: &str,
) -> (
    Arc<Ipam>,
    Arc<Faulty>,
    tokio_util::task::TaskTracker,
    tokio_util::sync::CancellationToken,
) {
    let store = Faulty::open(dir);
    let ipam = Ipam::with_store(
        dir.into(),
        store.clone(),
        IpamOptions::default(),
        Stats::new(16),
    )
    .unwrap();
    ipam.apply_config(
        &[spec("lab", "10.0.0.0/16", "10.0.0.10", pool_end)],
        &[],
        at(0),
    )
    .unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    ipam.spawn_committer(&tracker, cancel.clone());
    (ipam, store, tracker, cancel)
}

async fn close(
    ipam: Arc<Ipam>,
    store: Arc<Faulty>,
    tracker: tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
) {
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    drop((ipam, store));
}

async fn until_writable(ipam: &Ipam) {
    for _ in 0..300 {
        if ipam.degraded().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still degraded: {:?}", ipam.degraded());
}

/// A failed apply and a failed flush: the write gets the error, memory is
/// rolled back to the store, writes are refused (no offer either) until
/// the committer's probe succeeds, then served again; a restart finds
/// exactly the writes that were answered Ok.
#[tokio::test]
async fn a_failed_apply_or_flush_fails_its_write_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, store, tracker, cancel) = faulty_lab(dir.path(), "10.0.0.200");
    let events = Arc::new(crate::events::EventLog::default());
    ipam.attach_events(events.clone());
    let now = SystemTime::now();
    let mut ok = Vec::new();
    ok.push(ipam.allocate("lab", &mac(1), now).await.unwrap());
    for (n, fault) in [(2u8, &store.fail_apply), (3, &store.fail_flush)] {
        fault.store(1, Relaxed);
        let e = ipam.allocate("lab", &mac(n), now).await.unwrap_err();
        assert!(matches!(e, IpamError::Storage(_)), "{e}");
        assert!(ipam.degraded().is_some());
        // Memory holds what the store holds.
        let on_disk = ipam
            .store
            .get(
                store::TreeId::Leases,
                &record::ip_key(u32::from(ip("10.0.0.11"))),
            )
            .unwrap()
            .is_some();
        assert_eq!(ipam.lease_of(&mac(n)).is_some(), on_disk, "client {n}");
        let refused = ipam.allocate("lab", &mac(100 + n), now).await.unwrap_err();
        assert!(matches!(refused, IpamError::Degraded(_)), "{refused}");
        assert!(ipam.offer("lab", &mac(100 + n), None, at(1)).is_err());
        // Reads and cached renewals still answer.
        assert_eq!(ipam.lease_of(&mac(1)).unwrap().ip, ok[0].ip);
        ipam.renew(&mac(1), ok[0].ip, now).await.unwrap();
        until_writable(&ipam).await;
        ok.push(ipam.allocate("lab", &mac(100 + n), now).await.unwrap());
    }
    assert_eq!(ipam.stats.ipam.storage_errors_total.load(Relaxed), 2);
    let kinds: Vec<_> = events.recent(10).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [crate::events::EventKind::Storage; 4],
        "failed, recovered, twice"
    );
    assert_eq!(ipam.stats.ipam.storage_degraded.load(Relaxed), 0);
    close(ipam, store, tracker, cancel).await;
    let ipam = open_unlocked(dir.path(), IpamOptions::default()).unwrap();
    for l in &ok {
        assert_eq!(ipam.lease_of(&l.client).map(|x| x.ip), Some(l.ip));
    }
}

/// Many writers while batches fail: every write answered Ok is on disk
/// after a restart, and no address is bound to two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_answered_ok_is_on_disk_when_batches_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, store, tracker, cancel) = faulty_lab(dir.path(), "10.0.255.200");
    let now = SystemTime::now();
    // The first batch fails whatever the timing; more faults follow below.
    store.fail_apply.store(1, Relaxed);
    let tasks: Vec<_> = (0..400u32)
        .map(|n| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let c = ClientKey::Id(n.to_be_bytes().into());
                // Retried while refused, as a DHCP client would.
                for _ in 0..400 {
                    match ipam.allocate("lab", &c, now).await {
                        Ok(l) => return Some(l),
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                None
            })
        })
        .collect();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(3)).await;
        store.fail_apply.store(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(3)).await;
        store.fail_flush.store(1, Relaxed);
    }
    let mut ok = Vec::new();
    for t in tasks {
        ok.extend(t.await.unwrap());
    }
    assert!(store.hits.load(Relaxed) > 0, "the faults were hit");
    close(ipam, store, tracker, cancel).await;
    let ipam = open_unlocked(dir.path(), IpamOptions::default()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for l in &ok {
        let found = ipam.lookup(l.ip).expect("an acknowledged lease is on disk");
        assert_eq!(found.client, l.client, "{}", l.ip);
        assert_eq!(found.state, LeaseState::Bound);
        assert!(seen.insert(l.ip), "{} answered to two clients", l.ip);
    }
}

#[tokio::test]
async fn a_panicking_committer_degrades_to_inline_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, store, tracker, cancel) = faulty_lab(dir.path(), "10.0.0.13");
    store.armed.store(true, Relaxed);
    // The bind whose commit hit the panic is answered with an error (its
    // write may be lost), and later ones neither hang nor fail.
    let offer = ipam.offer("lab", &mac(1), None, at(1)).unwrap();
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        ipam.bind("lab", &mac(1), offer.ip, None, at(1)),
    )
    .await
    .expect("no durable operation may wait for a dead committer");
    assert!(lost.is_err(), "{lost:?}");
    assert!(!store.armed.load(Relaxed), "the panic was injected");
    // The roll-back after the panic fails what is queued: wait for the
    // hand-back to inline flushing first.
    for _ in 0..300 {
        if !ipam.lock().committer_live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until_writable(&ipam).await;
    for n in 2..=3 {
        let bound = tokio::time::timeout(Duration::from_secs(5), bind_new(&ipam, &mac(n), at(1)))
            .await
            .expect("no durable operation may wait for a dead committer");
        assert_eq!(bound.state, LeaseState::Bound);
    }
    close(ipam, store, tracker, cancel).await;
    let ipam = open_unlocked(dir.path(), IpamOptions::default()).unwrap();
    for n in 2..=3 {
        assert!(ipam.lease_of(&mac(n)).is_some(), "lease {n} survived");
    }
}

/// Opens the store in `dir` once a dropped handle has let go of it:
/// sled's flush thread may hold the file lock for a moment after the last
/// handle goes, so `Locked` is retried for up to 1 s.
pub fn open_unlocked(dir: &Path, opts: IpamOptions) -> Result<Arc<Ipam>, IpamError> {
    for _ in 0..200 {
        match Ipam::open(dir, opts.clone(), Stats::new(16)) {
            Err(IpamError::Locked { .. }) => std::thread::sleep(Duration::from_millis(5)),
            other => return other,
        }
    }
    Ipam::open(dir, opts, Stats::new(16))
}

/// A random-MAC DISCOVER flood and one client asking again and again hold
/// at most one offer per pool address, and the expiry queue stays within
/// twice that, however many offers were made.
#[tokio::test]
async fn offers_stay_bounded_by_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let pool = 4;
    for i in 0..1_000u32 {
        let b = i.to_be_bytes();
        let c = ClientKey::Mac([2, 1, b[0], b[1], b[2], b[3]]);
        let _ = ipam.offer("lab", &c, None, at(1));
        let _ = ipam.offer("lab", &mac(1), None, at(1));
    }
    // Once those expired, the pool's four holders ask again every second.
    for t in 100..160 {
        for c in 1..=4 {
            let _ = ipam.offer("lab", &mac(c), None, at(t));
        }
    }
    let st = ipam.lock();
    assert!(st.offers.len() <= pool, "{} offers", st.offers.len());
    assert!(st.offer_of(&mac(1)).is_some());
    assert!(
        st.offer_queue_len() <= 2 * pool + 64,
        "{} queued expiries",
        st.offer_queue_len()
    );
}

/// Two subnets; 10.0.1.x listed after 10.0.0.x whatever their order.
async fn two_subnets(dir: &Path) -> Arc<Ipam> {
    let ipam = open(dir);
    let specs = [
        spec("b", "10.0.1.0/24", "10.0.1.10", "10.0.1.19"),
        spec("a", "10.0.0.0/24", "10.0.0.10", "10.0.0.19"),
    ];
    ipam.apply_config(&specs, &[], at(0)).unwrap();
    for n in 0..4 {
        ipam.allocate("a", &mac(n), at(1)).await.unwrap();
        ipam.allocate("b", &mac(10 + n), at(1)).await.unwrap();
    }
    // A live offer on the next free address of "a".
    ipam.offer("a", &mac(99), None, at(1)).unwrap();
    ipam
}

fn walk(ipam: &Ipam, f: &LeaseFilter, limit: usize, budget: usize) -> (Vec<Ipv4Addr>, usize) {
    let (mut all, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let p = ipam.lease_page(f, after, limit, budget);
        assert!(p.leases.len() <= limit);
        pages += 1;
        all.extend(p.leases.iter().map(|l| l.ip));
        match p.next {
            Some(n) => after = Some(n),
            None => return (all, pages),
        }
    }
}

#[tokio::test]
async fn pages_cover_every_lease_once_in_address_order() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = two_subnets(dir.path()).await;
    let every = LeaseFilter::default();
    let (one_page, _) = walk(&ipam, &every, 100, usize::MAX);
    assert_eq!(one_page.len(), 9, "{one_page:?}");
    assert!(one_page.windows(2).all(|w| w[0] < w[1]), "{one_page:?}");
    assert!(one_page.contains(&ip("10.0.0.14")), "the offer");
    for (limit, budget) in [(1, usize::MAX), (2, 3), (4, 1), (3, 2)] {
        assert_eq!(
            walk(&ipam, &every, limit, budget).0,
            one_page,
            "{limit} {budget}"
        );
    }
    // A filter that matches nothing still reads at most `budget` records a page.
    let none = LeaseFilter {
        state: Some(LeaseState::Expired),
        ..LeaseFilter::default()
    };
    let (found, pages) = walk(&ipam, &none, 10, 3);
    assert!(found.is_empty());
    assert_eq!(pages, 3, "8 records, 3 a page");
    let only_b = LeaseFilter {
        subnet: Some("b".into()),
        ..LeaseFilter::default()
    };
    assert_eq!(
        walk(&ipam, &only_b, 3, usize::MAX).0,
        one_page[5..].to_vec()
    );
    let last = ipam.lease_page(&every, Some(ip("255.255.255.255")), 5, 5);
    assert_eq!(last, LeasePage::default());
}

mod prop {
    //! Model-based property test: random operation sequences, with restarts,
    //! on a real sled store against a small in-memory model of the leases.
    //!
    //! The model does not predict *which* address an allocation picks (that is
    //! the unit tests' job); it checks the pick was available to that client,
    //! that exhaustion is reported exactly when nothing is, and that after every
    //! step the store agrees with the model address by address.

    use std::collections::{BTreeMap, HashMap};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::*;
    use super::{at, mac, open_unlocked, spec};

    const POOL: u32 = 8;
    const BASE: u32 = 0x0a00_0001; // 10.0.0.1 – 10.0.0.8
    const LEASE: u64 = 100;
    const HOLD: u64 = 30;
    const QUARANTINE: u64 = 50;

    #[derive(Debug, Clone)]
    enum Step {
        Allocate(u8),
        Offer(u8),
        BindOffered(u8),
        BindIp(u8, u32),
        Renew(u8),
        Release(u8),
        Decline(u8),
        Advance(u64),
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        let c = 0u8..6;
        prop_oneof![
            3 => c.clone().prop_map(Step::Allocate),
            2 => c.clone().prop_map(Step::Offer),
            2 => c.clone().prop_map(Step::BindOffered),
            1 => (c.clone(), 0..POOL).prop_map(|(c, k)| Step::BindIp(c, k)),
            2 => c.clone().prop_map(Step::Renew),
            2 => c.clone().prop_map(Step::Release),
            1 => c.clone().prop_map(Step::Decline),
            2 => prop_oneof![1u64..20, 20u64..120].prop_map(Step::Advance),
            1 => Just(Step::Restart),
        ]
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Rec {
        client: u8,
        state: LeaseState,
        expires: u64,
    }

    #[derive(Debug, Default)]
    struct Model {
        now: u64,
        leases: BTreeMap<u32, Rec>,
        offers: BTreeMap<u32, (u8, u64)>,
        cur: HashMap<u8, u32>,
    }

    impl Model {
        fn available(&self, c: u8, ip: u32) -> bool {
            if self
                .offers
                .get(&ip)
                .is_some_and(|(o, e)| *o != c && *e > self.now)
            {
                return false;
            }
            match self.leases.get(&ip) {
                Some(r) if r.state == LeaseState::Bound && r.expires > self.now => r.client == c,
                Some(r) if r.state == LeaseState::Declined => r.expires <= self.now,
                _ => true,
            }
        }
        fn any_available(&self, c: u8) -> bool {
            (BASE..BASE + POOL).any(|ip| self.available(c, ip))
        }
        fn bound_of(&self, c: u8) -> Option<u32> {
            self.cur.get(&c).copied().filter(|ip| {
                self.leases
                    .get(ip)
                    .is_some_and(|r| r.state == LeaseState::Bound && r.expires > self.now)
            })
        }
        fn offer_of(&self, c: u8) -> Option<u32> {
            self.offers
                .iter()
                .find(|(_, (o, e))| *o == c && *e > self.now)
                .map(|(ip, _)| *ip)
        }
        fn drop_offers(&mut self, c: u8, ip: u32) {
            self.offers.retain(|i, (o, _)| *o != c && *i != ip);
        }
        /// Writes a record at `ip` for `c`, keeping the client index exact.
        fn put(&mut self, c: u8, ip: u32, state: LeaseState, expires: u64) {
            if let Some(o) = self.leases.get(&ip).map(|r| r.client).filter(|o| *o != c) {
                if self.cur.get(&o) == Some(&ip) {
                    self.cur.remove(&o);
                }
            }
            self.drop_offers(c, ip);
            self.leases.insert(
                ip,
                Rec {
                    client: c,
                    state,
                    expires,
                },
            );
            self.cur.insert(c, ip);
        }
        /// A bind that the IPAM must accept: cached if fresh, else written.
        fn bind(&mut self, c: u8, ip: u32) -> u64 {
            if self.bound_of(c) == Some(ip) {
                let r = self.leases[&ip];
                if (self.now + LEASE - r.expires) * 4 < LEASE {
                    return r.expires;
                }
            }
            if let Some(old) = self.bound_of(c).filter(|o| *o != ip) {
                self.leases.insert(
                    old,
                    Rec {
                        client: c,
                        state: LeaseState::Released,
                        expires: self.now,
                    },
                );
            }
            self.put(c, ip, LeaseState::Bound, self.now + LEASE);
            self.now + LEASE
        }
        fn advance(&mut self, d: u64) {
            self.now += d;
            let now = self.now;
            for r in self.leases.values_mut() {
                if r.state == LeaseState::Bound && r.expires <= now {
                    r.state = LeaseState::Expired;
                }
            }
            self.offers.retain(|_, (_, e)| *e > now);
        }
    }

    fn key(c: u8) -> crate::client::ClientKey {
        mac(c)
    }

    fn open(dir: &Path) -> Arc<Ipam> {
        let opts = IpamOptions {
            offer_hold: Duration::from_secs(HOLD),
            decline_quarantine: Duration::from_secs(QUARANTINE),
            ..IpamOptions::default()
        };
        open_unlocked(dir, opts).unwrap()
    }

    fn apply(rt: &tokio::runtime::Runtime, ipam: &Ipam, m: &mut Model, s: &Step) {
        let now = at(m.now);
        let ip4 = |ip: u32| Ipv4Addr::from(ip);
        match *s {
            Step::Allocate(c) => match rt.block_on(ipam.allocate("lab", &key(c), now)) {
                Ok(l) => {
                    let ip = u32::from(l.ip);
                    match m.bound_of(c) {
                        Some(b) => assert_eq!(b, ip, "allocate is idempotent"),
                        None => {
                            assert!(
                                m.available(c, ip),
                                "{ip4:?} not available to {c}",
                                ip4 = l.ip
                            );
                            m.bind(c, ip);
                        }
                    }
                }
                Err(IpamError::PoolExhausted { .. }) => assert!(!m.any_available(c)),
                Err(e) => panic!("allocate: {e}"),
            },
            Step::Offer(c) => match ipam.offer("lab", &key(c), None, now) {
                Ok(l) => {
                    let ip = u32::from(l.ip);
                    if let Some(b) = m.bound_of(c) {
                        assert_eq!((b, l.state), (ip, LeaseState::Bound));
                    } else {
                        assert!(m.available(c, ip));
                        m.offers.retain(|i, (o, _)| *o != c && *i != ip);
                        m.offers.insert(ip, (c, m.now + HOLD));
                    }
                }
                Err(IpamError::PoolExhausted { .. }) => {
                    assert!(m.bound_of(c).is_none() && !m.any_available(c))
                }
                Err(e) => panic!("offer: {e}"),
            },
            Step::BindOffered(c) => {
                if let Some(ip) = m.offer_of(c) {
                    let l = rt
                        .block_on(ipam.bind("lab", &key(c), ip4(ip), None, now))
                        .unwrap();
                    assert_eq!(l.expires_at, at(m.bind(c, ip)));
                }
            }
            Step::BindIp(c, k) => {
                let ip = BASE + k;
                let res = rt.block_on(ipam.bind("lab", &key(c), ip4(ip), None, now));
                if m.available(c, ip) {
                    assert_eq!(res.unwrap().expires_at, at(m.bind(c, ip)));
                } else {
                    assert!(
                        matches!(res, Err(IpamError::AddressTaken { .. })),
                        "{res:?}"
                    );
                }
            }
            Step::Renew(c) => {
                let ip = m.cur.get(&c).copied().unwrap_or(BASE);
                let res = rt.block_on(ipam.renew(&key(c), ip4(ip), now));
                let mine = m.cur.get(&c) == Some(&ip)
                    && m.leases
                        .get(&ip)
                        .is_some_and(|r| r.state != LeaseState::Declined);
                if mine && m.available(c, ip) {
                    assert_eq!(res.unwrap().expires_at, at(m.bind(c, ip)));
                } else {
                    assert!(res.is_err(), "{res:?}");
                }
            }
            Step::Release(c) => {
                let Some(ip) = m.cur.get(&c).copied().or_else(|| m.offer_of(c)) else {
                    return;
                };
                let res = rt.block_on(ipam.release(&key(c), ip4(ip), now));
                if m.offer_of(c) == Some(ip) {
                    res.unwrap();
                    m.offers.remove(&ip);
                } else {
                    match m.leases.get(&ip).map(|r| r.state) {
                        Some(LeaseState::Bound) => {
                            res.unwrap();
                            m.leases.insert(
                                ip,
                                Rec {
                                    client: c,
                                    state: LeaseState::Released,
                                    expires: m.now,
                                },
                            );
                        }
                        Some(LeaseState::Released | LeaseState::Expired) => res.unwrap(),
                        _ => assert!(res.is_err(), "{res:?}"),
                    }
                }
            }
            Step::Decline(c) => {
                let Some(ip) = m.offer_of(c).or_else(|| m.bound_of(c)) else {
                    return;
                };
                rt.block_on(ipam.decline(&key(c), ip4(ip), now)).unwrap();
                m.put(c, ip, LeaseState::Declined, m.now + QUARANTINE);
            }
            Step::Advance(d) => {
                m.advance(d);
                ipam.reap(at(m.now)).unwrap();
            }
            Step::Restart => unreachable!("handled by the driver"),
        }
    }

    fn check(ipam: &Ipam, m: &Model) {
        let mut bound_clients = HashMap::new();
        for ip in BASE..BASE + POOL {
            let got = ipam
                .lookup(Ipv4Addr::from(ip))
                .map(|l| (l.client, l.state, l.expires_at));
            let want = match (m.offers.get(&ip), m.leases.get(&ip)) {
                (Some((c, e)), _) => Some((key(*c), LeaseState::Offered, at(*e))),
                (None, Some(r)) => Some((key(r.client), r.state, at(r.expires))),
                (None, None) => None,
            };
            assert_eq!(got, want, "address {}", Ipv4Addr::from(ip));
            if let Some((c, LeaseState::Bound, _)) = got {
                assert!(
                    bound_clients.insert(c, ip).is_none(),
                    "a client holds two bound leases"
                );
            }
        }
        for c in 0..6 {
            let got = ipam.lease_of(&key(c)).map(|l| (u32::from(l.ip), l.state));
            let want = m
                .bound_of(c)
                .map(|ip| (ip, LeaseState::Bound))
                .or_else(|| m.offer_of(c).map(|ip| (ip, LeaseState::Offered)))
                .or_else(|| m.cur.get(&c).map(|ip| (*ip, m.leases[ip].state)));
            assert_eq!(got, want, "lease_of client {c}");
        }
        let usage = &ipam.utilisation()[0];
        let bound = m
            .leases
            .values()
            .filter(|r| r.state == LeaseState::Bound)
            .count() as u64;
        assert!(
            usage.by_state.contains(&(LeaseState::Bound, bound)),
            "{usage:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn store_agrees_with_model(steps in proptest::collection::vec(step(), 1..40), queued in any::<bool>()) {
            // `queued`: with the group committer running (writes queued and
            // applied per batch), else applied inline.
            let dir = tempfile::tempdir().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let start = |ipam: &Arc<Ipam>| {
                let tracker = tokio_util::task::TaskTracker::new();
                let cancel = tokio_util::sync::CancellationToken::new();
                if queued {
                    let _guard = rt.enter();
                    ipam.spawn_committer(&tracker, cancel.clone());
                }
                (tracker, cancel)
            };
            let mut ipam = open(dir.path());
            let mut lab = spec("lab", "10.0.0.0/24", "10.0.0.1", "10.0.0.8");
            lab.lease_time = Duration::from_secs(LEASE);
            ipam.apply_config(&[lab], &[], at(0)).unwrap();
            let mut tasks = start(&ipam);
            let mut m = Model::default();
            for s in &steps {
                if let Step::Restart = s {
                    tasks.1.cancel();
                    tasks.0.close();
                    rt.block_on(tasks.0.wait());
                    drop(ipam);
                    ipam = open(dir.path());
                    tasks = start(&ipam);
                    m.offers.clear();
                    ipam.reap(at(m.now)).unwrap();
                } else {
                    apply(&rt, &ipam, &mut m, s);
                }
                check(&ipam, &m);
            }
        }
    }
}

/// A config applied while the committer runs (SIGHUP) keeps group commit
/// on (it used to reset the state: every later write flushed on its own),
/// and a later write is still answered only once its flush succeeded.
#[tokio::test]
async fn after_a_config_reload_a_failed_flush_still_fails_its_write() {
    let dir = tempfile::tempdir().unwrap();
    let (ipam, store, tracker, cancel) = faulty_lab(dir.path(), "10.0.0.200");
    let now = SystemTime::now();
    for n in 0..20u32 {
        let c = ClientKey::Id(n.to_be_bytes().into());
        ipam.allocate("lab", &c, now).await.unwrap();
    }
    let extra = spec("more", "10.1.0.0/24", "10.1.0.10", "10.1.0.20");
    ipam.apply_config(
        &[spec("lab", "10.0.0.0/16", "10.0.0.10", "10.0.0.200"), extra],
        &[],
        now,
    )
    .unwrap();
    assert!(
        ipam.lock().committer_live,
        "writes after a reload go inline"
    );
    store.fail_flush.store(1, Relaxed);
    let c = ClientKey::Id(999u32.to_be_bytes().into());
    let got = ipam.allocate("lab", &c, now).await;
    assert!(got.is_err(), "answered {got:?} though its flush failed");
    close(ipam, store, tracker, cancel).await;
}

/// What a cluster node may give back: a block with an offer in flight or a
/// live binding is not idle (retiring it is refused under the lock); once
/// the lease is released it is, and its released address is still usable.
#[tokio::test]
async fn a_block_with_an_offer_or_a_binding_is_not_idle() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = lab(dir.path());
    let block = (u32::from(ip("10.0.0.8")), u32::from(ip("10.0.0.15")));
    let retire = |now: SystemTime| {
        let mut ran = false;
        let idle = ipam.retire_if_idle("lab", block, now, || ran = true);
        assert_eq!(idle, ran);
        idle
    };
    assert!(retire(at(0)), "nothing in it is used");
    let offer = ipam.offer("lab", &mac(1), None, at(0)).unwrap();
    assert!(!retire(at(0)), "an offer in flight");
    let lease = ipam
        .bind("lab", &mac(1), offer.ip, None, at(0))
        .await
        .unwrap();
    assert!(!retire(at(1)), "a live binding");
    ipam.release(&mac(1), lease.ip, at(2)).await.unwrap();
    assert!(retire(at(3)), "released");
    let used = ipam.blocks_use("lab", &[block], at(3));
    assert_eq!(
        (used[0].in_use, used[0].usable, used[0].never_used),
        (0, 4, 3)
    );
}
