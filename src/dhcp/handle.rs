//! What the DHCP server needs from the appliance, and nothing more.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DhcpConfig};
use crate::events::EventLog;
use crate::isolation::IsolationSet;
use crate::shared::Shared;
use crate::stats::Stats;

/// Stops the appliance because the DHCP server died (its reason first).
pub type Fail = Arc<dyn Fn(String) + Send + Sync>;

/// The narrow handle [`super::DhcpServer::bind`] takes. `From<&Shared>`
/// builds it from the appliance's handles.
#[derive(Clone)]
pub struct DhcpHandle {
    /// `[dhcp]` as the process started (listen address, interfaces, workers).
    pub config: DhcpConfig,
    /// Reloaded configs: new quotas take effect on change.
    pub updates: watch::Receiver<Arc<Config>>,
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub events: Arc<EventLog>,
    /// Stops the server.
    pub cancel: CancellationToken,
    pub fail: Fail,
}

impl std::fmt::Debug for DhcpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpHandle")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl From<&Shared> for DhcpHandle {
    fn from(shared: &Shared) -> Self {
        let owner = shared.clone();
        Self {
            config: shared.config.dhcp.clone(),
            updates: shared.updates.subscribe(),
            stats: shared.stats.clone(),
            isolation: shared.isolation.clone(),
            events: shared.events.clone(),
            cancel: shared.cancel.clone(),
            fail: Arc::new(move |why| owner.fail(why)),
        }
    }
}
