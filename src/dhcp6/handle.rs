//! What the DHCPv6 server needs from the appliance, and nothing more.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dhcp6Config, DhcpConfig};
use crate::isolation::IsolationSet;
use crate::shared::Shared;
use crate::stats::Stats;

/// Stops the appliance because the DHCPv6 server died (its reason first).
pub type Fail6 = Arc<dyn Fn(String) + Send + Sync>;

/// The narrow handle [`super::Dhcp6Server::bind`] takes; `From<&Shared>`.
#[derive(Clone)]
pub struct Dhcp6Handle {
    /// `[dhcp6]` as the process started (listen address, interfaces).
    pub config: Dhcp6Config,
    /// `[dhcp]`: the limits both servers share (queue, global rate,
    /// quota table cap, deadline).
    pub dhcp: DhcpConfig,
    /// Reloaded configs: new quotas take effect on change (subnets are
    /// the IPAM's, which the reload updates).
    pub updates: watch::Receiver<Arc<Config>>,
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub cancel: CancellationToken,
    pub fail: Fail6,
}

impl std::fmt::Debug for Dhcp6Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dhcp6Handle")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl From<&Shared> for Dhcp6Handle {
    fn from(shared: &Shared) -> Self {
        let owner = shared.clone();
        Self {
            config: shared.config.dhcp6.clone(),
            dhcp: shared.config.dhcp.clone(),
            updates: shared.updates.subscribe(),
            stats: shared.stats.clone(),
            isolation: shared.isolation.clone(),
            cancel: shared.cancel.clone(),
            fail: Arc::new(move |why| owner.fail(why)),
        }
    }
}
