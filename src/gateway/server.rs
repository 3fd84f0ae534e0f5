//! The gateway's lifecycle: [`Gateway::bind`] (typed errors, nothing
//! spawned), then [`Gateway::run`] (accept loop until cancelled, then
//! GOAWAY and a drain bounded by `[process] shutdown_grace`), on the
//! shared runtime or on `[gateway] threads` current-thread runtimes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::ApiContext;
use super::error::GatewayError;
use super::events::EventHub;
use super::inner::Inner;
use super::limiters::{Admission, ConnLimiter};
use super::proxy::Routes;
use super::respbudget::ResponseBudget;
use super::{listener, tls};
use crate::config::Config;
use crate::events::EventLog;
use crate::isolation::IsolationSet;
use crate::shared::Shared;
use crate::stats::Stats;

/// What the gateway takes from the process: the config and its reloads,
/// the counters, the isolation set, the shutdown token and task tracker.
pub struct GatewayDeps {
    pub config: Arc<Config>,
    pub updates: tokio::sync::watch::Receiver<Arc<Config>>,
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    /// The event log the `/ui` page shows.
    pub events: Arc<EventLog>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

impl From<&Shared> for GatewayDeps {
    fn from(shared: &Shared) -> Self {
        Self {
            config: shared.config.clone(),
            updates: shared.updates.subscribe(),
            stats: shared.stats.clone(),
            isolation: shared.isolation.clone(),
            events: shared.events.clone(),
            cancel: shared.cancel.clone(),
            tracker: shared.tracker.clone(),
        }
    }
}

/// Applies reloaded limits and routes (SIGHUP) until cancelled.
/// Cancel-safe: only waits between synchronous swaps.
async fn apply_reloads(inner: Arc<Inner>, mut updates: tokio::sync::watch::Receiver<Arc<Config>>) {
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let config = updates.borrow_and_update().clone();
                inner.admission.reconfigure(&config.gateway);
                inner
                    .api
                    .public_client_metrics
                    .store(config.gateway.public_client_metrics, std::sync::atomic::Ordering::Relaxed);
                inner.response.reconfigure(&config.gateway);
                match Routes::new(&config.routes, &inner.cfg, &inner.stats) {
                    Ok(routes) => {
                        inner.routes.store(Arc::new(routes));
                        tracing::info!(routes = config.routes.len(), "gateway routes reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "reloaded routes refused; keeping the old ones"),
                }
            }
        }
    }
}

/// A bound, not yet running gateway.
pub struct Gateway {
    listener: TcpListener,
    inner: Arc<Inner>,
    tracker: TaskTracker,
    updates: tokio::sync::watch::Receiver<Arc<Config>>,
}

impl Gateway {
    /// Binds the listen socket and prepares TLS, routes and limits. Spawns
    /// nothing; must run inside a tokio runtime (the listener registers).
    /// `deps`: a [`GatewayDeps`], or `&Shared`.
    pub fn bind(deps: impl Into<GatewayDeps>, api: ApiContext) -> Result<Self, GatewayError> {
        let deps = deps.into();
        let cfg = deps.config.gateway.clone();
        let listener = listener::bind(cfg.listen, cfg.socket_buffer)?;
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        let routes = Routes::new(&deps.config.routes, &cfg, &deps.stats)?;
        let response = Arc::new(ResponseBudget::new(&cfg, deps.stats.clone()));
        let events = Arc::new(EventHub::new(
            api.clone(),
            deps.events,
            response.clone(),
            cfg.max_event_streams,
            deps.cancel.clone(),
        ));
        let inner = Inner {
            admission: Admission::new(&cfg, deps.stats.clone()),
            conns: Arc::new(ConnLimiter::new(&cfg)),
            response,
            events,
            stats: deps.stats.clone(),
            isolation: deps.isolation,
            api_stats: deps.stats.gateway.route("api", 0),
            routes: arc_swap::ArcSwap::from_pointee(routes),
            admin_key: crate::client::ClientKey::token(api.admin_token.as_bytes()),
            api,
            tls,
            cancel: deps.cancel,
            grace: deps.config.process.shutdown_grace,
            cfg,
        };
        Ok(Self {
            listener,
            inner: Arc::new(inner),
            tracker: deps.tracker,
            updates: deps.updates,
        })
    }

