//! What a running node shows of the cluster (the dashboard's header): the
//! registered nodes with the blocks each holds, read from etcd (two range
//! reads, about once a second), and this node's own fence.

use std::sync::Arc;

use etcd_client::GetOptions;

use super::etcd::Etcd;
use super::handle::Cluster;
use super::node::Node;
use super::status::{fold, ClusterStatus};
use crate::ipam::{ClusterHooks, IpamError};

/// A cheap handle on a running node's cluster, for the dashboard.
#[derive(Debug, Clone)]
pub struct ClusterProbe {
    etcd: Arc<Etcd>,
    node: Arc<Node>,
}

impl Cluster {
    pub fn probe(&self) -> ClusterProbe {
        ClusterProbe {
            etcd: self.etcd.clone(),
            node: self.node.clone(),
        }
    }
}

impl ClusterProbe {
    pub fn node(&self) -> &str {
        &self.node.name
    }

    /// Why this node may not write now, if it may not.
    pub fn fenced(&self) -> Option<String> {
        self.node.fenced()
    }

    /// The registered nodes and their blocks (no leases, no TTLs).
    /// Blocking: two etcd reads, each bounded by the call timeout.
    pub fn layout(&self) -> Result<ClusterStatus, IpamError> {
        let mut kvs = Vec::new();
        for part in ["nodes/", "blocks/"] {
            let mut c = self.etcd.client();
            let prefix = [self.etcd.keys.all(), part.as_bytes().to_vec()].concat();
            let opts = GetOptions::new().with_prefix();
            let mut got = self
                .etcd
                .block(async move { c.get(prefix, Some(opts)).await })?;
            kvs.extend(got.take_kvs());
        }
        Ok(fold(&self.etcd.keys, self.node.block_size, &kvs))
    }
}
