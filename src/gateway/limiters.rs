//! Admission, cheapest check first: isolation (client IP, then the API
//! token identity if the request carries one) → memory governor shedding →
//! per-client quota (always the client IP's: a bearer token costs nothing
//! to invent, so no token can buy a quota of its own) → per-route pending
//! cap → the global request-body byte budget. Each refusal is a
//! [`Refusal`]; the caller counts it (by reason, attributed to the client)
//! and answers it.
//!
//! Nothing here queues: the pending cap is a `try_acquire` on a semaphore
//! and the body budget a compare-and-swap on one counter, so a refused
//! request costs no memory beyond its headers. The quota map is capped
//! ([`crate::quota::CappedStore`]), so neither can a flood of source addresses grow it.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::RateLimiter;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::quota::{quota, CappedStore};
use crate::stats::{DropReason, Stats};

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

/// Why a request was not (fully) served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Isolated,
    Overload,
    RateLimited {
        retry_after: Duration,
    },
    /// `body`: the route's answer, built once (`error::pending_cap_body`).
    PendingCap {
        body: bytes::Bytes,
    },
    BodyBudget,
    TooLarge {
        max: u64,
    },
    Timeout,
    Upstream,
    /// The client's body failed mid-way (reset, malformed framing).
    BadBody,
}

impl Refusal {
    /// The drop reason counted for this refusal.
    pub(crate) fn reason(&self) -> DropReason {
        match self {
            Self::Isolated => DropReason::Isolated,
            Self::Overload => DropReason::Overload,
            Self::RateLimited { .. } => DropReason::RateLimited,
            Self::PendingCap { .. } => DropReason::PendingCap,
            Self::BodyBudget | Self::TooLarge { .. } => DropReason::BodyBudget,
            Self::Timeout => DropReason::Timeout,
            Self::Upstream => DropReason::Upstream,
            Self::BadBody => DropReason::Malformed,
        }
    }
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

    /// The memory governor asks to shed new work (state 2).
    pub(crate) fn shedding(&self) -> bool {
        self.stats.memory.overload_state.load(Relaxed) >= 2
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

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
}
