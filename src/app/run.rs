//! `vpcbox run`: opens the store, starts every service on one
//! `TaskTracker` under one root `CancellationToken`, and runs the shutdown
//! tree. SIGTERM drains (services stop accepting and finish in-flight work
//! within `[process] shutdown_grace`); SIGINT is quick (at most 1 s); a second
//! signal abandons the drain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::LogFormat;
use crate::config::Config;
use crate::dhcp::DhcpServer;
use crate::dhcp6::Dhcp6Server;
use crate::exit::Exit;
use crate::gateway::{ApiContext, Gateway};
use crate::isolation::IsolationSet;
use crate::memory::Governor;
use crate::shared::{Shared, Stop};
use crate::stats::{Publisher, Stats};

use super::ipam_source::IpamSource;
use super::reload::{self, reload};
use super::store::JoinExit;
use super::{logging, store, token};

/// How `vpcbox run` was asked to behave.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The file the config came from (`None`: embedded defaults); SIGHUP re-reads it.
    pub config_path: Option<std::path::PathBuf>,
    pub headless: bool,
    pub demo: bool,
    pub log_format: LogFormat,
}

/// Runs the appliance until a signal; the process exit code follows from the result.
pub async fn run(config: Config, opts: RunOptions) -> Result<(), Exit> {
    // Handlers first: a stop or reload sent while the store opens or the
    // ports bind must not meet the signals' default action (exit).
    let signals = Signals::new()?;
    let use_tui = crate::tui::should_use_tui(opts.headless);
    start_logging(&config, &opts, use_tui)?;
    let config = Arc::new(config);
    // Before anything the owners allocate (the client table, the store).
    crate::heap::init();
    let stats = Stats::new(config.stats.tracked_clients);
    let (ipam, cluster) = store::open(&config, stats.clone())?;
    let cluster = cluster.map(Arc::new);
    let isolation = IsolationSet::open(ipam.isolation_store())
        .map_err(|e| Exit::unavailable(format!("isolation set: {e}")))?;
    let shared = Shared::new(config.clone(), stats.clone(), isolation);
    ipam.attach_events(shared.events.clone());
    let join_exit = JoinExit::default();
    start_cluster(cluster.as_ref(), &ipam, &shared, &join_exit);
    // The store's committer and reaper live on their own tree: they must
    // outlive the services' drain, whose last binds still need group commit
    // (without it each would flush sled on its own).
    let (store_cancel, store_tasks) = (CancellationToken::new(), TaskTracker::new());
    ipam.spawn(&store_tasks, store_cancel.clone());

    let snapshots = start_background(&shared, &ipam);
    let bound = start_listeners(&shared, &ipam, &snapshots)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        dhcp = %bound.dhcp,
        gateway = %bound.api,
        data = %config.storage.path.display(),
        "vpcbox started"
    );
    if opts.demo {
        start_demo(&shared, &bound);
    }
    if use_tui {
        start_dashboard(&shared, &ipam, snapshots, cluster.as_deref());
    }
    let stop = wait_for_stop(&shared, signals, opts.config_path.as_deref()).await;
    shutdown(&shared, stop).await;
    close_store(&ipam, store_cancel, store_tasks).await?;
    leave_cluster(cluster);
    if let Some(exit) = join_exit.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(exit);
    }
    if let Some(why) = shared.failure() {
        return Err(Exit::software(why));
    }
    tracing::info!("store flushed; bye");
    Ok(())
}