    /// The bound address (tests bind port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, GatewayError> {
        self.listener.local_addr().map_err(|e| GatewayError::Bind {
            addr: self.inner.cfg.listen,
            reason: e.to_string(),
        })
    }

    /// Accepts until `shared.cancel`, then stops accepting; each connection
    /// task sends GOAWAY and drains within the grace time. Returns when the
    /// accept loop has stopped (connections finish on the tracker).
    /// Cancel-safe: dropping it stops accepting; spawned connections keep
    /// running under the tracker and still see the token.
    pub async fn run(self) {
        let housekeeping = self.inner.clone();
        self.tracker.spawn(async move {
            housekeeping
                .admission
                .housekeeping(&housekeeping.cancel)
                .await;
        });
        self.tracker
            .spawn(apply_reloads(self.inner.clone(), self.updates));
        self.tracker.spawn(self.inner.events.clone().run());
        self.tracker.spawn(
            self.inner
                .response
                .clone()
                .sweeper(self.inner.cancel.clone()),
        );
        match self.inner.cfg.threads {
            0 => listener::accept_loop(self.listener, self.inner, self.tracker).await,
            n => run_threads(self.listener, self.inner, n).await,
        }
    }
}

/// Serves on `n` threads of its own, each a current-thread runtime that
/// accepts on a clone of the listen socket and runs its connections to the
/// end (no work stealing, no cross-thread wake-ups: less CPU per request,
/// see `bench/RESULTS-gateway.md`). Returns when every
/// thread has stopped accepting and drained. Cancel-safe in the sense that
/// the threads only stop on `inner.cancel`; dropping this only stops
/// waiting for them.
async fn run_threads(listener: TcpListener, inner: Arc<Inner>, n: usize) {
    let std_listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "gateway listener cannot move to its threads"),
    };
    // An h2c upstream connection is shared by every thread, driven by the
    // runtime that opened it (HTTP/1.1 ones are pooled per runtime): no
    // runtime goes away before every thread has drained its own connections.
    let drained = Arc::new(tokio::sync::Barrier::new(n));
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (inner2, drained2) = (inner.clone(), drained.clone());
        let spawned = std_listener.try_clone().and_then(|l| {
            std::thread::Builder::new()
                .name(format!("vpcbox-gw-{i}"))
                .spawn(move || serve_thread(l, inner2, &drained2))
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::error!(error = %e, "gateway thread cannot start; one fewer");
                // Stand in for it at the barrier so the others can finish.
                let (cancel, drained) = (inner.cancel.clone(), drained.clone());
                tokio::spawn(async move {
                    cancel.cancelled().await;
                    drained.wait().await;
                });
            }
        }
    }
    drop(std_listener);
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

/// How often a busy gateway thread hands its jemalloc tcache back (see
/// [`crate::memory::trim_thread_cache`]): well inside the 5 s in which RSS
/// should be back near idle after a burst.
const TCACHE_TRIM: std::time::Duration = std::time::Duration::from_secs(1);

/// One gateway thread: accept until cancelled, drain its connections (each
/// bounded by the grace time), then wait for the other threads to drain.
fn serve_thread(l: std::net::TcpListener, inner: Arc<Inner>, drained: &tokio::sync::Barrier) {
    // Everything this thread allocates is the gateway's (`vpcbox_memory_bytes`).
    let _owner = crate::heap::enter_thread(crate::heap::Owner::Gateway);
    // Its blocking pool (store reads, isolation fsyncs) is named apart from
    // the gateway thread, so `top -H` shows which one works.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("vpcbox-blocking")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "gateway thread runtime cannot start");
            return futures::executor::block_on(async {
                inner.cancel.cancelled().await;
                drained.wait().await;
            });
        }
    };
    rt.block_on(async move {
        tokio::spawn(crate::memory::trim_thread_cache(
            TCACHE_TRIM,
            inner.cancel.clone(),
        ));
        let conns = TaskTracker::new();
        match TcpListener::from_std(l) {
            Ok(listener) => listener::accept_loop(listener, inner, conns.clone()).await,
            Err(e) => {
                tracing::error!(error = %e, "gateway thread cannot listen");
                inner.cancel.cancelled().await;
            }
        }
        conns.close();
        conns.wait().await;
        drained.wait().await;
    });
}
