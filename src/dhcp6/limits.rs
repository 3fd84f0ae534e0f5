//! The DHCPv6 rate limiters: per client (`[dhcp6] per_client_rate` and
//! `per_client_burst`, keyed by the DUID), then a global one (`[dhcp]
//! global_rate`). The per-client store is keyed by what clients send, so
//! it is capped at `dhcp.max_client_quotas` keys ([`CappedStore`]).

use std::hash::BuildHasher;
use std::net::Ipv6Addr;

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, RateLimiter};

use crate::config::{Dhcp6Config, DhcpConfig, Rate};
use crate::quota::{quota, CappedStore};
use crate::stats::DropReason;

/// Whom a per-client quota is for, borrowed from the datagram, so the
/// receive loop checks it before allocating anything: the DUID, or for a
/// message without one (an Information-Request may omit it) its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who<'a> {
    Duid(&'a [u8]),
    Source(Ipv6Addr),
}

/// Rebuilt whole when a reload changes the rates.
pub struct Limits6 {
    /// Keyed by `hasher`'s hash of the client key (no allocation per check).
    per_client: RateLimiter<u64, CappedStore<u64>, DefaultClock>,
    hasher: std::collections::hash_map::RandomState,
    global: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Limits6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits6")
            .field("tracked_clients", &self.per_client.len())
            .finish_non_exhaustive()
    }
}

impl Limits6 {
    pub fn new(cfg: &Dhcp6Config, dhcp: &DhcpConfig) -> Self {
        let per_sec = |r: Rate| r.per_second().ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        Self {
            per_client: RateLimiter::new(
                quota(cfg.per_client_rate, cfg.per_client_burst),
                CappedStore::new(dhcp.max_client_quotas),
                DefaultClock::default(),
            ),
            hasher: Default::default(),
            global: RateLimiter::direct(quota(dhcp.global_rate, per_sec(dhcp.global_rate))),
        }
    }

    /// The client's own quota. Checked before [`Limits6::check_global`],
    /// so a client over its own quota does not spend the global one.
    pub fn check_own(&self, who: Who<'_>) -> Result<(), DropReason> {
        self.per_client
            .check_key(&self.hasher.hash_one(who))
            .map_err(|_| DropReason::RateLimited)
    }

    /// The global quota (`[dhcp] global_rate`).
    pub fn check_global(&self) -> Result<(), DropReason> {
        self.global.check().map_err(|_| DropReason::GlobalRate)
    }

    /// Forgets keys whose state is back to "never seen" and releases memory.
    pub fn housekeeping(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    /// A DUID over its burst is refused; another DUID is not.
    #[test]
    fn one_duid_cannot_spend_another_ones_quota() {
        let cfg = Config::embedded().unwrap();
        let mut v6 = cfg.dhcp6.clone();
        v6.per_client_rate = Rate {
            count: 1,
            per: Duration::from_secs(3600),
        };
        v6.per_client_burst = 3;
        let l = Limits6::new(&v6, &cfg.dhcp);
        let a = Who::Duid(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        let b = Who::Duid(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 2]);
        let passed = (0..10).filter(|_| l.check_own(a).is_ok()).count();
        assert_eq!(passed, 3);
        assert_eq!(l.check_own(a), Err(DropReason::RateLimited));
        assert_eq!(l.check_own(b), Ok(()));
        let from = Who::Source("fe80::1".parse().unwrap());
        assert_eq!(l.check_own(from), Ok(()), "a source is its own client");
    }
}
