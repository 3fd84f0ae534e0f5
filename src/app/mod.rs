//! Composition root: opens the store, starts every service on one
//! `TaskTracker` under one root `CancellationToken`, and runs the shutdown
//! tree. SIGTERM drains (services stop accepting and finish in-flight work
//! within `[process] shutdown_grace`); SIGINT is quick (at most 1 s); a second
//! signal abandons the drain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::LogFormat;
use crate::config::Config;
use crate::dhcp::DhcpServer;
use crate::events::EventLog;
use crate::exit::Exit;
use crate::gateway::{ApiContext, Gateway};
use crate::isolation::IsolationSet;
use crate::memory::Governor;
use crate::stats::{Publisher, Stats};

mod logging;
mod reload;
pub mod store;
mod token;

pub use reload::{reload, Outcome};

/// How `vpcbox run` was asked to behave.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The file the config came from (`None`: embedded defaults); SIGHUP re-reads it.
    pub config_path: Option<std::path::PathBuf>,
    pub headless: bool,
    pub demo: bool,
    pub log_format: LogFormat,
}

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
}

impl Shared {
    /// Fresh counters, event log, cancellation tree and task tracker for `config`.
    pub fn new(config: Arc<Config>, stats: Arc<Stats>, isolation: Arc<IsolationSet>) -> Self {
        Self {
            stats,
            updates: tokio::sync::watch::Sender::new(config.clone()),
            config,
            isolation,
            events: Arc::new(EventLog::default()),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }
}

/// Runs the appliance until a signal; the process exit code follows from the result.
pub async fn run(config: Config, opts: RunOptions) -> Result<(), Exit> {
    logging::init(opts.log_format, None)?;
    let config = Arc::new(config);
    let stats = Stats::new(config.stats.tracked_clients);
    let ipam = store::open(&config, stats.clone())?;
    let isolation = IsolationSet::open(ipam.isolation_store())
        .map_err(|e| Exit::unavailable(format!("isolation set: {e}")))?;
    let shared = Shared::new(config.clone(), stats.clone(), isolation);
    ipam.spawn(&shared.tracker, shared.cancel.clone());

    let governor = Governor::new(stats.clone(), shared.events.clone(), config.memory.clone());
    shared.tracker.spawn(governor.run(shared.cancel.clone()));
    let (publisher, snapshots) = Publisher::new(stats.clone());
    shared
        .tracker
        .spawn(publisher.run(config.stats.publish_interval, shared.cancel.clone()));

    // Bind every listener before declaring readiness; a port we cannot
    // have is exit 69 naming it.
    let mut ready = Vec::new();
    if config.gateway.enabled {
        let token = token::load_or_create(&config.gateway.admin_token_file)?;
        let api = ApiContext::new(&shared, ipam.clone(), snapshots.clone(), token);
        ready.push(api.ready.clone());
        let gateway = Gateway::bind(&shared, api).map_err(Exit::unavailable)?;
        shared.tracker.spawn(gateway.run());
    }
    if config.dhcp.enabled {
        let dhcp = DhcpServer::bind(&shared, ipam.clone()).map_err(|e| {
            if e.is_unavailable() {
                Exit::unavailable(e)
            } else {
                Exit::usage(e)
            }
        })?;
        shared.tracker.spawn(dhcp.run());
    }
    for r in &ready {
        r.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        dhcp = %config.dhcp.listen,
        gateway = %config.gateway.listen,
        data = %config.storage.path.display(),
        "vpcbox started"
    );
    let stop = wait_for_stop(&shared, opts.config_path.as_deref()).await?;
    shutdown(&shared, stop).await;
    ipam.flush()
        .await
        .map_err(|e| Exit::software(format!("final store flush failed: {e}")))?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Waits for SIGTERM, SIGINT or the root token (cancelled by the
/// dashboard), applying SIGHUP reloads meanwhile.
async fn wait_for_stop(shared: &Shared, config_path: Option<&Path>) -> Result<Stop, Exit> {
    let handler = |kind| signal(kind).map_err(|e| Exit::software(format!("signal handler: {e}")));
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    let mut hup = handler(SignalKind::hangup())?;
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Drain,
            _ = int.recv() => break Stop::Quick,
            _ = shared.cancel.cancelled() => break Stop::Drain,
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                reload(shared, config_path);
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!(?stop, "shutting down");
    Ok(stop)
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
