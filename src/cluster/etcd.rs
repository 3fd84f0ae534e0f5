//! The etcd client on a runtime of its own (so a store call may block any
//! thread, inside the app's runtime or not), and the one way to write:
//! a txn that always carries compares.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};

use super::keys::Keys;
use crate::ipam::IpamError;

/// How long one etcd call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Etcd {
    /// Lives as long as the process: its tasks hold this very handle, so
    /// the last owner may be one of its own threads, which cannot drop it.
    rt: &'static tokio::runtime::Runtime,
    client: Client,
    pub keys: Keys,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("keys", &self.keys).finish()
    }
}

/// An etcd error as the IPAM store reports it.
pub fn storage(e: impl std::fmt::Display) -> IpamError {
    IpamError::Cluster(format!("etcd: {e}"))
}

impl Etcd {
    /// Connects to `endpoints` (lazily: an unreachable etcd fails the
    /// first call, not this one).
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, IpamError> {
        // One worker: its tasks only move bytes (whatever blocks runs on the
        // blocking pool), and a second worker cost more in wakeups and
        // stealing than it ever ran.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vpcbox-etcd")
            .enable_all()
            .build()
            .map_err(storage)?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT);
        let endpoints = endpoints.to_vec();
        let client = futures::executor::block_on(
            rt.spawn(async move { Client::connect(endpoints, Some(opts)).await }),
        )
        .map_err(storage)?
        .map_err(storage)?;
        Ok(Self {
            rt: Box::leak(Box::new(rt)),
            client,
            keys: Keys::new(prefix),
        })
    }

    /// A client handle (cheap: shares the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Runs `f` on the etcd runtime and blocks the calling thread until it
    /// ends or [`CALL_TIMEOUT`] passes. Callable from any thread, async
    /// ones included (it never enters this runtime's context).
    pub fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, IpamError> {
        let task = self
            .handle()
            .spawn(async move { tokio::time::timeout(CALL_TIMEOUT, f).await });
        match futures::executor::block_on(task) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(storage(e)),
            Ok(Err(_)) => Err(storage("timed out")),
            Err(e) => Err(storage(e)),
        }
    }

    /// etcd's current revision (one more per committed txn).
    pub fn revision(&self) -> Result<i64, IpamError> {
        let mut c = self.client();
        let key = self.keys.node("");
        let resp = self.block(async move { c.get(key, None).await })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Every key under the prefix, and the revision they were read at.
    pub fn load_all(&self) -> Result<(Vec<KeyValue>, i64), IpamError> {
        let mut c = self.client();
        let all = self.keys.all();
        let mut resp =
            self.block(async move { c.get(all, Some(GetOptions::new().with_prefix())).await })?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.take_kvs(), rev))
    }
}

/// One txn: `ops` if every compare holds. Never without a compare (a blind
/// write is how two nodes hand out one address). Returns the revision the
/// txn committed at, or `None` if a compare failed.
pub async fn txn(
    mut c: Client,
    when: Vec<Compare>,
    ops: Vec<TxnOp>,
) -> Result<Option<i64>, etcd_client::Error> {
    if when.is_empty() {
        return Err(etcd_client::Error::InvalidArgs(
            "a write without a compare".into(),
        ));
    }
    let resp = c.txn(Txn::new().when(when).and_then(ops)).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok(resp.succeeded().then_some(rev))
}
