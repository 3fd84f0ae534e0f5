//! The bounded per-client table (top-K heavy hitters plus an "others" row).
//!
//! PLACEHOLDER API — the stats work replaces the internals with a
//! space-saving top-K structure and 1 s / 10 s rates; the public API stays.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::client::ClientKey;
use crate::stats::DropReason;

/// One row of the client table as published in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientRow {
    /// `None` for the "others" row.
    pub client: Option<ClientKey>,
    pub requests: u64,
    pub served: u64,
    pub drops: u64,
    pub drops_by_reason: Vec<(DropReason, u64)>,
    pub pending: i64,
    pub rate_1s: f64,
    pub rate_10s: f64,
    pub served_rate_1s: f64,
    /// Space-saving over-estimation bound (0 when exact).
    pub error: u64,
}

#[derive(Debug)]
pub struct ClientTable {
    capacity: usize,
    inner: Mutex<HashMap<ClientKey, ClientRow>>,
}

impl ClientTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(HashMap::new()),
        }
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// A packet or request from `client` arrived.
    pub fn request(&self, client: &ClientKey, now: Instant) {
        let _ = (client, now);
    }
    /// A request from `client` was answered.
    pub fn served(&self, client: &ClientKey, now: Instant) {
        let _ = (client, now);
    }
    /// A request from `client` was refused for `reason`.
    pub fn drop(&self, client: &ClientKey, reason: DropReason, now: Instant) {
        let _ = (client, reason, now);
    }
    /// In-flight work for `client` changed by `delta`.
    pub fn pending(&self, client: &ClientKey, delta: i64) {
        let _ = (client, delta);
    }
    /// Rows sorted by 10 s rate, busiest first, plus the "others" row last.
    pub fn rows(&self, now: Instant) -> Vec<ClientRow> {
        let _ = now;
        let _ = &self.inner;
        Vec::new()
    }
    /// Number of tracked clients (never above `capacity`).
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
