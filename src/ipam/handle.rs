//! The IPAM: subnets, pools, reservations and leases, durably in sled.
//!
//! Reads (`lease_of`, `subnet_for_relay`, …) are answered from an in-memory
//! index rebuilt from the store at open. Writes are planned against that
//! index ([`state`]) under one std mutex (critical sections are short and
//! never span an await), then queued together with an overlay that reads
//! consult, and applied to the index. The group committer ([`commit`])
//! applies everything queued as ONE atomic sled write (outside that mutex,
//! under one that keeps writes reaching sled in order), flushes, and only
//! then answers the waiting operations; a crash before that loses writes
//! whose callers were never answered, so DHCP never ACKs a lease that is
//! not on disk. Without a running committer (before `spawn`, after
//! shutdown) writes are applied and flushed inline.
//!
//! A failed store write or flush (a full disk, an I/O error) answers every
//! write that was not durable with an error, reopens the store and rebuilds
//! the index from disk (so memory never runs ahead of it), and refuses
//! writes until a probe write succeeds; reads and cached renewals go on.
//! Only the committer thread probes: without one (before `spawn`, after
//! shutdown) a failure refuses writes until the next start.
//!
//! Memory per lease is kept small for million-lease stores: ~5 bytes per
//! address of each subnet's CIDR, a 12-byte MAC→IPv4 entry per client; the
//! full record (hostname, times) stays in sled and is read on demand.

mod admin;
mod commit;
mod dump;
mod error;
mod index;
mod isolation;
mod model;
mod ops;
mod page;
mod plan;
mod reaper;
mod record;
mod state;
mod store;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dump::Dump;
pub use error::IpamError;
pub use model::{
    DhcpOption, IpamOptions, Lease, LeaseFilter, LeaseState, PoolRange, PoolUsage, Port,
    ReservationSpec, StaticRoute, SubnetSpec,
};
pub use page::LeasePage;
pub use store::{SledStore, Store, SCHEMA};

use commit::Committer;
use state::{State, Tuning};

use crate::stats::Stats;

