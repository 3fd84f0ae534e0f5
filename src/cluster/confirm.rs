//! etcd's word on a client's binding, read at the current revision: an API
//! allocation, which any node answers, waits until this node's copy agrees
//! with it (the copy may trail the other nodes' writes by the watch's
//! delay, or by a whole partition).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::etcd::{storage, Etcd, CALL_TIMEOUT};
use super::replica::Replica;
use crate::client::ClientKey;
use crate::ipam::{ClusterReads, IpamError};

/// How long a trailing copy may take to catch up with etcd on one client.
const CATCH_UP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Bindings {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
}

impl ClusterReads for Bindings {
    fn settle(&self, client: &ClientKey) -> BoxFuture<'static, Result<(), IpamError>> {
        let (etcd, replica) = (self.etcd.clone(), self.replica.clone());
        let text = client.to_string();
        let task = self.etcd.handle().spawn(async move {
            let key = etcd.keys.binding(&text);
            let mut c = etcd.client();
            let resp = tokio::time::timeout(CALL_TIMEOUT, c.get(key, None))
                .await
                .map_err(|_| storage("timed out"))?
                .map_err(storage)?;
            let read_at = resp.header().map_or(0, |h| h.revision());
            let stored = resp.kvs().first().map(|kv| {
                let ip = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse::<Ipv4Addr>().ok());
                (ip.map(u32::from), kv.mod_revision())
            });
            let deadline = Instant::now() + CATCH_UP;
            loop {
                let agrees = {
                    let r = replica.lock().unwrap_or_else(|e| e.into_inner());
                    match (stored, r.bindings.get(&text)) {
                        (Some((ip, rev)), Some(b)) => b.1 > rev || (b.1 == rev && Some(b.0) == ip),
                        (None, b) => b.is_none_or(|b| b.1 > read_at),
                        (Some(_), None) => false,
                    }
                };
                if agrees {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(storage(
                        "this node's copy of the cluster trails etcd (is its watch running?)",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Box::pin(async move { task.await.map_err(storage)? })
    }
}
