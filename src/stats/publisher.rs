//! Turns the live counters into an `Arc<Snapshot>` on a watch channel.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::counters::Stats;
use super::labels::{DhcpKind, DhcpOutcome, DropReason};
use super::owners::{Measured, MemoryByOwner};
use super::snapshot::{MemorySnapshot, RouteSnapshot, Snapshot};

pub struct Publisher {
    stats: Arc<Stats>,
    tx: watch::Sender<Arc<Snapshot>>,
    seq: u64,
}

impl Publisher {
    pub fn new(stats: Arc<Stats>) -> (Self, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        (Self { stats, tx, seq: 0 }, rx)
    }

    /// Builds one snapshot from the counters as they are now.
    pub fn take(&mut self, now: Instant) -> Snapshot {
        self.seq += 1;
        build(&self.stats, self.seq, now)
    }

    /// Publishes every `interval` until `cancel` fires. Cancel-safe.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let snap = self.take(Instant::now());
                    self.tx.send_replace(Arc::new(snap));
                }
            }
        }
    }
}

/// RSS by owner from the governor's last sample.
fn by_owner(stats: &Stats) -> MemoryByOwner {
    let m = &stats.memory;
    MemoryByOwner::divide(&Measured {
        rss: m.rss_bytes.load(Relaxed),
        metadata: m.heap_metadata.load(Relaxed),
        dirty: m.heap_dirty.load(Relaxed),
        store: m.owner_store.load(Relaxed),
        clients: m.owner_clients.load(Relaxed),
        dhcp: m.owner_dhcp.load(Relaxed),
        gateway: m.owner_gateway.load(Relaxed),
        unowned: m.heap_unowned.load(Relaxed),
    })
}

fn build(stats: &Stats, seq: u64, now: Instant) -> Snapshot {
    let dhcp_packets = DhcpKind::ALL
        .iter()
        .flat_map(|k| DhcpOutcome::ALL.iter().map(move |o| (*k, *o)))
        .map(|(k, o)| (k, o, stats.dhcp.packets(k, o)))
        .collect();
    let routes: Vec<RouteSnapshot> = stats
        .gateway
        .routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| RouteSnapshot {
            name: r.name.clone(),
            pending: r.pending.load(Relaxed),
            max_pending: r.max_pending,
            codes: r.codes(),
            total: r.total(),
        })
        .collect();
    let m = &stats.memory;
    Snapshot {
        seq,
        taken_at: SystemTime::now(),
        uptime: now.saturating_duration_since(stats.started),
        dhcp_packets,
        dhcp_total: stats.dhcp.total(),
        dhcp_queue_depth: stats.dhcp.queue_depth.load(Relaxed),
        dhcp_queue_capacity: stats.dhcp.queue_capacity.load(Relaxed),
        dhcp_tracked_clients: stats.dhcp.tracked_clients.load(Relaxed),
        dhcp6_malformed: stats.dhcp.malformed6_counts(),
        dhcp6_relayed: DhcpKind::ALL
            .iter()
            .flat_map(|k| DhcpOutcome::ALL.iter().map(move |o| (*k, *o)))
            .map(|(k, o)| (k, o, stats.dhcp.relayed6(k, o)))
            .filter(|(_, _, n)| *n > 0)
            .collect(),
        ipam_commit_seconds: stats.ipam.commit_seconds.snapshot(),
        ipam_batch_size: stats.ipam.batch_size.snapshot(),
        ipam_commits_waiting: stats.ipam.commits_waiting.load(Relaxed),
        ipam_writes_total: stats.ipam.writes_total.load(Relaxed),
        storage_errors_total: stats.ipam.storage_errors_total.load(Relaxed),
        storage_degraded: stats.ipam.storage_degraded.load(Relaxed),
        cluster_fenced: stats.ipam.cluster_fenced.load(Relaxed),
        cluster_nodes: stats.ipam.cluster_nodes.load(Relaxed),
        ipam_leases: stats
            .ipam
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        gateway_requests_total: routes.iter().map(|r| r.total).sum(),
        routes,
        gateway_streams: stats.gateway.streams.load(Relaxed),
        gateway_connections: stats.gateway.connections.load(Relaxed),
        gateway_response_buffered: stats.gateway.response_buffered.load(Relaxed),
        gateway_response_budget: stats.gateway.response_budget.load(Relaxed),
        gateway_response_resets: [
            stats.gateway.response_resets_stall.load(Relaxed),
            stats.gateway.response_resets_budget.load(Relaxed),
            stats.gateway.response_resets_shed.load(Relaxed),
        ],
        memory: MemorySnapshot {
            rss_bytes: m.rss_bytes.load(Relaxed),
            budget_bytes: m.budget_bytes.load(Relaxed),
            heap_allocated: m.heap_allocated.load(Relaxed),
            heap_resident: m.heap_resident.load(Relaxed),
            heap_retained: m.heap_retained.load(Relaxed),
            heap_shrinks: m.heap_shrinks.load(Relaxed),
            last_reclaim_bytes: m.last_reclaim_bytes.load(Relaxed),
            overload_state: m.overload_state.load(Relaxed),
            by_owner: by_owner(stats),
        },
        drops: DropReason::ALL
            .iter()
            .map(|r| (*r, stats.drops(*r)))
            .collect(),
        isolated_clients: stats.isolated_clients.load(Relaxed),
        clients: stats.clients.rows(now),
    }
}
