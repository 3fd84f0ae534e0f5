//! The lease reaper: sleeps until the next lease or offer ends (or an
//! earlier one appears, or shutdown), then expires what is due. It also
//! publishes changed lease counts every 250 ms.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::error::IpamError;
use super::handle::Ipam;
use super::model::{secs, time};

/// Longest sleep without a deadline (guards against wall-clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// After a pass that left due work undone (writes refused: a degraded store
/// or a fenced cluster node), the next pass waits at least this long.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(ipam: Arc<Ipam>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut not_before: Option<Instant> = None;
    loop {
        let mut wait = ipam.until_next_deadline(SystemTime::now());
        if let Some(at) = not_before {
            wait = wait.max(at.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = ipam.reaper_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = tick.tick() => {
                ipam.publish_counts(false);
                continue;
            }
        }
        if let Err(e) = ipam.reap(SystemTime::now()) {
            tracing::warn!(error = %e, "lease expiry failed; retrying");
        }
        not_before = ipam
            .until_next_deadline(SystemTime::now())
            .is_zero()
            .then(|| Instant::now() + RETRY);
    }
    ipam.publish_counts(true);
    tracing::debug!("ipam reaper stopped");
}

impl Ipam {
    fn until_next_deadline(&self, now: SystemTime) -> Duration {
        let next = {
            let st = self.lock();
            st.next_offer_expiry()
                .unwrap_or(u32::MAX)
                .min(st.next_expiry)
                .min(st.v6.next_deadline())
        };
        if next == u32::MAX {
            return MAX_SLEEP;
        }
        // Expiry times are whole seconds: wake just after the boundary.
        let at = time(next) + Duration::from_millis(5);
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP)
    }

    /// Expires leases and drops offers due at `now`.
    pub fn reap(&self, now: SystemTime) -> Result<(), IpamError> {
        let mut st = self.lock();
        self.maintain(&mut st, secs(now))
    }
}
