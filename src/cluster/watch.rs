//! The watch on the whole prefix: other nodes' writes go into the copy
//! and the IPAM's index together (under the IPAM's lock), membership and
//! block ownership are recomputed, and a lost or compacted watch reloads
//! everything.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::member::pause;
use super::node::Node;
use super::replica::{Folded, Replica};
use crate::ipam::Ipam;

pub struct Watch {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
    pub node: Arc<Node>,
    pub ipam: Weak<Ipam>,
    /// Where isolations other nodes made are applied.
    pub on_isolations: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Watch {
    fn replica(&self) -> std::sync::MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches from `from` (the revision after the last full read) until
    /// `cancel`. Folding takes the IPAM's lock, whose holder may be waiting
    /// on an etcd call: it runs on the blocking pool, never on a worker of
    /// the etcd runtime. Responses that arrived meanwhile are folded
    /// together: one trip to the pool and one take of the locks.
    pub async fn run(self: Arc<Self>, mut from: i64, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let mut c = self.etcd.client();
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let stream = tokio::time::timeout(
                Duration::from_secs(2),
                c.watch(self.etcd.keys.all(), Some(opts)),
            )
            .await;
            let Ok(Ok(mut stream)) = stream else {
                pause(&cancel, Duration::from_millis(500)).await;
                continue;
            };
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = stream.message() => m,
                };
                let (batch, next) = drain(&mut stream, msg);
                if !batch.is_empty() {
                    let this = self.clone();
                    let last = tokio::task::spawn_blocking(move || this.fold(&batch)).await;
                    if let Ok(Some(last)) = last {
                        from = last + 1;
                    }
                }
                match next {
                    Next::More => {}
                    Next::Lost => {
                        let this = self.clone();
                        let resynced = tokio::task::spawn_blocking(move || this.resync()).await;
                        from = resynced.ok().flatten().unwrap_or(from);
                        break;
                    }
                    Next::Ended => break,
                }
            }
            pause(&cancel, Duration::from_millis(200)).await;
        }
    }

    /// Folds responses in order; returns their newest revision.
    fn fold(&self, batch: &[WatchResponse]) -> Option<i64> {
        let keys = &self.etcd.keys;
        let mut out = Folded::default();
        let mut last = None;
        let mut fold = |q: Option<&dyn crate::ipam::Queued>, out: &mut Folded| {
            let mut r = self.replica();
            for e in batch.iter().flat_map(WatchResponse::events) {
                let Some(kv) = e.kv() else { continue };
                last = last.max(Some(kv.mod_revision()));
                match e.event_type() {
                    EventType::Put => r.put(keys, kv, q, out),
                    EventType::Delete => r.delete(keys, kv.key(), kv.mod_revision(), q, out),
                }
            }
        };
        match self.ipam.upgrade() {
            Some(ipam) => ipam.fold_remote(|q| {
                fold(Some(q), &mut out);
                crate::ipam::Remote {
                    leases: std::mem::take(&mut out.leases),
                    leases6: std::mem::take(&mut out.leases6),
                }
            }),
            None => fold(None, &mut out),
        }
        self.after(&out);
        last
    }

    fn after(&self, out: &Folded) {
        if out.layout {
            self.node.changed(&self.replica(), out);
            self.node.wake.notify_one();
        }
        if out.reload {
            if let Some(ipam) = self.ipam.upgrade() {
                if let Err(e) = ipam.reload() {
                    tracing::warn!(error = %e, "reloading the IPAM after a remote subnet change failed");
                }
            }
        }
        if out.isolations {
            if let Some(f) = &self.on_isolations {
                f();
            }
        }
    }

    /// Reads everything again (the watch fell behind a compaction).
    /// Blocking.
    fn resync(&self) -> Option<i64> {
        tracing::warn!("cluster watch lost its place; reading everything again");
        let (kvs, rev) = self.etcd.load_all().ok()?;
        let fresh = Replica::load(&self.etcd.keys, &kvs);
        *self.replica() = fresh;
        self.node.refresh(&self.replica());
        if let Some(ipam) = self.ipam.upgrade() {
            let _ = ipam.reload();
        }
        Some(rev + 1)
    }
}

/// The most responses folded at once.
const FOLD_AT_ONCE: usize = 64;

/// What the watch does after a batch.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    More,
    /// Cancelled or compacted: read everything again.
    Lost,
    /// The stream ended or failed: watch again.
    Ended,
}

/// `first` and the responses already received behind it (up to
/// [`FOLD_AT_ONCE`]), stopping at one that ends the watch.
fn drain(
    stream: &mut WatchStream,
    first: Result<Option<WatchResponse>, etcd_client::Error>,
) -> (Vec<WatchResponse>, Next) {
    let mut batch = Vec::new();
    let mut msg = first;
    loop {
        match msg {
            Ok(Some(r)) if r.canceled() || r.compact_revision() > 0 => return (batch, Next::Lost),
            Ok(Some(r)) => batch.push(r),
            _ => return (batch, Next::Ended),
        }
        if batch.len() >= FOLD_AT_ONCE {
            return (batch, Next::More);
        }
        // Polled once: a response not yet here stays in the stream.
        match stream.message().now_or_never() {
            Some(m) => msg = m,
            None => return (batch, Next::More),
        }
    }
}
