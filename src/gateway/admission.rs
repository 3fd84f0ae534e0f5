//! Admission, cheapest check first: isolation (client IP, then the API
//! token identity if the request carries one) → memory governor shedding →
//! per-client quota (keyed by the token identity when present, else the
//! IP) → per-route pending cap → the global request-body byte budget. Each refusal is a [`Refusal`]; the
//! caller counts it (by reason, attributed to the client) and answers it.
//!
//! Nothing here queues: the pending cap is a `try_acquire` on a semaphore
//! and the body budget a compare-and-swap on one counter, so a refused
//! request costs no memory beyond its headers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::client::ClientKey;
use crate::config::{GatewayConfig, Rate};
use crate::stats::{DropReason, Stats};

/// How often idle quota state is forgotten and the map shrunk.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// Quota entries past which a token never seen before is held to its IP's
/// quota instead of getting one of its own. Bearer tokens cost a client
/// nothing to invent, so without this a flood of random tokens would grow
/// the quota map (~100 bytes a key) by its request rate until the next
/// sweep, and each invented token would start with a full burst.
pub(crate) const MAX_QUOTA_KEYS: usize = 65_536;

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

/// The governor quota for `rate` with `burst` cells.
fn quota(rate: Rate, burst: u32) -> Quota {
    let period = rate.per / rate.count.max(1);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

pub(crate) struct Admission {
    /// Swapped whole when SIGHUP brings a new per-client rate.
    limiter: arc_swap::ArcSwap<DefaultKeyedRateLimiter<ClientKey>>,
    clock: DefaultClock,
    stats: Arc<Stats>,
    budget: std::sync::atomic::AtomicI64,
}

impl Admission {
    pub(crate) fn new(cfg: &GatewayConfig, stats: Arc<Stats>) -> Self {
        stats.gateway.body_budget.store(cfg.body_budget, Relaxed);
        Self {
            limiter: arc_swap::ArcSwap::from_pointee(RateLimiter::keyed(quota(
                cfg.per_client_rate,
                cfg.per_client_burst,
            ))),
            clock: DefaultClock::default(),
            budget: std::sync::atomic::AtomicI64::new(
                i64::try_from(cfg.body_budget).unwrap_or(i64::MAX),
            ),
            stats,
        }
    }

    /// New per-client quota and body budget from a reloaded config (the
    /// quotas start afresh; bodies in flight keep what they hold).
    pub(crate) fn reconfigure(&self, cfg: &GatewayConfig) {
        let limiter = RateLimiter::keyed(quota(cfg.per_client_rate, cfg.per_client_burst));
        self.limiter.store(Arc::new(limiter));
        let budget = i64::try_from(cfg.body_budget).unwrap_or(i64::MAX);
        self.budget.store(budget, Relaxed);
        self.stats
            .gateway
            .body_budget
            .store(cfg.body_budget, Relaxed);
        tracing::info!(per_client_rate = %cfg.per_client_rate, body_budget = cfg.body_budget, "gateway limits reloaded");
    }

    /// The memory governor asks to shed new work (state 2).
    pub(crate) fn shedding(&self) -> bool {
        self.stats.memory.overload_state.load(Relaxed) >= 2
    }

    /// One request from `client` (connected from `ip`) against its quota.
    /// A token identity has a quota of its own while the map has room (see
    /// [`MAX_QUOTA_KEYS`]); past that, new tokens share their IP's.
    pub(crate) fn check_rate(&self, client: &ClientKey, ip: IpAddr) -> Result<(), Refusal> {
        let limiter = self.limiter.load();
        let by_ip;
        let key = match client {
            ClientKey::Token(_) if limiter.len() >= MAX_QUOTA_KEYS => {
                by_ip = ClientKey::Ip(ip);
                &by_ip
            }
            _ => client,
        };
        limiter
            .check_key(key)
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
    fn quota_is_per_client_with_retry_after() {
        let a = admission(1);
        let (x, y): (ClientKey, ClientKey) = (
            "ip:10.0.0.1".parse().unwrap(),
            "ip:10.0.0.2".parse().unwrap(),
        );
        let t = ClientKey::token(b"t");
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(a.check_rate(&x, ip).is_ok() && a.check_rate(&x, ip).is_ok());
        match a.check_rate(&x, ip) {
            Err(Refusal::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500))
            }
            other => panic!("{other:?}"),
        }
        assert!(a.check_rate(&y, ip).is_ok());
        assert!(a.check_rate(&t, ip).is_ok(), "a token has its own quota");
    }

    #[test]
    fn invented_tokens_past_the_key_cap_share_their_ip_quota() {
        let a = admission(1);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..MAX_QUOTA_KEYS as u64 {
            let _ = a.check_rate(&ClientKey::token(&i.to_be_bytes()), ip);
        }
        // The map is full: fresh tokens from one IP now draw on its quota
        // (2 a second, burst 2), and the map stops growing.
        let results: Vec<bool> = (0..4u64)
            .map(|i| {
                a.check_rate(&ClientKey::token(&(u64::MAX - i).to_be_bytes()), ip)
                    .is_ok()
            })
            .collect();
        assert_eq!(results, [true, true, false, false]);
        assert!(a.limiter.load().len() <= MAX_QUOTA_KEYS + 1);
    }
}
