//! The bounded per-client table: top-K heavy hitters (see [`super::summary`])
//! plus an "others" row, so a flood of spoofed MACs costs fixed memory and
//! the rows still add up to everything counted.
//!
//! `request` and `drop` rank a client (admit it to the table); `served` and
//! `pending` never do: for a client pushed out they land in "others".

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::labels::{DropReason, N_REASON};
use super::summary::Summary;
use super::window::{Window, TICK, TICKS_PER_SEC};
use crate::client::ClientKey;
use crate::heap::{self, Owner};

/// Buckets in the request window: 10 s.
const REQ_TICKS: usize = 10 * TICKS_PER_SEC as usize;
/// Buckets in the served window: 1 s.
const SERVED_TICKS: usize = TICKS_PER_SEC as usize;

/// One row of the client table as published in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientRow {
    /// `None` for the "others" row.
    pub client: Option<ClientKey>,
    /// Requests counted while this client was in the table (exact; the
    /// ones before it was last admitted are in "others").
    pub requests: u64,
    pub served: u64,
    pub drops: u64,
    /// Only the reasons seen at least once, in [`DropReason::ALL`] order.
    pub drops_by_reason: Vec<(DropReason, u64)>,
    /// In-flight work. The "others" row can briefly hold work of clients
    /// that were pushed out while it was in flight.
    pub pending: i64,
    /// Requests per second over the last 1 s (current bucket included).
    pub rate_1s: f64,
    /// Requests per second over the last 10 s.
    pub rate_10s: f64,
    /// Answers per second over the last 1 s.
    pub served_rate_1s: f64,
    /// Space-saving over-estimation bound (0 when exact): this client may
    /// have sent up to `error` more requests and drops before it was last
    /// admitted, which are counted in "others".
    pub error: u64,
}

/// Everything counted for one client (or for "others").
#[derive(Debug, Default)]
struct Counts {
    requests: u64,
    served: u64,
    drops: u64,
    by_reason: [u64; N_REASON],
    pending: i64,
    req_window: Window<REQ_TICKS>,
    served_window: Window<SERVED_TICKS>,
}

impl Counts {
    /// Adds `other` in. Runs on every eviction, so it skips the parts a
    /// zero total proves empty (the windows only count what the totals do).
    fn absorb(&mut self, other: &Self) {
        self.pending = self.pending.saturating_add(other.pending);
        if other.requests > 0 {
            self.requests += other.requests;
            self.req_window.merge(&other.req_window);
        }
        if other.served > 0 {
            self.served += other.served;
            self.served_window.merge(&other.served_window);
        }
        if other.drops > 0 {
            self.drops += other.drops;
            for (a, b) in self.by_reason.iter_mut().zip(other.by_reason) {
                *a += b;
            }
        }
    }

    fn request(&mut self, tick: u64) {
        self.requests += 1;
        self.req_window.add(tick, 1);
    }

    fn served(&mut self, tick: u64) {
        self.served += 1;
        self.served_window.add(tick, 1);
    }

    fn row(&self, client: Option<ClientKey>, error: u64, tick: u64) -> ClientRow {
        let per_sec = |n: u64, ticks: usize| n as f64 * TICKS_PER_SEC as f64 / ticks as f64;
        ClientRow {
            client,
            requests: self.requests,
            served: self.served,
            drops: self.drops,
            drops_by_reason: DropReason::ALL
                .iter()
                .zip(self.by_reason)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (*r, n))
                .collect(),
            pending: self.pending,
            rate_1s: per_sec(self.req_window.sum(tick, TICKS_PER_SEC), SERVED_TICKS),
            rate_10s: per_sec(self.req_window.sum(tick, REQ_TICKS as u64), REQ_TICKS),
            served_rate_1s: per_sec(self.served_window.sum(tick, TICKS_PER_SEC), SERVED_TICKS),
            error,
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// The first instant seen; ticks count from it.
    origin: Option<Instant>,
    summary: Summary,
    /// Per-slot counts, indexed like the summary's slots.
    counts: Vec<Counts>,
    others: Counts,
}

impl Inner {
    fn tick(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        tick_since(origin, now)
    }

    /// Counts one unit of activity for `client` and returns its counts,
    /// admitting it (and folding out the evicted client) if needed.
    fn touch(&mut self, client: &ClientKey) -> &mut Counts {
        match self.summary.touch(client) {
            Some((id, evicted)) => {
                let c = &mut self.counts[id];
                if evicted {
                    self.others.absorb(c);
                    *c = Counts::default();
                }
                c
            }
            None => &mut self.others,
        }
    }

