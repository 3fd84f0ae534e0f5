//! The immutable view of every statistic, published a few times a second.

use std::time::{Duration, SystemTime};

use super::clients::ClientRow;
use super::histogram::HistogramSnapshot;
use super::labels::{DhcpKind, DhcpOutcome, DropReason};
use super::owners::MemoryByOwner;

/// One lease-count gauge: `vpcbox_ipam_leases{subnet,state}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseCount {
    pub subnet: String,
    pub state: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RouteSnapshot {
    pub name: String,
    pub pending: i64,
    pub max_pending: u64,
    /// `(status code, count)`.
    pub codes: Vec<(u16, u64)>,
    pub total: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemorySnapshot {
    pub rss_bytes: u64,
    pub budget_bytes: u64,
    pub heap_allocated: u64,
    pub heap_resident: u64,
    pub heap_retained: u64,
    pub heap_shrinks: u64,
    pub last_reclaim_bytes: u64,
    pub overload_state: u64,
    /// RSS divided among its owners (`vpcbox_memory_bytes{owner}`).
    pub by_owner: MemoryByOwner,
}

/// Everything the dashboard, `/metrics` and the admin API show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// Monotonic sequence number of this snapshot.
    pub seq: u64,
    pub taken_at: SystemTime,
    pub uptime: Duration,
    /// `(type, result, count)`.
    pub dhcp_packets: Vec<(DhcpKind, DhcpOutcome, u64)>,
    pub dhcp_total: u64,
    pub dhcp_queue_depth: i64,
    pub dhcp_queue_capacity: u64,
    pub dhcp_tracked_clients: u64,
    /// DHCPv6 datagrams refused on the wire: `(reason, count)`.
    pub dhcp6_malformed: Vec<(&'static str, u64)>,
    /// DHCPv6 messages that came inside a Relay-Forw (also in
    /// `dhcp_packets`): `(type, result, count)`, the seen ones.
    pub dhcp6_relayed: Vec<(DhcpKind, DhcpOutcome, u64)>,
    pub ipam_commit_seconds: HistogramSnapshot,
    pub ipam_batch_size: HistogramSnapshot,
    pub ipam_commits_waiting: i64,
    pub ipam_writes_total: u64,
    pub storage_errors_total: u64,
    pub storage_degraded: i64,
    pub cluster_fenced: i64,
    pub cluster_nodes: i64,
    pub ipam_leases: Vec<LeaseCount>,
    pub routes: Vec<RouteSnapshot>,
    pub gateway_requests_total: u64,
    pub gateway_streams: i64,
    pub gateway_connections: i64,
    pub gateway_response_buffered: i64,
    pub gateway_response_budget: u64,
    /// Streams reset: stall, budget, shed.
    pub gateway_response_resets: [u64; 3],
    pub memory: MemorySnapshot,
    pub drops: Vec<(DropReason, u64)>,
    pub isolated_clients: u64,
    /// Busiest clients first; the "others" row (client `None`) last.
    pub clients: Vec<ClientRow>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            seq: 0,
            taken_at: SystemTime::UNIX_EPOCH,
            uptime: Duration::ZERO,
            dhcp_packets: Vec::new(),
            dhcp_total: 0,
            dhcp_queue_depth: 0,
            dhcp_queue_capacity: 0,
            dhcp_tracked_clients: 0,
            dhcp6_malformed: Vec::new(),
            dhcp6_relayed: Vec::new(),
            ipam_commit_seconds: HistogramSnapshot::default(),
            ipam_batch_size: HistogramSnapshot::default(),
            ipam_commits_waiting: 0,
            ipam_writes_total: 0,
            storage_errors_total: 0,
            storage_degraded: 0,
            cluster_fenced: 0,
            cluster_nodes: 0,
            ipam_leases: Vec::new(),
            routes: Vec::new(),
            gateway_requests_total: 0,
            gateway_streams: 0,
            gateway_connections: 0,
            gateway_response_buffered: 0,
            gateway_response_budget: 0,
            gateway_response_resets: [0; 3],
            memory: MemorySnapshot::default(),
            drops: Vec::new(),
            isolated_clients: 0,
            clients: Vec::new(),
        }
    }
}