/// The memory governor, reloads of subnets into the store, and the stats
/// publisher, whose snapshots the dashboard and the API read.
fn start_background(
    shared: &Shared,
    ipam: &Arc<crate::ipam::Ipam>,
) -> tokio::sync::watch::Receiver<Arc<crate::stats::Snapshot>> {
    let (config, stats) = (&shared.config, &shared.stats);
    let governor = Governor::new(stats.clone(), shared.events.clone(), config.memory.clone());
    shared
        .tracker
        .spawn(governor.run(shared.updates.subscribe(), shared.cancel.clone()));
    shared.tracker.spawn(reload::apply_to_store(
        ipam.clone(),
        shared.updates.subscribe(),
        shared.cancel.clone(),
    ));
    let (publisher, snapshots) = Publisher::new(stats.clone());
    let interval = config.stats.publish_interval;
    shared
        .tracker
        .spawn(publisher.run(interval, shared.cancel.clone()));
    snapshots
}

/// Cluster mode: the watch (other nodes' leases and isolations), block
/// claims and fence reporting start before the services do; for a node
/// that has not registered yet, once it has (see `join.rs`).
#[cfg(feature = "cluster")]
fn start_cluster(
    cluster: Option<&Arc<store::ClusterNode>>,
    ipam: &Arc<crate::ipam::Ipam>,
    shared: &Shared,
    exit: &JoinExit,
) {
    if let Some(c) = cluster {
        super::join::start(c, ipam, shared, exit);
    }
}

#[cfg(not(feature = "cluster"))]
fn start_cluster(
    _: Option<&Arc<store::ClusterNode>>,
    _: &Arc<crate::ipam::Ipam>,
    _: &Shared,
    _: &JoinExit,
) {
}

/// Leaves the cluster: the node's lease is given back, so its blocks and
/// clients move to the others at once rather than after the TTL.
#[cfg(feature = "cluster")]
fn leave_cluster(cluster: Option<Arc<store::ClusterNode>>) {
    if let Some(c) = cluster.filter(|c| c.registered()) {
        c.leave();
    }
}

#[cfg(not(feature = "cluster"))]
fn leave_cluster(_: Option<Arc<store::ClusterNode>>) {}

/// After the services: stops the committer and reaper (bounded), then
/// flushes the store.
async fn close_store(
    ipam: &crate::ipam::Ipam,
    cancel: CancellationToken,
    tasks: TaskTracker,
) -> Result<(), Exit> {
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("store tasks did not stop within 5s");
    }
    ipam.flush()
        .await
        .map_err(|e| Exit::software(format!("final store flush failed: {e}")))
}

/// Logs go to a file in the data directory while the dashboard owns the
/// terminal, to stderr otherwise.
fn start_logging(config: &Config, opts: &RunOptions, use_tui: bool) -> Result<(), Exit> {
    let dir = &config.storage.path;
    let file = use_tui.then(|| dir.join("vpcbox.log"));
    if use_tui {
        std::fs::create_dir_all(dir)
            .map_err(|e| Exit::unavailable(format!("data directory '{}': {e}", dir.display())))?;
    }
    logging::init(opts.log_format, file.as_deref())
}

/// Where the listeners ended up (port 0 in tests resolves here).
struct Bound {
    api: std::net::SocketAddr,
    dhcp: std::net::SocketAddr,
}

