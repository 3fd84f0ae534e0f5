//! The IPAM handle: the sled store, the in-memory index behind one std
//! mutex, the group committer and the lock-free subnet list. Its methods
//! live in the sibling files by concern (open, write, ops, admin, ...).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::commit::Committer;
use super::hooks::{ClusterHooks, ClusterReads};
use super::model::IpamOptions;
use super::spec::SubnetSpec;
use super::state::State;
use super::store::Store;
use super::v6::Subnet6Spec;
use crate::events::EventLog;
use crate::heap::{self, Owner};
use crate::stats::Stats;

pub struct Ipam {
    pub(super) path: PathBuf,
    pub(super) store: Arc<dyn Store>,
    /// std Mutex: every critical section is CPU-only and never held across
    /// an await.
    pub(super) state: Mutex<State>,
    /// Held while queued writes go to the store, so they reach it in
    /// order; taken before `state` (see [`Ipam::lock_store`]).
    pub(super) applying: Mutex<()>,
    pub(super) opts: IpamOptions,
    pub(super) stats: Arc<Stats>,
    pub(super) committer: Committer,
    /// Wakes the reaper when an earlier deadline appears.
    pub(super) reaper_wake: Notify,
    /// Last publication of lease counts (std Mutex: a timestamp, CPU-only).
    pub(super) published: Mutex<Option<Instant>>,
    /// The subnet specs, in address order: read lock-free on the DHCP hot
    /// path (which subnet does this packet belong to); replaced wholesale
    /// under the state lock when subnets change (rare).
    pub(super) specs: ArcSwap<Vec<Arc<SubnetSpec>>>,
    /// The v6 subnet specs, in prefix order: what the DHCPv6 server reads
    /// per message, lock-free; replaced with `specs`.
    pub(super) specs6: ArcSwap<Vec<Subnet6Spec>>,
    /// Lease counts changed since the last publication.
    pub(super) dirty: AtomicBool,
    /// The operator event log (storage degraded / recovered).
    pub(super) events: OnceLock<Arc<EventLog>>,
    /// Cluster mode: the cluster layer's answers (see [`ClusterHooks`]).
    pub(super) cluster: OnceLock<Arc<dyn ClusterHooks>>,
    /// Cluster mode: etcd's word on a binding (see [`ClusterReads`]).
    pub(super) reads: OnceLock<Arc<dyn ClusterReads>>,
    /// `max_leases_per_port` for DHCPv6 relay ports (0: no cap).
    pub(super) port_cap6: AtomicU32,
}

/// The locked state; what is allocated or freed while it is held is the
/// store's (the lease index, its maps, the queued writes).
pub(super) struct Locked<'a> {
    // Declared first: unlocked before the owner is restored.
    guard: MutexGuard<'a, State>,
    _owner: heap::Scope,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// Where storage failures and recoveries are reported.
    pub fn attach_events(&self, events: Arc<EventLog>) {
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
    pub(super) fn lock_store(&self) -> (MutexGuard<'_, ()>, Locked<'_>) {
        let applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        (applying, self.lock())
    }

    pub(super) fn lock(&self) -> Locked<'_> {
        let owner = heap::scope(Owner::Store);
        // A panic while holding the lock leaves the index possibly behind
        // the store; the next restart rebuilds it, so keep serving.
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Locked {
            guard,
            _owner: owner,
        }
    }

    pub(super) fn refresh_specs(&self, st: &State) {
        self.specs.store(Arc::new(
            st.subnets.iter().map(|s| s.spec.clone()).collect(),
        ));
        self.specs6.store(Arc::new(
            st.v6.subnets.iter().map(|s| (*s.spec).clone()).collect(),
        ));
    }

    /// The v6 subnets, config and API ones alike, as one shared list (the
    /// DHCPv6 server's view). Lock-free.
    pub fn subnets6_shared(&self) -> Arc<Vec<Subnet6Spec>> {
        self.specs6.load_full()
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
}
