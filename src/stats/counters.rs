//! The live counters every service bumps: atomics, no locks on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::clients::ClientTable;
use super::histogram::Histogram;
use super::labels::{
    DhcpKind, DhcpOutcome, DropReason, OverloadState, N_KIND, N_OUTCOME, N_REASON,
};
use super::snapshot::LeaseCount;

#[derive(Debug, Default)]
pub struct DhcpStats {
    packets: [[AtomicU64; N_OUTCOME]; N_KIND],
    /// The DHCPv6 part of `packets` that came inside a Relay-Forw.
    relayed6: [[AtomicU64; N_OUTCOME]; N_KIND],
    pub queue_depth: AtomicI64,
    pub queue_capacity: AtomicU64,
    /// Keys the per-client quota tracked at its last housekeeping, before
    /// the idle ones were forgotten (at most `dhcp.max_client_quotas`).
    pub tracked_clients: AtomicU64,
    /// DHCPv6 datagrams refused on the wire, by the decoder's reason name
    /// (a fixed set of static names, so the map stays small). std Mutex:
    /// one insert-or-add, never held across an await.
    malformed6: Mutex<BTreeMap<&'static str, u64>>,
}

impl DhcpStats {
    pub fn packet(&self, kind: DhcpKind, outcome: DhcpOutcome) {
        self.packets[kind as usize][outcome as usize].fetch_add(1, Relaxed);
    }
    pub fn packets(&self, kind: DhcpKind, outcome: DhcpOutcome) -> u64 {
        self.packets[kind as usize][outcome as usize].load(Relaxed)
    }
    /// [`Self::packet`], and as relayed too for a DHCPv6 message that came
    /// inside a Relay-Forw.
    pub fn packet_via(&self, kind: DhcpKind, outcome: DhcpOutcome, relayed: bool) {
        self.packet(kind, outcome);
        if relayed {
            self.relayed6[kind as usize][outcome as usize].fetch_add(1, Relaxed);
        }
    }
    pub fn relayed6(&self, kind: DhcpKind, outcome: DhcpOutcome) -> u64 {
        self.relayed6[kind as usize][outcome as usize].load(Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.packets.iter().flatten().map(|a| a.load(Relaxed)).sum()
    }
    /// Counts a DHCPv6 datagram refused for `reason` (a static name).
    pub fn malformed6(&self, reason: &'static str) {
        let mut m = self.malformed6.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(reason).or_default() += 1;
    }
    /// `(reason, count)` of [`Self::malformed6`], by name.
    pub fn malformed6_counts(&self) -> Vec<(&'static str, u64)> {
        let m = self.malformed6.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(r, n)| (*r, *n)).collect()
    }
}

#[derive(Debug, Default)]
pub struct IpamStats {
    /// Seconds from a durable write's submission to its flush completing.
    pub commit_seconds: Histogram,
    /// Operations per group commit.
    pub batch_size: Histogram,
    pub commits_waiting: AtomicI64,
    pub writes_total: AtomicU64,
    /// Store writes or flushes that failed (each rolls memory back to disk).
    pub storage_errors_total: AtomicU64,
    /// 1 while the store refuses writes after a failure, else 0.
    pub storage_degraded: AtomicI64,
    /// Cluster mode: 1 while this node may not write (no etcd, or its etcd
    /// lease is lost or about to be), else 0.
    pub cluster_fenced: AtomicI64,
    /// Cluster mode: live members seen in etcd (0 outside a cluster).
    pub cluster_nodes: AtomicI64,
    /// Set by the IPAM when lease states change (not a hot path: at most a
    /// few times a second). std Mutex: short critical sections, never held
    /// across an await.
    pub leases: Mutex<Vec<LeaseCount>>,
}

/// Per-route gateway counters. Status codes index a flat array so the hot
/// path is one atomic add.
#[derive(Debug)]
pub struct RouteStats {
    pub name: String,
    pub max_pending: u64,
    pub pending: AtomicI64,
    codes: Box<[AtomicU64]>,
}

