//! The gateway alone, for `bench/gateway.sh`: one route `/` → an upstream,
//! limits from the shipped defaults except a quota high enough for a load
//! generator on one IP. Env: `GW_LISTEN` (127.0.0.1:18445), `GW_UPSTREAM`
//! (http://127.0.0.1:18080; `h2c://` for an HTTP/2 upstream), `GW_THREADS`
//! (1: haproxy runs one thread too), `GW_RUNTIME` (`multi`, or `current`
//! for one current-thread runtime), `GW_PREFIX` (the route's prefix, `/`;
//! e.g. `/up/` leaves `/v1/...` to the in-process API), `GW_MAX_PENDING`
//! (10000), `GW_DATA` (the store, `./data`), `GW_GATEWAY_EXTRA` (more
//! `[gateway]` lines, `;`-separated), `GW_PID_FILE`. Stops on
//! SIGTERM/SIGINT.
//!
//! The route prefix `/` is set after validation: the config refuses it
//! because it shadows the API, but the harness requests `/`.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use vpcbox::config::{Config, RouteConfig};
use vpcbox::gateway::{ApiContext, Gateway};
use vpcbox::isolation::IsolationSet;
use vpcbox::shared::Shared;
use vpcbox::stats::Stats;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn config() -> anyhow::Result<Config> {
    let listen = env("GW_LISTEN", "127.0.0.1:18445");
    let text = format!(
        "[dhcp]\nlisten = \"127.0.0.1:0\"\nserver_id = \"10.0.0.1\"\n\
         [gateway]\nlisten = \"{listen}\"\nper_client_rate = \"1000000/s\"\nper_client_burst = 1000000\n\
         max_connections_per_client = 8192\nmax_connections = 8192\n{extra}\n",
        extra = env("GW_GATEWAY_EXTRA", "").replace(';', "\n")
    );
    let mut config = Config::parse(&text, "<bench>")?;
    config.storage.path = env("GW_DATA", "./data").into();
    config.routes = vec![RouteConfig {
        name: "bench".into(),
        prefix: env("GW_PREFIX", "/"),
        upstream: env("GW_UPSTREAM", "http://127.0.0.1:18080").parse()?,
        max_pending: env("GW_MAX_PENDING", "10000").parse()?,
        timeout: Duration::from_secs(30),
        strip_prefix: false,
    }];
    Ok(config)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let stats = Stats::new(config.stats.tracked_clients);
    let shared = Shared::new(Arc::new(config), stats.clone(), IsolationSet::in_memory());
    let ipam = vpcbox::ipam::Ipam::open(
        &shared.config.storage.path,
        vpcbox::app::store::ipam_options(&shared.config),
        stats.clone(),
    )?;
    ipam.spawn(&shared.tracker, shared.cancel.clone());
    let (_snap_tx, snapshots) = tokio::sync::watch::channel(Arc::default());
    let api = ApiContext::new(&shared, ipam, snapshots, Arc::from("bench-token"));
    api.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    // The memory governor, as `vpcbox run` has it (RSS sampling, heap purge
    // on its timer and after a burst of closed connections, shedding).
    let governor = vpcbox::memory::Governor::new(
        stats.clone(),
        shared.events.clone(),
        shared.config.memory.clone(),
    );
    shared
        .tracker
        .spawn(governor.run(shared.updates.subscribe(), shared.cancel.clone()));
    let gw = Gateway::bind(&shared, api)?;
    eprintln!("gateway_bench listening on {}", gw.local_addr()?);
    if let Ok(path) = std::env::var("GW_PID_FILE") {
        std::fs::write(path, std::process::id().to_string())?;
    }
    shared.tracker.spawn(gw.run());
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    shared.cancel.cancel();
    shared.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.tracker.wait()).await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let threads: usize = env("GW_THREADS", "1").parse()?;
    // GW_RUNTIME=current: one current-thread runtime (GW_THREADS ignored).
    let rt = if env("GW_RUNTIME", "multi") == "current" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?
    };
    rt.block_on(run(config()?))
}
