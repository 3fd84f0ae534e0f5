//! The live view the `/ui` page draws: one JSON object per update of
//! `/v1/events/stream`, built from the latest snapshot (the one the
//! dashboard, `/metrics` and `/v1/clients` read), the rate history, the
//! subnets' usage and the event log. Client identities (the clients table,
//! the event log) go only to readers who may see them, as on `/metrics`.

use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::admin::{client_view, ClientView};
use super::context::ApiContext;
use super::ipam::UsageView;
use crate::events::Event;
use crate::ipam::{ClusterNodeView, PoolUsage, SubnetSpec};
use crate::stats::{History, MemoryByOwner, OverloadState, Snapshot};

/// Client rows per update (the busiest; "others" holds the rest).
pub const CLIENT_ROWS: usize = 100;
/// Events per update (the newest).
pub const EVENTS: usize = 50;

/// The header: uptime, the governor's state, memory, connections.
#[derive(Debug, Serialize)]
struct Header {
    overload: &'static str,
    rss_bytes: u64,
    budget_bytes: u64,
    heap_allocated: u64,
    heap_resident: u64,
    heap_retained: u64,
    heap_shrinks: u64,
    isolated: u64,
    connections: i64,
    streams: i64,
    event_streams: usize,
    dhcp_queue_depth: i64,
    dhcp_queue_capacity: u64,
    storage_degraded: bool,
}

/// The latest per-second point of the charts; `n` counts points so far.
#[derive(Debug, Serialize)]
struct Rate {
    n: u64,
    dhcp: u64,
    api: u64,
    drops: u64,
}

#[derive(Debug, Serialize)]
struct RouteView<'a> {
    name: &'a str,
    pending: i64,
    max_pending: u64,
    total: u64,
}

/// One subnet with its pool usage.
#[derive(Debug, Serialize)]
pub struct SubnetUsage {
    id: String,
    cidr: String,
    usage: UsageView,
}

/// The subnets in `specs` order with their usage. Takes the IPAM's state
/// lock: call it off the gateway's threads.
pub fn subnets(ctx: &ApiContext) -> Vec<SubnetUsage> {
    let usage: Vec<PoolUsage> = ctx.ipam.utilisation();
    let specs: Vec<std::sync::Arc<SubnetSpec>> = ctx.ipam.subnets();
    specs
        .iter()
        .map(|s| SubnetUsage {
            id: s.id.clone(),
            cidr: s.cidr.to_string(),
            usage: usage
                .iter()
                .find(|u| u.subnet == s.id)
                .map(UsageView::from)
                .unwrap_or_default(),
        })
        .collect()
}

/// One update.
#[derive(Debug, Serialize)]
struct Update<'a> {
    seq: u64,
    uptime_s: u64,
    taken_at_ms: u64,
    header: Header,
    rate: Rate,
    /// Drops per second by reason over the last point, busiest first.
    drops_by_reason: Vec<(&'static str, u64)>,
    routes: Vec<RouteView<'a>>,
    subnets: &'a [SubnetUsage],
    /// `None` for a reader who may not see client identities.
    clients: Option<Vec<ClientView>>,
    clients_tracked: usize,
    events: Option<&'a [Event]>,
    /// RSS by owner; the page draws it as a table of owner → bytes.
    memory: &'a MemoryByOwner,
    /// Cluster mode: this node's fence and the live nodes (`None` alone).
    cluster: Option<ClusterView>,
}

#[derive(Debug, Serialize)]
struct ClusterView {
    /// Why this node may not write, if it may not.
    fenced: Option<String>,
    nodes: Vec<ClusterNodeView>,
}

/// What one update is built from.
pub struct Sources<'a> {
    pub ctx: &'a ApiContext,
    pub snap: &'a Snapshot,
    pub history: &'a History,
    pub subnets: &'a [SubnetUsage],
    pub events: &'a [Event],
    pub event_streams: usize,
}

