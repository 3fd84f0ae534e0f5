//! The handles every service is started with: the config (as started and
//! live), counters, isolation set, event log, and the one cancellation tree
//! and task tracker. It sits below the services, so they need not import the
//! composition root that builds it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::events::EventLog;
use crate::isolation::IsolationSet;
use crate::stats::Stats;

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (or the dashboard's `q`): drain within the grace time.
    Drain,
    /// SIGINT: stop quickly.
    Quick,
}

/// Handles every service shares.
#[derive(Clone)]
pub struct Shared {
    /// The config the process started with (listen addresses, paths).
    pub config: Arc<Config>,
    /// The live config: SIGHUP publishes a validated new one here; services
    /// that can change live (rates, limits, routes, subnets, memory marks)
    /// watch it with `updates.subscribe()`.
    pub updates: tokio::sync::watch::Sender<Arc<Config>>,
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub events: Arc<EventLog>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// Why a service the appliance cannot run without died, if one did.
    failure: Arc<std::sync::OnceLock<String>>,
}

impl Shared {
    /// Fresh counters, event log, cancellation tree and task tracker for `config`.
    pub fn new(config: Arc<Config>, stats: Arc<Stats>, isolation: Arc<IsolationSet>) -> Self {
        let events = Arc::new(EventLog::default());
        isolation.attach(stats.clone(), events.clone());
        Self {
            stats,
            updates: tokio::sync::watch::Sender::new(config.clone()),
            config,
            isolation,
            events,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failure: Arc::default(),
        }
    }

    /// A service the appliance cannot run without has died: remember why
    /// (the first reason wins), and shut down, so the process exits 70
    /// after draining and a supervisor restarts it — rather than run on,
    /// healthy-looking, without it.
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        tracing::error!(%why, "a service died; shutting down");
        let _ = self.failure.set(why);
        self.cancel.cancel();
    }

    /// The reason given to [`Shared::fail`], if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_service_shuts_down_and_the_first_reason_is_kept() {
        let shared = Shared::new(
            Arc::new(Config::embedded().unwrap()),
            Stats::new(16),
            IsolationSet::in_memory(),
        );
        assert_eq!(shared.failure(), None);
        shared.fail("the dhcp thread panicked");
        shared.clone().fail("a later one");
        assert!(shared.cancel.is_cancelled());
        assert_eq!(shared.failure(), Some("the dhcp thread panicked"));
    }
}
