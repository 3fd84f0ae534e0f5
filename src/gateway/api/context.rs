//! What the API handlers share ([`ApiContext`]) and a request as they see it.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;

use crate::ipam::Ipam;
use crate::isolation::IsolationSet;
use crate::shared::Shared;
use crate::stats::{Snapshot, Stats};

/// What the API takes from the process beside the IPAM, the snapshots and
/// the token: the counters, the isolation set, the initial
/// `[gateway] public_client_metrics`.
pub struct ApiDeps {
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub public_client_metrics: bool,
}

impl From<&Shared> for ApiDeps {
    fn from(shared: &Shared) -> Self {
        Self {
            stats: shared.stats.clone(),
            isolation: shared.isolation.clone(),
            public_client_metrics: shared.config.gateway.public_client_metrics,
        }
    }
}

/// What the API handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub ipam: Arc<Ipam>,
    pub isolation: Arc<IsolationSet>,
    pub snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pub admin_token: Arc<str>,
    pub ready: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// `[gateway] public_client_metrics`: per-client series on `/metrics`
    /// without the token. Swapped by SIGHUP.
    pub public_client_metrics: Arc<AtomicBool>,
}

impl ApiContext {
    /// The context for a process; `ready` starts false and the
    /// composition root sets it once every listener is bound.
    /// `deps`: an [`ApiDeps`], or `&Shared`.
    pub fn new(
        deps: impl Into<ApiDeps>,
        ipam: Arc<Ipam>,
        snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
        admin_token: Arc<str>,
    ) -> Self {
        let deps = deps.into();
        Self {
            ipam,
            isolation: deps.isolation,
            snapshots,
            admin_token,
            ready: Arc::new(AtomicBool::new(false)),
            stats: deps.stats,
            public_client_metrics: Arc::new(AtomicBool::new(deps.public_client_metrics)),
        }
    }
}

/// A request as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub headers: http::HeaderMap,
    pub query: Option<String>,
    pub body: Bytes,
    pub client: IpAddr,
}

/// An API context over a fresh store in `dir`, for unit tests.
#[cfg(test)]
pub(crate) fn test_context(dir: &std::path::Path) -> ApiContext {
    let stats = Stats::new(16);
    let ipam = Ipam::open(dir, crate::ipam::IpamOptions::default(), stats.clone())
        .expect("open a test store");
    let (_tx, snapshots) = tokio::sync::watch::channel(Arc::default());
    let deps = ApiDeps {
        stats,
        isolation: IsolationSet::in_memory(),
        public_client_metrics: false,
    };
    ApiContext::new(deps, ipam, snapshots, Arc::from("t"))
}
