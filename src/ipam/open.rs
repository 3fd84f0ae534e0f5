//! Opening the IPAM and starting its committer thread and reaper.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::commit::Committer;
use super::error::IpamError;
use super::flusher;
use super::handle::Ipam;
use super::load::load;
use super::model::IpamOptions;
use super::reaper;
use super::state::Tuning;
use super::store::{SledStore, Store};
use crate::stats::Stats;

impl Ipam {
    /// Opens (or creates) the store in `dir` and rebuilds the in-memory
    /// index. Synchronous; call before starting the runtime's services.
    pub fn open(dir: &Path, opts: IpamOptions, stats: Arc<Stats>) -> Result<Arc<Ipam>, IpamError> {
        let store = SledStore::open(dir, opts.cache_capacity)?;
        Self::with_store(dir.to_path_buf(), Arc::new(store), opts, stats)
    }

    /// Opens the IPAM over any [`Store`].
    pub fn with_store(
        path: PathBuf,
        store: Arc<dyn Store>,
        opts: IpamOptions,
        stats: Arc<Stats>,
    ) -> Result<Arc<Ipam>, IpamError> {
        let tuning = Tuning {
            cache_threshold: opts.cache_threshold,
            offer_hold: u32::try_from(opts.offer_hold.as_secs()).unwrap_or(u32::MAX),
            quarantine: u32::try_from(opts.decline_quarantine.as_secs()).unwrap_or(u32::MAX),
            cluster: None,
        };
        let started = Instant::now();
        let state = load(store.as_ref(), tuning)?;
        let ipam = Arc::new(Ipam {
            path,
            store,
            state: Mutex::new(state),
            applying: Mutex::new(()),
            committer: Committer::new(opts.commit_interval),
            opts,
            stats,
            reaper_wake: Notify::new(),
            published: Mutex::new(None),
            dirty: Default::default(),
            specs: ArcSwap::default(),
            specs6: ArcSwap::default(),
            events: Default::default(),
            cluster: Default::default(),
            reads: Default::default(),
            port_cap6: Default::default(),
        });
        ipam.publish_counts(true);
        ipam.refresh_specs(&ipam.lock());
        tracing::info!(path = ?ipam.path, elapsed = ?started.elapsed(), "ipam opened");
        Ok(ipam)
    }

    /// Starts the group committer and the lease reaper on `tracker`; both
    /// stop on `cancel` (the committer after flushing what is queued).
    pub fn spawn(self: &Arc<Self>, tracker: &TaskTracker, cancel: CancellationToken) {
        self.spawn_committer(tracker, cancel.clone());
        tracker.spawn(reaper::run(self.clone(), cancel));
    }

    /// Starts only the group committer (tests drive expiry themselves):
    /// its thread runs until `cancel` fires (then flushes what is queued)
    /// or the IPAM is dropped; `tracker` waits for it.
    pub(crate) fn spawn_committer(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        let thread = match flusher::start(self) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no committer thread; every write flushes on its own");
                return;
            }
        };
        self.lock().committer_live = true;
        let weak = Arc::downgrade(self);
        tracker.spawn(async move {
            cancel.cancelled().await;
            if let Some(ipam) = weak.upgrade() {
                ipam.committer.stop();
            }
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
    }
}