/// Binds the gateway and the DHCP sockets, then declares readiness; a port
/// or device we cannot have is exit 69 naming it.
fn start_listeners(
    shared: &Shared,
    ipam: &Arc<crate::ipam::Ipam>,
    snapshots: &tokio::sync::watch::Receiver<Arc<crate::stats::Snapshot>>,
) -> Result<Bound, Exit> {
    let config = &shared.config;
    let mut bound = Bound {
        api: config.gateway.listen,
        dhcp: config.dhcp.listen,
    };
    let mut ready = None;
    if config.gateway.enabled {
        let token = token::load_or_create(&config.gateway.admin_token_file)?;
        let api = ApiContext::new(shared, ipam.clone(), snapshots.clone(), token);
        ready = Some(api.ready.clone());
        let gateway = Gateway::bind(shared, api).map_err(Exit::unavailable)?;
        bound.api = gateway.local_addr().map_err(Exit::unavailable)?;
        shared.tracker.spawn(gateway.run());
    }
    if config.dhcp.enabled {
        let dhcp = DhcpServer::bind(shared, ipam.clone()).map_err(|e| {
            if e.is_unavailable() {
                Exit::unavailable(e)
            } else {
                Exit::usage(e)
            }
        })?;
        bound.dhcp = dhcp.local_addrs().first().copied().unwrap_or(bound.dhcp);
        shared.tracker.spawn(dhcp.run());
    }
    if config.dhcp6.enabled {
        let dhcp6 = Dhcp6Server::bind(shared, ipam.clone()).map_err(|e| {
            if e.is_unavailable() {
                Exit::unavailable(e)
            } else {
                Exit::usage(e)
            }
        })?;
        let addr = dhcp6.local_addr().map_err(Exit::unavailable)?;
        tracing::info!(dhcp6 = %addr, "dhcp6 listening");
        shared.tracker.spawn(dhcp6.run());
    }
    if let Some(r) = ready {
        r.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(bound)
}

/// `--demo`: synthetic clients against our own sockets.
fn start_demo(shared: &Shared, bound: &Bound) {
    let (demo, dhcp, api) = (crate::demo::DemoHandle::from(shared), bound.dhcp, bound.api);
    shared.tracker.spawn(async move {
        if let Err(e) = crate::demo::run(demo, dhcp, api).await {
            tracing::error!(error = %e, "demo traffic stopped");
        }
    });
}

/// The dashboard; `q` cancels the root token, any other failure leaves the
/// appliance running headless.
fn start_dashboard(
    shared: &Shared,
    ipam: &Arc<crate::ipam::Ipam>,
    snapshots: tokio::sync::watch::Receiver<Arc<crate::stats::Snapshot>>,
    cluster: Option<&store::ClusterNode>,
) {
    let data = IpamSource::new(ipam.clone(), &shared.config)
        .with_cluster(super::cluster::dashboard(cluster));
    let handles = crate::tui::Handles::from(shared);
    shared.tracker.spawn(async move {
        if let Err(e) = crate::tui::run(handles, snapshots, data).await {
            tracing::error!(error = %e, "dashboard stopped; running headless");
        }
    });
}

/// The process's SIGTERM, SIGINT and SIGHUP streams.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Self, Exit> {
        let handler =
            |kind| signal(kind).map_err(|e| Exit::software(format!("signal handler: {e}")));
        Ok(Self {
            term: handler(SignalKind::terminate())?,
            int: handler(SignalKind::interrupt())?,
            hup: handler(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGTERM, SIGINT or the root token (cancelled by the
/// dashboard), applying SIGHUP reloads meanwhile.
async fn wait_for_stop(shared: &Shared, mut sig: Signals, config_path: Option<&Path>) -> Stop {
    let stop = loop {
        tokio::select! {
            _ = sig.term.recv() => break Stop::Drain,
            _ = sig.int.recv() => break Stop::Quick,
            _ = shared.cancel.cancelled() => break Stop::Drain,
            _ = sig.hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                reload(shared, config_path);
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!(?stop, "shutting down");
    stop
}

/// Cancels the tree and waits for the services, bounded by the grace time;
/// a second SIGTERM/SIGINT abandons the wait.
async fn shutdown(shared: &Shared, stop: Stop) {
    shared.cancel.cancel();
    shared.tracker.close();
    let grace = match stop {
        Stop::Drain => shared.config.process.shutdown_grace,
        Stop::Quick => shared
            .config
            .process
            .shutdown_grace
            .min(Duration::from_secs(1)),
    };
    let second = async {
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        match (term.as_mut(), int.as_mut()) {
            (Some(t), Some(i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = shared.tracker.wait() => tracing::info!("all services stopped"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, tasks = shared.tracker.len(), "grace time over; abandoning the rest");
        }
        _ = second => tracing::warn!("second signal; abandoning the drain"),
    }
}