pub struct Ipam {
    path: PathBuf,
    store: Arc<dyn Store>,
    /// std Mutex: every critical section is CPU-only and never held across
    /// an await.
    state: Mutex<State>,
    /// Held while queued writes go to the store, so they reach it in
    /// order; taken before `state` (see [`Ipam::lock_store`]).
    applying: Mutex<()>,
    opts: IpamOptions,
    stats: Arc<Stats>,
    committer: Committer,
    /// Wakes the reaper when an earlier deadline appears.
    reaper_wake: Notify,
    /// Last publication of lease counts (std Mutex: a timestamp, CPU-only).
    published: Mutex<Option<Instant>>,
    /// The subnet specs, in address order: read lock-free on the DHCP hot
    /// path (which subnet does this packet belong to); replaced wholesale
    /// under the state lock when subnets change (rare).
    specs: ArcSwap<Vec<Arc<SubnetSpec>>>,
    /// Lease counts changed since the last publication.
    dirty: std::sync::atomic::AtomicBool,
    /// The operator event log (storage degraded / recovered).
    events: std::sync::OnceLock<Arc<crate::events::EventLog>>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

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
        };
        let started = Instant::now();
        let state = admin::load(store.as_ref(), tuning)?;
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
            events: Default::default(),
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
        let thread = match Committer::start(self) {
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

    /// Where storage failures and recoveries are reported.
    pub fn attach_events(&self, events: Arc<crate::events::EventLog>) {
        let _ = self.events.set(events);
    }

    /// Why writes are refused, if they are (the store failed).
    pub fn degraded(&self) -> Option<String> {
        self.lock().degraded.clone()
    }

    pub fn options(&self) -> &IpamOptions {
        &self.opts
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.store.size_on_disk()
    }

    /// The state, for a caller that applies the queued writes itself
    /// ([`Ipam::drain`]): no committer's apply is in flight while held.
    fn lock_store(&self) -> (MutexGuard<'_, ()>, MutexGuard<'_, State>) {
        let applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        (applying, self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the index possibly behind
        // the store; the next restart rebuilds it, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_specs(&self, st: &State) {
        self.specs.store(Arc::new(
            st.subnets.iter().map(|s| s.spec.clone()).collect(),
        ));
    }

    pub fn subnets(&self) -> Vec<Arc<SubnetSpec>> {
        self.specs.load().to_vec()
    }

    pub fn subnet(&self, id: &str) -> Option<Arc<SubnetSpec>> {
        self.specs.load().iter().find(|s| s.id == id).cloned()
    }

    /// The subnet a relayed request belongs to: the one listing `giaddr`
    /// in its relays (a giaddr merely inside a subnet's CIDR is anyone's
    /// to forge). Lock-free.
    pub fn subnet_for_relay(&self, giaddr: Ipv4Addr) -> Option<Arc<SubnetSpec>> {
        self.specs
            .load()
            .iter()
            .find(|s| s.relays.contains(&giaddr))
            .cloned()
    }

    /// Whether `addr` is a relay some subnet lists. Lock-free.
    pub fn is_relay(&self, addr: Ipv4Addr) -> bool {
        self.specs.load().iter().any(|s| s.relays.contains(&addr))
    }

    /// The subnet of a directly attached interface with address `iface_addr`.
    /// Lock-free.
    pub fn subnet_for_interface(&self, iface_addr: Ipv4Addr) -> Option<Arc<SubnetSpec>> {
        self.specs
            .load()
            .iter()
            .find(|s| s.cidr.contains(&iface_addr))
            .cloned()
    }

    /// Writes ops planned under the state lock: store first, then memory,
    /// then (if `durable`) queue a commit. Returns the commit ticket.
    fn write(
        &self,
        st: &mut State,
        changes: &[state::Change],
        durable: bool,
    ) -> Result<Option<commit::Ticket>, IpamError> {
        if changes.is_empty() {
            return Ok(None);
        }
        st.writable()?;
        let ops = State::ops(changes);
        let queued = self.store_apply(st, ops)?;
        self.stats
            .ipam
            .writes_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let before = st.next_expiry;
        st.apply(changes);
        if st.next_expiry < before {
            self.reaper_wake.notify_one();
        }
        let ips: Vec<u32> = changes.iter().map(|c| c.ip).collect();
        // Queued writes always get a commit (a non-durable one just drops
        // its ticket) so the committer applies them.
        Ok((durable || queued)
            .then(|| self.committer.submit(st, &ips, &self.stats))
            .filter(|_| durable))
    }

    /// Writes `ops`: queued for the committer's next transaction while it
    /// runs (returns true), else applied at once.
    fn store_apply(&self, st: &mut State, ops: Vec<store::Op>) -> Result<bool, IpamError> {
        st.writable()?;
        if !st.committer_live {
            self.store.apply(&ops)?;
            return Ok(false);
        }
        for op in &ops {
            if op.tree == store::TreeId::Leases {
                if let Some(ip) = record::key_ip(&op.key) {
                    st.overlay.insert(ip, (st.drains, op.value.clone()));
                }
            }
        }
        st.queue.extend(ops);
        Ok(true)
    }

    /// Applies every queued write as one atomic write, under the state lock
    /// taken with [`Ipam::lock_store`] (by whoever needs the store itself
    /// current), so writes reach sled in order.
    fn drain(&self, st: &mut State) -> Result<(), IpamError> {
        if st.queue.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut st.queue);
        st.drains += 1;
        st.overlay.clear();
        self.store
            .apply(&ops)
            .inspect_err(|e| self.roll_back(st, e))
    }

    /// Returns once `ticket`'s write is durable (nothing to wait for
    /// without one). Cancel-safe: dropping it abandons the wait, never the
    /// write.
    async fn durable(&self, ticket: Option<commit::Ticket>) -> Result<(), IpamError> {
        match ticket {
            Some(t) => self.wait(t).await,
            None => Ok(()),
        }
    }

    /// [`Committer::wait`]; a failed inline flush (no committer) rolls the
    /// index back as a failed batch does.
    async fn wait(&self, t: commit::Ticket) -> Result<(), IpamError> {
        let inline = t.inline();
        let res = self
            .committer
            .wait(t, self.store.as_ref(), &self.stats)
            .await;
        if let (Err(e), true) = (&res, inline) {
            let (_applying, mut st) = self.lock_store();
            self.roll_back(&mut st, e);
        }
        res
    }

    /// Waits until everything written so far is durable (used at shutdown
    /// and by `vpcbox db`). Cancel-safe: dropping it only stops the wait.
    pub async fn flush(&self) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            self.committer.submit(&mut st, &[], &self.stats)
        };
        self.durable(Some(ticket)).await
    }
}
