//! The isolation set: clients the operator has cut off.
//!
//! Both admission points (DHCP before decoding, the gateway at accept and per
//! request) consult it before any other work, so reads are lock-free: the set
//! is an immutable `HashSet` behind an `ArcSwap`, replaced wholesale on every
//! change (changes are rare, operator-driven). Changes are persisted through
//! an [`IsolationStore`] before they take effect in memory, so an isolation
//! the operator saw confirmed survives a restart.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::client::ClientKey;
use crate::events::{EventKind, EventLog};
use crate::heap::{self, Owner};
use crate::stats::Stats;

/// How many change-log entries are kept for the dashboard.
pub const LOG_CAPACITY: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IsolationEntry {
    pub client: ClientKey,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// Who or what asked for it ("dashboard", "api", "cli").
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Isolated,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IsolationEvent {
    pub at: u64,
    pub client: ClientKey,
    pub change: Change,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("isolation store: {message}")]
pub struct StoreError {
    pub message: String,
    /// The store refuses writes for now (`degraded`, or `cluster`: its
    /// etcd is away): nothing was written, and the same change may succeed
    /// later. The API's 503 code; `None`: the store failed.
    pub unavailable: Option<&'static str>,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: None,
        }
    }
}

/// Durable home of the isolation set (the sled store in production).
pub trait IsolationStore: Send + Sync {
    fn load(&self) -> Result<Vec<IsolationEntry>, StoreError>;
    /// Must be durable when it returns.
    fn put(&self, entry: &IsolationEntry) -> Result<(), StoreError>;
    /// Must be durable when it returns.
    fn remove(&self, client: &ClientKey) -> Result<(), StoreError>;
}

/// An in-memory store, for tests and for `--demo` without a data directory.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Vec<IsolationEntry>>);

impl IsolationStore for MemoryStore {
    fn load(&self) -> Result<Vec<IsolationEntry>, StoreError> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    fn put(&self, entry: &IsolationEntry) -> Result<(), StoreError> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|e| e.client != entry.client);
        v.push(entry.clone());
        Ok(())
    }
    fn remove(&self, client: &ClientKey) -> Result<(), StoreError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| &e.client != client);
        Ok(())
    }
}

pub struct IsolationSet {
    current: ArcSwap<HashSet<ClientKey>>,
    /// The entries as last published, for readers: they never wait on
    /// `entries`, which a writer holds across its fsync.
    listed: ArcSwap<Vec<IsolationEntry>>,
    /// `vpcbox_isolated_clients` (kept equal to the set's size) and the
    /// operator event log every change is written to.
    sinks: std::sync::OnceLock<(Arc<Stats>, Arc<EventLog>)>,
    entries: Mutex<Vec<IsolationEntry>>,
    log: Mutex<VecDeque<IsolationEvent>>,
    store: Box<dyn IsolationStore>,
}

impl std::fmt::Debug for IsolationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationSet")
            .field("len", &self.len())
            .finish()
    }
}

