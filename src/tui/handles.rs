//! What the dashboard needs from the running appliance, and nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::isolation::IsolationSet;
use crate::shared::Shared;

#[derive(Clone)]
pub struct Handles {
    /// `[memory] budget`, shown until the first snapshot carries it.
    pub budget: u64,
    /// `[tui] refresh`: the redraw interval.
    pub refresh: Duration,
    /// The dashboard isolates and releases clients here.
    pub isolation: Arc<IsolationSet>,
    pub events: Arc<EventLog>,
    /// The root token: `q` cancels it; its cancellation ends the dashboard.
    pub cancel: CancellationToken,
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
