//! The isolation set's durable home: the `isolations` tree.

use std::sync::Arc;

use super::error::IpamError;
use super::handle::Ipam;
use super::record::{from_json, to_json};
use super::store::{Op, Store, TreeId};
use crate::client::ClientKey;
use crate::isolation::{IsolationEntry, IsolationStore, StoreError};

struct SledIsolations(Arc<dyn Store>);

fn err(e: IpamError) -> StoreError {
    // Refused for now (etcd away, raced, the store degraded or the node
    // fenced): the API answers 503 as it does for the IPAM's own calls.
    let unavailable = match e {
        IpamError::Cluster(_) | IpamError::Conflict(_) => Some("cluster"),
        IpamError::Degraded(_) => Some("degraded"),
        _ => None,
    };
    StoreError {
        message: e.to_string(),
        unavailable,
    }
}

impl IsolationStore for SledIsolations {
    fn load(&self) -> Result<Vec<IsolationEntry>, StoreError> {
        self.0
            .scan(TreeId::Isolations, &[], None)
            .map(|kv| kv.and_then(|(_, v)| from_json(&v)).map_err(err))
            .collect()
    }

    /// Durable on return: flushes inline (blocking for one fsync; isolation
    /// changes are rare operator actions).
    fn put(&self, entry: &IsolationEntry) -> Result<(), StoreError> {
        let op = Op {
            tree: TreeId::Isolations,
            key: entry.client.to_string().into_bytes(),
            value: Some(to_json(entry).map_err(err)?),
        };
        self.0
            .apply(&[op])
            .and_then(|()| self.0.flush())
            .map_err(err)
    }

    fn remove(&self, client: &ClientKey) -> Result<(), StoreError> {
        let op = Op {
            tree: TreeId::Isolations,
            key: client.to_string().into_bytes(),
            value: None,
        };
        self.0
            .apply(&[op])
            .and_then(|()| self.0.flush())
            .map_err(err)
    }
}

impl Ipam {
    /// The isolation set's store, in this IPAM's sled database.
    pub fn isolation_store(&self) -> Box<dyn IsolationStore> {
        Box::new(SledIsolations(self.store.clone()))
    }
}
