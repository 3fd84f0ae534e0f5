//! Storage behind a small trait: named trees of ordered byte keys, atomic
//! multi-tree writes, and a flush that makes every earlier write durable;
//! sled is the backend.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::heap::{self, Owner};

use super::error::IpamError;

/// Bumped when the on-disk layout changes; a store written by a newer
/// vpcbox is refused rather than misread.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TreeId {
    Subnets,
    /// IPv4 (`u32::to_be_bytes`) → encoded lease record.
    Leases,
    /// Client key text → IPv4 of its latest lease. No longer written or
    /// read (the index is rebuilt from the lease records, which name their
    /// client): stores written before 2026-11-27 still have it, and an
    /// import clears it.
    Clients,
    Reservations,
    Isolations,
    Meta,
    /// DHCPv6 subnets: id → JSON spec.
    Subnets6,
    /// DHCPv6 bindings: address or prefix (16 bytes, then its length) →
    /// encoded binding record.
    Leases6,
}

impl TreeId {
    pub const ALL: [TreeId; 8] = [
        Self::Subnets,
        Self::Leases,
        Self::Clients,
        Self::Reservations,
        Self::Isolations,
        Self::Meta,
        Self::Subnets6,
        Self::Leases6,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Subnets => "subnets",
            Self::Leases => "leases",
            Self::Clients => "clients",
            Self::Reservations => "reservations",
            Self::Isolations => "isolations",
            Self::Meta => "meta",
            Self::Subnets6 => "subnets6",
            Self::Leases6 => "leases6",
        }
    }
}

/// One write: `None` removes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub tree: TreeId,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), IpamError>> + 'a>;

pub trait Store: Send + Sync {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, IpamError>;
    /// Keys in `[from, to)` in byte order (`to = None`: to the end).
    fn scan(&self, tree: TreeId, from: &[u8], to: Option<&[u8]>) -> KvIter<'_>;
    /// Applies all ops atomically (one transaction); visible at once, durable
    /// after the next flush.
    fn apply(&self, ops: &[Op]) -> Result<(), IpamError>;
    /// Makes every write applied before the call durable (blocking).
    fn flush(&self) -> Result<(), IpamError>;
    /// Same, without blocking the calling thread.
    fn flush_async(&self) -> BoxFuture<'static, Result<(), IpamError>>;
    fn size_on_disk(&self) -> u64;
    /// Drops the open database and opens it again from disk: after a failed
    /// write or flush, what is on disk is all that counts.
    fn reopen(&self) -> Result<(), IpamError>;
}

struct Sled {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

/// sled behind a lock that [`Store::reopen`] takes: sled 0.34 refuses every
/// write after one I/O error (its global error is only reset by opening the
/// database again), so recovering from a full disk needs a fresh handle.
pub struct SledStore {
    dir: PathBuf,
    cache_capacity: u64,
    /// None while a reopen failed (every call errs until one succeeds).
    inner: RwLock<Option<Sled>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if absent) the store in `dir`. Another process holding
    /// it gives `Locked`; garbage gives `Corrupt` (sled may panic on garbage,
    /// so the open runs under `catch_unwind`).
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Self, IpamError> {
        let _owner = heap::scope(Owner::Store);
        let store = Self {
            dir: dir.to_path_buf(),
            cache_capacity,
            inner: RwLock::new(Some(open_sled(dir, cache_capacity)?)),
        };
        store.check_schema(dir)?;
        Ok(store)
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Sled>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The tree `t` of the open database (a cheap handle).
    fn tree(&self, t: TreeId) -> Result<sled::Tree, IpamError> {
        match self.read().as_ref() {
            // The vector is built from TreeId::ALL in order.
            Some(s) => Ok(s.trees[TreeId::ALL.iter().position(|x| *x == t).unwrap_or(0)].clone()),
            None => Err(closed()),
        }
    }

    fn db(&self) -> Result<sled::Db, IpamError> {
        self.read()
            .as_ref()
            .map(|s| s.db.clone())
            .ok_or_else(closed)
    }

    fn check_schema(&self, path: &Path) -> Result<(), IpamError> {
        match self.get(TreeId::Meta, b"schema")? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| IpamError::Corrupt {
                        path: path.to_path_buf(),
                        reason: "bad schema record".into(),
                    })?;
                if found > SCHEMA {
                    return Err(IpamError::NewerSchema {
                        found,
                        supported: SCHEMA,
                    });
                }
                Ok(())
            }
            None => {
                let empty = TreeId::ALL
                    .iter()
                    .all(|t| self.tree(*t).is_ok_and(|t| t.is_empty()));
                if !empty {
                    return Err(IpamError::Corrupt {
                        path: path.to_path_buf(),
                        reason: "data without a schema record".into(),
                    });
                }
                self.apply(&[Op {
                    tree: TreeId::Meta,
                    key: b"schema".to_vec(),
                    value: Some(SCHEMA.to_be_bytes().to_vec()),
                }])?;
                self.flush()
            }
        }
    }
}

