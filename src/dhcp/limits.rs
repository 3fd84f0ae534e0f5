//! The rate limiters admission consults: per client, global, and the
//! new-lease rate per subnet and per relay (governor, lock-free GCRA). The
//! per-client store is keyed by what clients send, so it is capped at
//! `dhcp.max_client_quotas` keys ([`crate::quota::CappedStore`]); keys past
//! the cap share one quota.

use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::time::Duration;

use fnv::FnvHasher;
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};

use crate::client::ClientKey;
use crate::config::{DhcpConfig, Rate};
use crate::quota::{quota, CappedStore};
use crate::stats::DropReason;

/// How often the keyed limiters forget idle keys.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Rebuilt whole when a reload changes the `[dhcp]` rates.
pub struct Limits {
    /// Keyed by `hasher`'s hash of the client key.
    per_client: RateLimiter<u64, CappedStore<u64>, DefaultClock>,
    hasher: std::collections::hash_map::RandomState,
    global: DefaultDirectRateLimiter,
    /// Keyed by [`subnet_key`].
    per_subnet: DefaultKeyedRateLimiter<u64>,
    per_relay: DefaultKeyedRateLimiter<Ipv4Addr>,
    /// `dhcp.max_leases_per_port` (0: no cap), counted by the IPAM.
    pub port_cap: u32,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tracked_clients", &self.per_client.len())
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(cfg: &DhcpConfig) -> Self {
        // Bursts of one second's worth for the global quota and the caps.
        let per_sec = |r: Rate| r.per_second().ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        let new_leases = quota(cfg.new_lease_rate, per_sec(cfg.new_lease_rate));
        Self {
            per_client: RateLimiter::new(
                quota(cfg.per_client_rate, cfg.per_client_burst),
                CappedStore::new(cfg.max_client_quotas),
                DefaultClock::default(),
            ),
            hasher: Default::default(),
            global: RateLimiter::direct(quota(cfg.global_rate, per_sec(cfg.global_rate))),
            per_subnet: RateLimiter::keyed(new_leases),
            per_relay: RateLimiter::keyed(new_leases),
            port_cap: cfg.max_leases_per_port,
        }
    }

    /// The client's own quota (or, while `max_client_quotas` keys are
    /// tracked, the one all new keys share), then the global one (a client
    /// over its own quota does not spend the global one).
    pub fn check_client(&self, key: &ClientKey) -> Result<(), DropReason> {
        self.per_client
            .check_key(&self.hasher.hash_one(key))
            .map_err(|_| DropReason::RateLimited)?;
        self.global.check().map_err(|_| DropReason::GlobalRate)
    }

    /// Whether one more *new* lease may be handed out in `subnet` via
    /// `giaddr` (0.0.0.0 = directly attached: only the subnet cap applies).
    pub fn check_new_lease(&self, subnet: &str, giaddr: Ipv4Addr) -> bool {
        if !giaddr.is_unspecified() && self.per_relay.check_key(&giaddr).is_err() {
            return false;
        }
        self.per_subnet.check_key(&subnet_key(subnet)).is_ok()
    }

    /// Forgets keys whose state is back to "never seen" and releases memory.
    pub fn housekeeping(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.per_relay.retain_recent();
        self.per_relay.shrink_to_fit();
        self.per_subnet.retain_recent();
    }

    /// Client keys the per-client limiter tracks now.
    pub fn tracked(&self) -> usize {
        self.per_client.len()
    }
}

/// The per-subnet limiter's key: a hash of the id, no allocation per check.
fn subnet_key(subnet: &str) -> u64 {
    let mut h = FnvHasher::default();
    h.write(subnet.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rate(count: u32, per_secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(per_secs),
        }
    }

    /// The embedded config's limits with a per-client burst of 3 at
    /// `per_client_rate`, and `edit` applied.
    fn limits(per_client_rate: Rate, edit: impl FnOnce(&mut DhcpConfig)) -> Limits {
        let mut cfg = Config::embedded().unwrap().dhcp;
        cfg.per_client_rate = per_client_rate;
        cfg.per_client_burst = 3;
        edit(&mut cfg);
        Limits::new(&cfg)
    }

    /// The burst, plus one per `period` that passed while `f` ran (none on
    /// a quiet machine; a loaded one may pause the test for longer).
    fn burst_plus_refills(burst: usize, period: Duration, f: impl FnOnce() -> usize) -> bool {
        let t = std::time::Instant::now();
        let n = f();
        let refills = t.elapsed().as_nanos() / period.as_nanos();
        (burst..=burst + usize::try_from(refills).unwrap()).contains(&n)
    }

    #[test]
    fn quotas_and_caps_hold() {
        let a = limits(rate(10, 1), |cfg| cfg.new_lease_rate = rate(5, 1));
        let key = ClientKey::Mac([2, 0, 0, 0, 0, 1]);
        assert!(
            burst_plus_refills(3, Duration::from_millis(100), || {
                (0..10).filter(|_| a.check_client(&key).is_ok()).count()
            }),
            "burst, then the rate"
        );
        assert!(
            a.check_client(&ClientKey::Mac([2, 0, 0, 0, 0, 2])).is_ok(),
            "others unaffected"
        );
        let relay = Ipv4Addr::new(10, 0, 0, 2);
        assert!(burst_plus_refills(5, Duration::from_millis(200), || {
            (0..20).filter(|_| a.check_new_lease("lab", relay)).count()
        }));
        assert_eq!(a.tracked(), 2);
    }

    /// A random-identity flood fills the table to its cap and no further;
    /// the keys past it share one quota, and the clients already tracked
    /// keep their own.
    #[test]
    fn keys_past_the_cap_share_one_quota() {
        // Nothing refills while the test runs.
        let a = limits(rate(1, 3600), |cfg| {
            cfg.global_rate = rate(1_000_000, 1);
            cfg.max_client_quotas = 100;
        });
        let mac = |i: u32| {
            let b = i.to_be_bytes();
            ClientKey::Mac([2, 0, b[0], b[1], b[2], b[3]])
        };
        let id = |i: u32| ClientKey::Id(i.to_be_bytes().repeat(16).into());
        let tracked: Vec<_> = (0..100).map(mac).collect();
        assert!(tracked.iter().all(|k| a.check_client(k).is_ok()));
        assert_eq!(a.tracked(), 100);
        let flood = (100..10_000).map(mac).chain((0..10_000).map(id));
        let passed = flood.filter(|k| a.check_client(k).is_ok()).count();
        assert_eq!(a.tracked(), 100, "the cap holds");
        assert_eq!(passed, 3, "the flood shares one burst");
        assert!(
            tracked.iter().all(|k| a.check_client(k).is_ok()),
            "tracked clients keep their own quota"
        );
    }
}
