//! What the admission chain ([`super::admission`]) consults: the memory
//! governor's shed state, the per-IP request quota, the global request-body
//! byte budget and the connection slots (overall, per IP). Nothing here
//! queues: a refused request or connection costs no memory beyond itself.
//! Both maps are bounded (the quota map by [`CappedStore`], the per-IP
//! connection map by the open connections).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::RateLimiter;
use tokio_util::sync::CancellationToken;

use super::refusal::Refusal;
use crate::config::GatewayConfig;
use crate::quota::{quota, CappedStore};
use crate::stats::Stats;

/// How often idle quota state is forgotten and the map shrunk.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

type QuotaLimiter = RateLimiter<
    IpAddr,
    CappedStore<IpAddr>,
    DefaultClock,
    NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The quota limiter for a gateway config.
fn limiter(cfg: &GatewayConfig) -> QuotaLimiter {
    RateLimiter::new(
        quota(cfg.per_client_rate, cfg.per_client_burst),
        CappedStore::new(cfg.max_quota_clients),
        DefaultClock::default(),
    )
}

pub(crate) struct Admission {
    /// Swapped whole when SIGHUP brings a new per-client rate or cap.
    limiter: arc_swap::ArcSwap<QuotaLimiter>,
    clock: DefaultClock,
    stats: Arc<Stats>,
    budget: std::sync::atomic::AtomicI64,
}

impl Admission {
    pub(crate) fn new(cfg: &GatewayConfig, stats: Arc<Stats>) -> Self {
        stats.gateway.body_budget.store(cfg.body_budget, Relaxed);
        Self {
            limiter: arc_swap::ArcSwap::from_pointee(limiter(cfg)),
            clock: DefaultClock::default(),
            budget: std::sync::atomic::AtomicI64::new(
                i64::try_from(cfg.body_budget).unwrap_or(i64::MAX),
            ),
            stats,
        }
    }

    /// New per-client quota, quota map cap and body budget from a reloaded
    /// config (the quotas start afresh; bodies in flight keep what they hold).
    pub(crate) fn reconfigure(&self, cfg: &GatewayConfig) {
        self.limiter.store(Arc::new(limiter(cfg)));
        let budget = i64::try_from(cfg.body_budget).unwrap_or(i64::MAX);
        self.budget.store(budget, Relaxed);
        self.stats
            .gateway
            .body_budget
            .store(cfg.body_budget, Relaxed);
        tracing::info!(per_client_rate = %cfg.per_client_rate, max_quota_clients = cfg.max_quota_clients, body_budget = cfg.body_budget, "gateway limits reloaded");
    }

    /// One request from `ip` against that IP's quota, whatever identity
    /// the request claims (see [`CappedStore`] for an IP the full map has
    /// no room for).
    pub(crate) fn check_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.limiter
            .load()
            .check_key(&ip)
            .map_err(|not_until| Refusal::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Reserves `n` bytes of the global body budget, or `None` if they do
    /// not fit right now.
    pub(crate) fn reserve(&self, n: u64) -> Option<BodyPermit> {
        let mut permit = BodyPermit {
            stats: self.stats.clone(),
            budget: self.budget.load(Relaxed),
            held: 0,
        };
        permit.grow(n).then_some(permit)
    }

    /// Forgets quota state of clients idle long enough to be full again,
    /// so a flood of source addresses does not grow the map for good.
    /// Cancel-safe (only sleeps between synchronous sweeps).
    pub(crate) async fn housekeeping(&self, cancel: &CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(HOUSEKEEPING) => {}
            }
            let limiter = self.limiter.load();
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Bytes of the global body budget held by one request; returned on drop.
pub(crate) struct BodyPermit {
    stats: Arc<Stats>,
    budget: i64,
    held: i64,
}

impl BodyPermit {
    /// Takes `n` more bytes; `false` (and nothing taken) if over budget.
    pub(crate) fn grow(&mut self, n: u64) -> bool {
        let Ok(n) = i64::try_from(n) else {
            return false;
        };
        let used = &self.stats.gateway.body_bytes_in_use;
        let ok = used
            .fetch_update(Relaxed, Relaxed, |cur| {
                cur.checked_add(n).filter(|next| *next <= self.budget)
            })
            .is_ok();
        if ok {
            self.held += n;
        }
        ok
    }

    pub(crate) fn held(&self) -> u64 {
        u64::try_from(self.held).unwrap_or(0)
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if self.held > 0 {
            self.stats
                .gateway
                .body_bytes_in_use
                .fetch_sub(self.held, Relaxed);
        }
    }
}

/// Counts open connections overall and per client IP.
/// std `Mutex`: held for one hash-map operation at accept and at close,
/// never across an await.
pub(crate) struct ConnLimiter {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimiter {
    pub(crate) fn new(cfg: &GatewayConfig) -> Self {
        Self {
            max_total: cfg.max_connections,
            max_per_client: cfg.max_connections_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one connection from `ip`, or `None` over either limit.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        stats: &Arc<Stats>,
    ) -> Option<ConnGuard> {
        if self.total.fetch_add(1, Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Relaxed);
            return None;
        }
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            drop(map);
            self.total.fetch_sub(1, Relaxed);
            return None;
        }
        *n += 1;
        stats.gateway.connections.fetch_add(1, Relaxed);
        Some(ConnGuard {
            limiter: self.clone(),
            stats: stats.clone(),
            ip,
        })
    }
}

/// One open connection; releases its slots on drop.
pub(crate) struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    stats: Arc<Stats>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.limiter.total.fetch_sub(1, Relaxed);
        self.stats.gateway.connections.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Rate};