/// sled's I/O threads can still hold its files, and so the lock on them,
/// a moment after the last handle went (a log write past its waiter's
/// wake-up, a segment truncation): waiting here means a dropped store's
/// directory is free, for this process as for another.
impl Drop for SledStore {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if inner.take().is_some() && !wait_released(&self.dir, RELEASE_WAIT) {
            tracing::warn!(dir = ?self.dir, "sled still holds the store's lock after its close");
        }
    }
}

/// How long a dropped store waits for sled to let go of its lock.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How long a reopen after a failed write waits for the same.
const REOPEN_WAIT: Duration = Duration::from_secs(1);

/// Waits (at most `limit`) until nobody holds the lock sled takes on
/// `dir/db` (a `flock`, which conflicts between two opens of the file even
/// within one process); true once free.
fn wait_released(dir: &Path, limit: Duration) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + limit;
    loop {
        let Ok(file) = std::fs::File::open(dir.join("db")) else {
            return true;
        };
        // The lock taken here is released when `Flock` is dropped.
        if Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn closed() -> IpamError {
    IpamError::Storage("the store is closed (reopening it failed)".into())
}

/// Opens sled in `dir` (sled may panic on garbage, so under `catch_unwind`).
fn open_sled(dir: &Path, cache_capacity: u64) -> Result<Sled, IpamError> {
    let path = dir.to_path_buf();
    let config = sled::Config::new().path(dir).cache_capacity(cache_capacity);
    let opened = catch_unwind(AssertUnwindSafe(|| -> Result<Sled, sled::Error> {
        let db = config.open()?;
        let trees = TreeId::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sled { db, trees })
    }));
    match opened {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "sled panicked while opening".into());
            Err(IpamError::Corrupt { path, reason })
        }
    }
}

fn open_error(path: PathBuf, e: sled::Error) -> IpamError {
    match e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            IpamError::Locked { path }
        }
        sled::Error::Io(io) => IpamError::Storage(format!("opening {path:?}: {io}")),
        other => IpamError::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

impl Store for SledStore {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, IpamError> {
        let _owner = heap::scope(Owner::Store);
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: TreeId, from: &[u8], to: Option<&[u8]>) -> KvIter<'_> {
        let t = match self.tree(tree) {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let mut iter = match to {
            Some(to) => t.range(from.to_vec()..to.to_vec()),
            None => t.range(from.to_vec()..),
        };
        // sled's work (its page cache) is the store's; the caller's copies are the caller's.
        Box::new(std::iter::from_fn(move || {
            let next = {
                let _owner = heap::scope(Owner::Store);
                iter.next()?
            };
            Some(
                next.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(IpamError::from),
            )
        }))
    }

    fn apply(&self, ops: &[Op]) -> Result<(), IpamError> {
        let _owner = heap::scope(Owner::Store);
        if ops.is_empty() {
            // sled panics on a transaction over zero trees.
            return Ok(());
        }
        if let [op] = ops {
            // A single key is atomic without a transaction.
            let t = self.tree(op.tree)?;
            match &op.value {
                Some(v) => t.insert(&op.key, v.as_slice())?,
                None => t.remove(&op.key)?,
            };
            return Ok(());
        }
        if ops.iter().all(|op| op.tree == ops[0].tree) {
            // One tree: a batch is atomic, and cheaper than a transaction
            // (a group commit of leases is one).
            let mut batch = sled::Batch::default();
            for op in ops {
                match &op.value {
                    Some(v) => batch.insert(op.key.as_slice(), v.as_slice()),
                    None => batch.remove(op.key.as_slice()),
                }
            }
            self.tree(ops[0].tree)?.apply_batch(batch)?;
            return Ok(());
        }
        let mut ids: Vec<TreeId> = Vec::new();
        for op in ops {
            if !ids.contains(&op.tree) {
                ids.push(op.tree);
            }
        }
        let trees = ids
            .iter()
            .map(|t| self.tree(*t))
            .collect::<Result<Vec<_>, _>>()?;
        let result = trees.as_slice().transaction(|txs| {
            for op in ops {
                let i = ids.iter().position(|t| *t == op.tree).unwrap_or(0);
                match &op.value {
                    Some(v) => txs[i].insert(op.key.as_slice(), v.as_slice())?,
                    None => txs[i].remove(op.key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => {
                Err(IpamError::Storage("transaction aborted".into()))
            }
        }
    }

    fn flush(&self) -> Result<(), IpamError> {
        self.db()?.flush()?;
        Ok(())
    }

    fn flush_async(&self) -> BoxFuture<'static, Result<(), IpamError>> {
        let db = self.db();
        Box::pin(async move {
            db?.flush_async().await?;
            Ok(())
        })
    }

    fn size_on_disk(&self) -> u64 {
        self.db()
            .ok()
            .and_then(|db| db.size_on_disk().ok())
            .unwrap_or(0)
    }

    /// The old handle must be gone before the new open (sled locks its
    /// files, and its flush thread lets go a moment after the last handle:
    /// its lock is waited for up to 1 s); a scan still iterating the old
    /// one keeps it locked, and the caller tries again later.
    fn reopen(&self) -> Result<(), IpamError> {
        let _owner = heap::scope(Owner::Store);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        drop(inner.take());
        wait_released(&self.dir, REOPEN_WAIT);
        *inner = Some(open_sled(&self.dir, self.cache_capacity)?);
        Ok(())
    }
}
