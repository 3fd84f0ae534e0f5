//! The dashboard's state: the latest snapshot, a minute of rate history, the
//! isolation set as last read, fetched subnet/lease data, and what the
//! operator chose (view, sort, filter, selection). Changed only by
//! [`UiState::update`] and friends (new data) and by [`super::keys::on_key`]
//! (keys), so both are plain functions of the state and easy to test.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::data::{ClusterRow, DataCache, DataRequest, DataUpdate, LeaseQuery};
use super::history::History;
pub use super::kinds::{ClientState, Input, RowRef, ServedSince, SortKey, Status, View};
use crate::client::ClientKey;
use crate::events::Event;
use crate::stats::{ClientRow, DropReason, Snapshot};

/// A client counts as limited this long after its last non-isolation drop.
pub const LIMITED_FOR: Duration = Duration::from_secs(2);
/// Leases fetched for the Leases view.
pub const LEASE_LIMIT: usize = 500;
/// Clients (from the top of the table) whose lease the Clients view shows.
pub const LEASE_LOOKUPS: usize = 100;

#[derive(Debug, Clone, Copy)]
struct Mark {
    drops: u64,
    until: Duration,
    /// The snapshot that last listed this client.
    seen: u64,
}

#[derive(Debug, Default)]
pub struct UiState {
    pub view: View,
    pub sort: SortKey,
    pub filter: String,
    pub lease_search: String,
    pub editing: Option<Input>,
    pub help: bool,
    pub status: Option<Status>,
    /// The selected client; `None` means the top row.
    pub selected: Option<ClientKey>,
    /// First line shown in the Leases and Events views.
    pub scroll: usize,
    pub snapshot: Arc<Snapshot>,
    pub history: History,
    pub isolated: HashSet<ClientKey>,
    pub data: DataCache,
    /// Cluster mode: the header's cluster line.
    pub cluster: Option<ClusterRow>,
    /// Newest last.
    pub events: Vec<Event>,
    /// `[memory] budget`, used when the snapshot does not carry one.
    pub budget: u64,
    rows: Vec<RowRef>,
    limited: HashMap<ClientKey, Mark>,
}

impl UiState {
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Takes in a new snapshot (a repeat of the current one is ignored).
    pub fn update(&mut self, snap: Arc<Snapshot>) {
        if Arc::ptr_eq(&snap, &self.snapshot) || (snap.seq != 0 && snap.seq == self.snapshot.seq) {
            return;
        }
        self.history.observe(&snap);
        self.mark_limited(&snap);
        self.track_served(&snap);
        self.snapshot = snap;
        self.refresh_rows();
    }

    /// Replaces the isolation set as last read from `IsolationSet`.
    pub fn set_isolated(&mut self, isolated: HashSet<ClientKey>) {
        if isolated != self.isolated {
            self.isolated = isolated;
            self.refresh_rows();
        }
    }

    pub fn apply_data(&mut self, mut u: DataUpdate) {
        if let Some(c) = u.cluster.take() {
            self.cluster = c;
        }
        let filtering = u.lease_of.is_some() && !self.filter.is_empty();
        self.data.apply(u);
        if filtering {
            self.refresh_rows();
        }
    }

    /// The visible client rows, filtered and sorted; "others" last.
    pub fn rows(&self) -> &[RowRef] {
        &self.rows
    }

    pub fn row(&self, r: &RowRef) -> Option<&ClientRow> {
        self.snapshot.clients.get(r.idx)
    }

    /// Rows that can be selected: all but the "others" row.
    pub fn selectable_rows(&self) -> usize {
        let others = self
            .rows
            .last()
            .and_then(|r| self.row(r))
            .is_some_and(|c| c.client.is_none());
        self.rows.len() - usize::from(others)
    }

    /// Position of the selection in [`Self::rows`]; the top row when none
    /// is chosen; `None` when the chosen client is not visible.
    pub fn selected_index(&self) -> Option<usize> {
        match &self.selected {
            None => (self.selectable_rows() > 0).then_some(0),
            Some(k) => self
                .rows
                .iter()
                .position(|r| self.row(r).and_then(|c| c.client.as_ref()) == Some(k)),
        }
    }

    /// The selected row's client (`None` for the "others" row or nothing).
    pub fn selected_client(&self) -> Option<ClientKey> {
        let i = self.selected_index()?;
        self.row(self.rows.get(i)?)?.client.clone()
    }

    pub fn state_of(&self, row: &ClientRow) -> ClientState {
        match &row.client {
            Some(k) if self.isolated.contains(k) => ClientState::Isolated,
            Some(k)
                if self
                    .limited
                    .get(k)
                    .is_some_and(|m| m.until > self.snapshot.uptime) =>
            {
                ClientState::Limited
            }
            _ => ClientState::Ok,
        }
    }

