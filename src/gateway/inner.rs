//! The state every connection and request task of the gateway shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::api::ApiContext;
use super::events::EventHub;
use super::limiters::{Admission, ConnLimiter};
use super::proxy::Routes;
use super::respbudget::ResponseBudget;
use crate::config::GatewayConfig;
use crate::isolation::IsolationSet;
use crate::stats::Stats;

/// State every connection and request task shares (one `Arc`).
pub(crate) struct Inner {
    pub cfg: GatewayConfig,
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub admission: Admission,
    /// Swapped whole when SIGHUP brings new routes; requests in flight keep
    /// the routes (and pending permits) they started with.
    pub routes: arc_swap::ArcSwap<Routes>,
    pub api: ApiContext,
    /// `/v1/events/stream`'s updates and readers.
    pub events: Arc<EventHub>,
    /// The admin token's identity (`token:` key), the one verified token.
    pub admin_key: crate::client::ClientKey,
    /// Response codes of internal API requests (route "api").
    pub api_stats: Arc<crate::stats::RouteStats>,
    pub conns: Arc<ConnLimiter>,
    /// Response bytes buffered across all connections.
    pub response: Arc<ResponseBudget>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cancel: CancellationToken,
    pub grace: std::time::Duration,
}
