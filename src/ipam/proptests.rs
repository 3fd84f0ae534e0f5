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

use super::tests::{at, mac, open_unlocked, spec};
use super::*;

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