impl IsolationSet {
    /// Loads the persisted set.
    pub fn open(store: Box<dyn IsolationStore>) -> Result<Arc<Self>, StoreError> {
        let _owner = heap::scope(Owner::Clients);
        let entries = store.load()?;
        let set = entries.iter().map(|e| e.client.clone()).collect();
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(set),
            listed: ArcSwap::from_pointee(entries.clone()),
            sinks: std::sync::OnceLock::new(),
            entries: Mutex::new(entries),
            log: Mutex::new(VecDeque::new()),
            store,
        }))
    }

    pub fn in_memory() -> Arc<Self> {
        Self::open(Box::<MemoryStore>::default())
            .unwrap_or_else(|_| unreachable!("the memory store cannot fail"))
    }

    /// From now on, keeps `stats.isolated_clients` equal to the set's size
    /// and writes every change, whoever made it, to `events`.
    pub fn attach(&self, stats: Arc<Stats>, events: Arc<EventLog>) {
        let (stats, _) = self.sinks.get_or_init(|| (stats, events));
        stats.isolated_clients.store(self.len() as u64, Relaxed);
    }

    /// Lock-free; the hot-path check.
    pub fn is_isolated(&self, client: &ClientKey) -> bool {
        let set = self.current.load();
        !set.is_empty() && set.contains(client)
    }

    /// Lock-free check on a raw hardware address, before any decoding.
    pub fn is_isolated_mac(&self, mac: [u8; 6]) -> bool {
        self.is_isolated(&ClientKey::Mac(mac))
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Isolates `client`; `Ok(false)` if it already was. Durable on return.
    pub fn isolate(&self, client: &ClientKey, source: &str) -> Result<bool, StoreError> {
        let _owner = heap::scope(Owner::Clients);
        // std Mutex: serialises writers only (rare), never held across await.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.iter().any(|e| &e.client == client) {
            return Ok(false);
        }
        let entry = IsolationEntry {
            client: client.clone(),
            since: unix_now(),
            source: source.to_owned(),
        };
        self.store.put(&entry)?;
        entries.push(entry);
        self.publish(&entries);
        self.record(client, Change::Isolated, source);
        Ok(true)
    }

    /// Releases `client`; `Ok(false)` if it was not isolated. Durable on return.
    pub fn release(&self, client: &ClientKey, source: &str) -> Result<bool, StoreError> {
        let _owner = heap::scope(Owner::Clients);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.iter().any(|e| &e.client == client) {
            return Ok(false);
        }
        self.store.remove(client)?;
        entries.retain(|e| &e.client != client);
        self.publish(&entries);
        self.record(client, Change::Released, source);
        Ok(true)
    }

    /// Re-reads the set from its store (another cluster node changed it):
    /// each client that came or went is logged with the source `cluster`.
    pub fn reload(&self) -> Result<(), StoreError> {
        let fresh = self.store.load()?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let had = |c: &ClientKey, list: &[IsolationEntry]| list.iter().any(|e| &e.client == c);
        let came: Vec<ClientKey> = fresh
            .iter()
            .filter(|e| !had(&e.client, &entries))
            .map(|e| e.client.clone())
            .collect();
        let went: Vec<ClientKey> = entries
            .iter()
            .filter(|e| !had(&e.client, &fresh))
            .map(|e| e.client.clone())
            .collect();
        *entries = fresh;
        self.publish(&entries);
        for c in came {
            self.record(&c, Change::Isolated, "cluster");
        }
        for c in went {
            self.record(&c, Change::Released, "cluster");
        }
        Ok(())
    }

    /// The current entries, oldest first.
    /// Lock-free (see `listed`).
    pub fn entries(&self) -> Vec<IsolationEntry> {
        self.listed.load().as_ref().clone()
    }

    pub fn entry(&self, client: &ClientKey) -> Option<IsolationEntry> {
        self.listed
            .load()
            .iter()
            .find(|e| &e.client == client)
            .cloned()
    }

    /// The change log, oldest first (bounded to [`LOG_CAPACITY`]).
    pub fn events(&self) -> Vec<IsolationEvent> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn publish(&self, entries: &[IsolationEntry]) {
        self.current
            .store(Arc::new(entries.iter().map(|e| e.client.clone()).collect()));
        self.listed.store(Arc::new(entries.to_vec()));
        if let Some((stats, _)) = self.sinks.get() {
            stats.isolated_clients.store(entries.len() as u64, Relaxed);
        }
    }

    fn record(&self, client: &ClientKey, change: Change, source: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(IsolationEvent {
            at: unix_now(),
            client: client.clone(),
            change,
            source: source.to_owned(),
        });
        tracing::info!(client = %client, ?change, source, "isolation changed");
        if let Some((_, events)) = self.sinks.get() {
            let verb = match change {
                Change::Isolated => "isolated",
                Change::Released => "released",
            };
            events.push(EventKind::Isolation, format!("{verb} {client} ({source})"));
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