impl RouteStats {
    pub fn new(name: impl Into<String>, max_pending: u64) -> Self {
        Self {
            name: name.into(),
            max_pending,
            pending: AtomicI64::new(0),
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    pub fn response(&self, code: u16) {
        if let Some(c) = self.codes.get(usize::from(code)) {
            c.fetch_add(1, Relaxed);
        }
    }
    /// `(code, count)` for every code seen at least once.
    pub fn codes(&self) -> Vec<(u16, u64)> {
        self.codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then(|| (u16::try_from(i).unwrap_or(0), n))
            })
            .collect()
    }
    pub fn total(&self) -> u64 {
        self.codes.iter().map(|c| c.load(Relaxed)).sum()
    }
}

#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Routes registered at start (and on reload); read-mostly.
    pub routes: Mutex<Vec<Arc<RouteStats>>>,
    pub streams: AtomicI64,
    pub connections: AtomicI64,
    pub body_bytes_in_use: AtomicI64,
    pub body_budget: AtomicU64,
    /// Response bytes taken from upstreams or the API and not yet written
    /// to a client socket.
    pub response_buffered: AtomicI64,
    pub response_budget: AtomicU64,
    /// Streams reset for holding response bytes: no byte accepted within
    /// `send_stall_timeout`, the budget full, the governor shedding.
    pub response_resets_stall: AtomicU64,
    pub response_resets_budget: AtomicU64,
    pub response_resets_shed: AtomicU64,
}

impl GatewayStats {
    /// The route named `name`, registering it if new.
    pub fn route(&self, name: &str, max_pending: u64) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routes.iter().find(|r| r.name == name) {
            return r.clone();
        }
        let r = Arc::new(RouteStats::new(name, max_pending));
        routes.push(r.clone());
        r
    }
}

#[derive(Debug, Default)]
pub struct MemoryStats {
    pub rss_bytes: AtomicU64,
    pub budget_bytes: AtomicU64,
    pub heap_allocated: AtomicU64,
    pub heap_resident: AtomicU64,
    pub heap_retained: AtomicU64,
    pub heap_shrinks: AtomicU64,
    pub last_reclaim_bytes: AtomicU64,
    /// An [`OverloadState`] as its gauge value.
    pub overload_state: AtomicU64,
    /// The resident pages each owner's jemalloc arena has in use, the
    /// pages in use in the automatic arenas, jemalloc's dirty pages and
    /// its metadata (`crate::heap`).
    pub owner_store: AtomicU64,
    pub owner_clients: AtomicU64,
    pub owner_dhcp: AtomicU64,
    pub owner_gateway: AtomicU64,
    pub heap_unowned: AtomicU64,
    pub heap_dirty: AtomicU64,
    pub heap_metadata: AtomicU64,
}

/// Everything the services count. Shared as `Arc<Stats>`.
#[derive(Debug)]
pub struct Stats {
    pub started: std::time::Instant,
    pub dhcp: DhcpStats,
    pub ipam: IpamStats,
    pub gateway: GatewayStats,
    pub memory: MemoryStats,
    pub clients: ClientTable,
    drops: [AtomicU64; N_REASON],
    pub isolated_clients: AtomicU64,
}

impl Stats {
    /// `client_capacity` bounds the per-client table (top-K).
    pub fn new(client_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            started: std::time::Instant::now(),
            dhcp: DhcpStats::default(),
            ipam: IpamStats::default(),
            gateway: GatewayStats::default(),
            memory: MemoryStats::default(),
            clients: ClientTable::new(client_capacity),
            drops: Default::default(),
            isolated_clients: AtomicU64::new(0),
        })
    }

    /// Counts a drop by reason and attributes it to the client.
    pub fn drop_for(
        &self,
        client: &crate::client::ClientKey,
        reason: DropReason,
        now: std::time::Instant,
    ) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
        self.clients.drop(client, reason, now);
    }

    /// Counts a drop that cannot be attributed (no client identity yet).
    pub fn drop_anonymous(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }

    /// The memory governor's current state.
    pub fn overload(&self) -> OverloadState {
        OverloadState::from_gauge(self.memory.overload_state.load(Relaxed))
    }

    /// Whether the governor sheds load: services refuse new work.
    pub fn shedding(&self) -> bool {
        self.overload() == OverloadState::Shed
    }
}