    /// `client`'s counts if it is in the table, else "others".
    fn existing(&mut self, client: &ClientKey) -> &mut Counts {
        match self.summary.find(client) {
            Some(id) => &mut self.counts[id],
            None => &mut self.others,
        }
    }
}

fn tick_since(origin: Instant, now: Instant) -> u64 {
    let ms = now.saturating_duration_since(origin).as_millis();
    u64::try_from(ms / TICK.as_millis()).unwrap_or(u64::MAX)
}

/// The per-client table. One std `Mutex`: an update is a few hash and array
/// operations, never across an await, so the lock is rarely contended and
/// sharding would only complicate the top-K bookkeeping.
#[derive(Debug)]
pub struct ClientTable {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ClientTable {
    /// A table that tracks at most `capacity` clients individually.
    pub fn new(capacity: usize) -> Self {
        let _owner = heap::scope(Owner::Clients);
        let summary = Summary::new(capacity);
        Self {
            capacity,
            inner: Mutex::new(Inner {
                origin: None,
                counts: (0..capacity).map(|_| Counts::default()).collect(),
                summary,
                others: Counts::default(),
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A packet or request from `client` arrived. Call it for every arrival,
    /// including ones later dropped: the rates show what a client sends.
    pub fn request(&self, client: &ClientKey, now: Instant) {
        let _owner = heap::scope(Owner::Clients);
        let mut inner = self.lock();
        let tick = inner.tick(now);
        inner.touch(client).request(tick);
    }

    /// A request from `client` was answered.
    pub fn served(&self, client: &ClientKey, now: Instant) {
        let _owner = heap::scope(Owner::Clients);
        let mut inner = self.lock();
        let tick = inner.tick(now);
        inner.existing(client).served(tick);
    }

    /// A request from `client` was refused for `reason`.
    pub fn drop(&self, client: &ClientKey, reason: DropReason, now: Instant) {
        let _owner = heap::scope(Owner::Clients);
        let mut inner = self.lock();
        inner.tick(now);
        let c = inner.touch(client);
        c.drops += 1;
        c.by_reason[reason as usize] += 1;
    }

    /// In-flight work for `client` changed by `delta`. Never admits a
    /// client. A decrement below zero for a client that was pushed out and
    /// came back takes the rest from "others", which holds its earlier
    /// in-flight work, so neither row drifts.
    pub fn pending(&self, client: &ClientKey, delta: i64) {
        let _owner = heap::scope(Owner::Clients);
        let mut inner = self.lock();
        let inner = &mut *inner;
        match inner.summary.find(client) {
            Some(id) => {
                let c = &mut inner.counts[id];
                c.pending = c.pending.saturating_add(delta);
                if c.pending < 0 {
                    let spill = std::mem::take(&mut c.pending);
                    inner.others.pending = inner.others.pending.saturating_add(spill);
                }
            }
            None => inner.others.pending = inner.others.pending.saturating_add(delta),
        }
    }

    /// Rows sorted by 10 s rate, busiest first (then by requests); the
    /// "others" row is always present and always last.
    pub fn rows(&self, now: Instant) -> Vec<ClientRow> {
        let inner = self.lock();
        let tick = inner.origin.map_or(0, |o| tick_since(o, now));
        let mut rows: Vec<ClientRow> = inner
            .summary
            .occupied()
            .map(|id| {
                let key = inner.summary.key(id).cloned();
                inner.counts[id].row(key, inner.summary.error(id), tick)
            })
            .collect();
        rows.sort_by(|a, b| {
            b.rate_10s
                .total_cmp(&a.rate_10s)
                .then(b.requests.cmp(&a.requests))
                .then_with(|| a.client.cmp(&b.client))
        });
        rows.push(inner.others.row(None, 0, tick));
        rows
    }

    /// The row of one client, if it is in the table.
    pub fn get(&self, client: &ClientKey, now: Instant) -> Option<ClientRow> {
        let inner = self.lock();
        let tick = inner.origin.map_or(0, |o| tick_since(o, now));
        let id = inner.summary.find(client)?;
        Some(inner.counts[id].row(Some(client.clone()), inner.summary.error(id), tick))
    }

    /// Number of tracked clients (never above `capacity`).
    pub fn len(&self) -> usize {
        self.lock().summary.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A panic elsewhere while holding the lock leaves counters that are
    /// still usable, so poisoning is ignored rather than spread.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(super) fn assert_valid(&self) {
        self.lock().summary.assert_valid();
    }
}
