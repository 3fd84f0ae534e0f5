//! `GET /v1/status`: one page for `vpcbox status` and scripts — health,
//! overload, memory by owner, the top clients, pending work per route, the
//! DHCP queue and the isolations, from the latest snapshot. Admin token.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::admin::{client_view, ClientView};
use super::context::ApiContext;
use super::error::ApiError;
use super::response::Resp;
use super::wire::ok;
use crate::isolation::IsolationEntry;
use crate::stats::{MemoryByOwner, OverloadState};

/// How many of the busiest clients the page lists.
pub const TOP: usize = 5;

#[derive(Serialize)]
struct Status {
    taken_at: u64,
    uptime_seconds: u64,
    health: Health,
    overload: Overload,
    memory: Memory,
    clients: Vec<ClientView>,
    routes: Vec<Route>,
    dhcp: Dhcp,
    isolations: Vec<IsolationEntry>,
}

#[derive(Serialize)]
struct Health {
    /// Every listener bound and the store open.
    ready: bool,
    /// Why the store refuses writes, if it does.
    storage_degraded: Option<String>,
}

#[derive(Serialize)]
struct Overload {
    state: &'static str,
    rss_bytes: u64,
    budget_bytes: u64,
}

#[derive(Serialize)]
struct Memory {
    rss_bytes: u64,
    heap_allocated: u64,
    heap_resident: u64,
    by_owner: MemoryByOwner,
}

#[derive(Serialize)]
struct Route {
    name: String,
    pending: i64,
    max_pending: u64,
}

#[derive(Serialize)]
struct Dhcp {
    queue_depth: i64,
    queue_capacity: u64,
}

pub fn status(ctx: &ApiContext) -> Result<Resp, ApiError> {
    let snap = ctx.snapshots.borrow().clone();
    let m = &snap.memory;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    ok(&Status {
        taken_at: secs(snap.taken_at),
        uptime_seconds: snap.uptime.as_secs(),
        health: Health {
            ready: ctx.ready.load(Ordering::Acquire),
            storage_degraded: ctx.ipam.degraded(),
        },
        overload: Overload {
            state: OverloadState::from_gauge(m.overload_state).as_str(),
            rss_bytes: m.rss_bytes,
            budget_bytes: m.budget_bytes,
        },
        memory: Memory {
            rss_bytes: m.rss_bytes,
            heap_allocated: m.heap_allocated,
            heap_resident: m.heap_resident,
            by_owner: m.by_owner,
        },
        clients: snap
            .clients
            .iter()
            .filter(|r| r.client.is_some())
            .take(TOP)
            .map(|r| client_view(ctx, r))
            .collect(),
        routes: snap
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                pending: r.pending,
                max_pending: r.max_pending,
            })
            .collect(),
        dhcp: Dhcp {
            queue_depth: snap.dhcp_queue_depth,
            queue_capacity: snap.dhcp_queue_capacity,
        },
        isolations: ctx.isolation.entries(),
    })
}