    fn admission(budget: u64) -> Admission {
        let mut cfg = crate::config::Config::embedded().unwrap().gateway;
        cfg.body_budget = budget;
        cfg.per_client_rate = Rate {
            count: 2,
            per: Duration::from_secs(1),
        };
        cfg.per_client_burst = 2;
        Admission::new(&cfg, Stats::new(16))
    }

    #[test]
    fn budget_is_exact_and_returned_on_drop() {
        let a = admission(100);
        let p = a.reserve(60).unwrap();
        assert!(a.reserve(41).is_none());
        let mut q = a.reserve(40).unwrap();
        assert!(!q.grow(1));
        assert_eq!(a.stats.gateway.body_bytes_in_use.load(Relaxed), 100);
        drop(p);
        assert!(q.grow(60));
        drop(q);
        assert_eq!(a.stats.gateway.body_bytes_in_use.load(Relaxed), 0);
    }

    #[test]
    fn quota_is_per_ip_with_retry_after() {
        let a = admission(1);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(a.check_rate(x).is_ok() && a.check_rate(x).is_ok());
        match a.check_rate(x) {
            Err(Refusal::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500))
            }
            other => panic!("{other:?}"),
        }
        assert!(a.check_rate(y).is_ok());
    }

    #[test]
    fn past_the_cap_new_ips_share_one_bucket_and_the_map_stops_growing() {
        let mut cfg = crate::config::Config::embedded().unwrap().gateway;
        cfg.per_client_rate = Rate {
            count: 1,
            per: Duration::from_secs(3600),
        };
        cfg.per_client_burst = 2;
        cfg.max_quota_clients = 100;
        let a = Admission::new(&cfg, Stats::new(16));
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000 + i));
        for i in 0..100 {
            assert!(a.check_rate(ip(i)).is_ok());
        }
        // Full: every new address draws on the one shared bucket (burst 2).
        let fresh: Vec<bool> = (100..110).map(|i| a.check_rate(ip(i)).is_ok()).collect();
        assert_eq!(
            fresh,
            [true, true, false, false, false, false, false, false, false, false]
        );
        assert_eq!(a.limiter.load().len(), 100);
        // Addresses already in the map keep their own quota.
        assert!(a.check_rate(ip(7)).is_ok());
        assert!(a.check_rate(ip(7)).is_err());
    }

    /// Connections from ever new source addresses add entries only while
    /// they are open: the per-IP map never holds more than
    /// `max_connections` addresses, and is empty once they close.
    #[test]
    fn per_ip_map_is_bounded_by_open_connections() {
        let mut cfg = Config::embedded().unwrap().gateway;
        cfg.max_connections = 4;
        cfg.max_connections_per_client = 2;
        let limiter = Arc::new(ConnLimiter::new(&cfg));
        let stats = Stats::new(16);
        let guards: Vec<ConnGuard> = (0..1_000u32)
            .filter_map(|i| {
                limiter.try_acquire(IpAddr::from((127 << 24 | i).to_be_bytes()), &stats)
            })
            .collect();
        assert_eq!(guards.len(), 4);
        let entries = || limiter.per_client.lock().unwrap().len();
        assert_eq!(entries(), 4);
        drop(guards);
        assert_eq!(entries(), 0);
        let one = IpAddr::from([127, 0, 0, 1]);
        let two: Vec<_> = (0..5)
            .filter_map(|_| limiter.try_acquire(one, &stats))
            .collect();
        assert_eq!(two.len(), 2, "per-IP limit");
        assert_eq!(entries(), 1);
    }
}