    /// What the next data fetch should bring back for the current view.
    pub fn data_request(&self) -> DataRequest {
        DataRequest {
            subnets: self.view == View::Subnets,
            leases: (self.view == View::Leases).then(|| LeaseQuery {
                search: self.lease_search.clone(),
                limit: LEASE_LIMIT,
            }),
            clients: match self.view {
                View::Clients => self
                    .rows
                    .iter()
                    .take(LEASE_LOOKUPS)
                    .filter_map(|r| self.row(r)?.client.clone())
                    .filter(ClientKey::is_dhcp)
                    .collect(),
                _ => Vec::new(),
            },
            cluster: self.snapshot.cluster_nodes > 0,
        }
    }

    /// Recomputes the visible rows after a change of data, filter or sort.
    pub fn refresh_rows(&mut self) {
        let needle = self.filter.to_ascii_lowercase();
        let clients = &self.snapshot.clients;
        let mut rows: Vec<RowRef> = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| needle.is_empty() || self.matches(c, &needle))
            .map(|(idx, _)| RowRef { idx })
            .collect();
        let key = self.sort;
        rows.sort_unstable_by(|a, b| {
            let (x, y) = (&clients[a.idx], &clients[b.idx]);
            x.client
                .is_none()
                .cmp(&y.client.is_none())
                .then_with(|| compare(key, x, y))
        });
        self.rows = rows;
    }

    fn matches(&self, c: &ClientRow, needle: &str) -> bool {
        let Some(k) = &c.client else { return false };
        k.to_string().contains(needle)
            || self.state_of(c).label() == needle
            || self
                .data
                .lease_of
                .get(k)
                .is_some_and(|ip| ip.to_string().contains(needle))
    }

    /// Updates drop counts in place (no re-keying of 10,000 clients per
    /// frame); clients that left the table are pruned.
    fn mark_limited(&mut self, snap: &Snapshot) {
        for row in &snap.clients {
            let Some(k) = &row.client else { continue };
            let drops = row.drops - isolated_drops(row).min(row.drops);
            match self.limited.get_mut(k) {
                Some(m) => {
                    if drops > m.drops {
                        m.until = snap.uptime + LIMITED_FOR;
                    }
                    m.drops = drops;
                    m.seen = snap.seq;
                }
                None => {
                    let mark = Mark {
                        drops,
                        until: Duration::ZERO,
                        seen: snap.seq,
                    };
                    self.limited.insert(k.clone(), mark);
                }
            }
        }
        if self.limited.len() > snap.clients.len() {
            self.limited.retain(|_, m| m.seen == snap.seq);
        }
    }

    /// Clients whose drop marks are kept (at most one snapshot's rows).
    #[cfg(test)]
    pub(super) fn limited_len(&self) -> usize {
        self.limited.len()
    }

    fn track_served(&mut self, snap: &Snapshot) {
        let Some(Status::Isolated { client, since }) = &mut self.status else {
            return;
        };
        let served = snap
            .clients
            .iter()
            .find(|r| r.client.as_ref() == Some(client))
            .map_or(0, |r| r.served);
        match since {
            None => {
                *since = Some(ServedSince {
                    at: snap.uptime,
                    served,
                    rate: None,
                    settled: false,
                })
            }
            Some(s) if !s.settled => {
                s.at = snap.uptime;
                s.served = served;
                s.settled = true;
            }
            Some(s) => {
                let dt = snap.uptime.saturating_sub(s.at).as_secs_f64();
                if dt > 0.0 {
                    s.rate = Some(served.saturating_sub(s.served) as f64 / dt);
                }
            }
        }
    }

    /// Records the outcome of an isolate (`isolate`) or release request.
    pub fn isolation_done(&mut self, client: ClientKey, isolate: bool, result: Result<(), String>) {
        self.status = Some(match (result, isolate) {
            (Err(e), _) => Status::Error(format!("{client}: {e}")),
            (Ok(()), true) => {
                self.isolated.insert(client.clone());
                Status::Isolated {
                    client,
                    since: None,
                }
            }
            (Ok(()), false) => {
                self.isolated.remove(&client);
                Status::Released(client)
            }
        });
        self.refresh_rows();
    }
}

fn isolated_drops(row: &ClientRow) -> u64 {
    row.drops_by_reason
        .iter()
        .find(|(r, _)| *r == DropReason::Isolated)
        .map_or(0, |(_, n)| *n)
}

fn compare(key: SortKey, x: &ClientRow, y: &ClientRow) -> std::cmp::Ordering {
    let f = |a: f64, b: f64| b.total_cmp(&a);
    let by_rate = f(x.rate_10s, y.rate_10s)
        .then_with(|| f(x.rate_1s, y.rate_1s))
        .then_with(|| y.requests.cmp(&x.requests))
        .then_with(|| x.client.cmp(&y.client));
    match key {
        SortKey::Rate10s => by_rate,
        SortKey::Rate1s => f(x.rate_1s, y.rate_1s).then(by_rate),
        SortKey::Drops => y.drops.cmp(&x.drops).then(by_rate),
        SortKey::Pending => y.pending.cmp(&x.pending).then(by_rate),
        SortKey::Client => x.client.cmp(&y.client),
    }
}