/// The update as JSON, with client identities (`private`) or without.
pub fn update(src: &Sources<'_>, seq: u64, private: bool) -> Vec<u8> {
    let snap = src.snap;
    let m = &snap.memory;
    let (dhcp, api, drops) = src.history.latest();
    let clients = private.then(|| {
        let (named, others) = snap.clients.split_at(snap.clients.len().saturating_sub(1));
        named
            .iter()
            .take(CLIENT_ROWS)
            .chain(others)
            .map(|r| client_view(src.ctx, r))
            .collect()
    });
    let u = Update {
        seq,
        uptime_s: snap.uptime.as_secs(),
        taken_at_ms: snap
            .taken_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        header: Header {
            overload: OverloadState::from_gauge(m.overload_state).as_str(),
            rss_bytes: m.rss_bytes,
            budget_bytes: m.budget_bytes,
            heap_allocated: m.heap_allocated,
            heap_resident: m.heap_resident,
            heap_retained: m.heap_retained,
            heap_shrinks: m.heap_shrinks,
            isolated: snap.isolated_clients,
            connections: snap.gateway_connections,
            streams: snap.gateway_streams,
            event_streams: src.event_streams,
            dhcp_queue_depth: snap.dhcp_queue_depth,
            dhcp_queue_capacity: snap.dhcp_queue_capacity,
            storage_degraded: snap.storage_degraded != 0,
        },
        rate: Rate {
            n: src.history.added,
            dhcp,
            api,
            drops,
        },
        drops_by_reason: src
            .history
            .drops_by_reason
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect(),
        routes: snap
            .routes
            .iter()
            .map(|r| RouteView {
                name: &r.name,
                pending: r.pending,
                max_pending: r.max_pending,
                total: r.total,
            })
            .collect(),
        subnets: src.subnets,
        clients,
        clients_tracked: snap.clients.len().saturating_sub(1),
        events: private.then_some(src.events),
        memory: &m.by_owner,
        cluster: src.ctx.ipam.cluster_nodes().map(|nodes| ClusterView {
            fenced: src.ctx.ipam.fenced(),
            nodes,
        }),
    };
    to_json(&u)
}

/// The rate history the charts start from.
pub fn history(h: &History) -> Vec<u8> {
    to_json(&serde_json::json!({
        "n": h.added,
        "dhcp": h.dhcp,
        "api": h.api,
        "drops": h.drops,
    }))
}

/// Our own types with string keys: encoding cannot fail; if it ever did,
/// the reader gets an empty object rather than half of one.
fn to_json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;
    use crate::stats::ClientRow;

    fn row(client: Option<ClientKey>, rate: f64) -> ClientRow {
        ClientRow {
            client,
            requests: 10,
            served: 5,
            drops: 5,
            drops_by_reason: Vec::new(),
            pending: 0,
            rate_1s: rate,
            rate_10s: rate,
            served_rate_1s: 0.0,
            error: 0,
        }
    }

    #[test]
    fn identities_only_in_the_private_update_and_rows_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let api = super::super::context::test_context(dir.path());
        let mut clients: Vec<ClientRow> = (0..CLIENT_ROWS + 20)
            .map(|i| {
                row(
                    Some(ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, i as u8]))),
                    1.0,
                )
            })
            .collect();
        clients.push(row(None, 0.0));
        let snap = Snapshot {
            clients,
            ..Snapshot::default()
        };
        let history = History::default();
        let events = [Event {
            at_ms: 1,
            kind: crate::events::EventKind::Isolation,
            message: "isolated mac:02:00:00:00:00:01".into(),
        }];
        let src = Sources {
            ctx: &api,
            snap: &snap,
            history: &history,
            subnets: &[],
            events: &events,
            event_streams: 1,
        };
        let private: serde_json::Value = serde_json::from_slice(&update(&src, 7, true)).unwrap();
        let rows = private["clients"].as_array().unwrap();
        assert_eq!(rows.len(), CLIENT_ROWS + 1, "the busiest, then others");
        assert!(rows.last().unwrap()["client"].is_null());
        assert_eq!(private["clients_tracked"], CLIENT_ROWS + 20);
        assert_eq!(
            private["events"][0]["message"],
            "isolated mac:02:00:00:00:00:01"
        );
        assert_eq!(private["seq"], 7);
        assert!(private["memory"]["store"].is_u64());
        let public = update(&src, 7, false);
        let text = String::from_utf8(public).unwrap();
        assert!(
            !text.contains("10.0.0.") && !text.contains("mac:"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["clients"].is_null() && v["events"].is_null());
        assert_eq!(v["header"]["overload"], "normal");
    }
}
