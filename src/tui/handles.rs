//! What the dashboard needs from the running appliance, and nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::isolation::IsolationSet;
use crate::shared::Shared;

/// The memory budget (shown until a snapshot carries it), the redraw
/// interval, the isolation set the keys act on, the event log, and the
/// root token (`q` cancels it; its cancellation ends the dashboard).
#[derive(Clone)]
pub struct Handles {
    pub(super) budget: u64,
    pub(super) refresh: Duration,
    pub(super) isolation: Arc<IsolationSet>,
    pub(super) events: Arc<EventLog>,
    pub(super) cancel: CancellationToken,
}

impl From<&Shared> for Handles {
    fn from(s: &Shared) -> Self {
        Self {
            budget: s.config.memory.budget,
            refresh: s.config.tui.refresh,
            isolation: s.isolation.clone(),
            events: s.events.clone(),
            cancel: s.cancel.clone(),
        }
    }
}
