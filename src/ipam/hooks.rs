//! What a cluster layer tells the IPAM (cluster mode only): which addresses
//! this node may hand out, which clients it answers, and whether it may
//! write at all. Without it the IPAM owns every address (one node).

use futures::future::BoxFuture;

use super::error::IpamError;
use super::v6::Ia6Key;
use crate::client::ClientKey;

/// Implemented by the cluster layer; every method is cheap and lock-free
/// enough to be called under the IPAM's state lock.
pub trait ClusterHooks: Send + Sync + std::fmt::Debug {
    /// Whether this node owns the block holding `ip` of `subnet`: only
    /// such an address may go to a client that does not hold it already.
    fn owns(&self, subnet: &str, ip: u32) -> bool;
    /// The owned blocks of `subnet` as inclusive address ranges, newest
    /// first (the older ones fill up first).
    fn owned(&self, subnet: &str) -> std::sync::Arc<[(u32, u32)]>;
    /// `free` addresses are left in this node's blocks of `subnet`: the
    /// cluster claims another block ahead when that runs low.
    fn free_left(&self, subnet: &str, free: u64);
    /// Whether this node answers `client` (rendezvous over the live nodes).
    fn answers(&self, client: &ClientKey) -> bool;
    /// Why this node may not write now (no etcd, or its lease lost or about
    /// to be), if so.
    fn fenced(&self) -> Option<String>;
    /// The live nodes as this node's copy shows them (for the status page).
    fn nodes(&self) -> Vec<ClusterNodeView>;
}

/// One live cluster node: its blocks and the rates it last published.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterNodeView {
    pub name: String,
    /// This node (the one answering).
    pub this: bool,
    /// Blocks held, all subnets together.
    pub blocks: u64,
    /// `None` until the node has published its rates.
    pub dhcp_acks_per_s: Option<f64>,
    pub api_requests_per_s: Option<f64>,
}

/// The cluster's linearizable reads, for answers any node may give and
/// that a copy trailing etcd must not: the API's idempotent allocation.
pub trait ClusterReads: Send + Sync + std::fmt::Debug {
    /// Reads `client`'s binding from etcd at its current revision and
    /// waits (a second at most) until this node's copy agrees; an error if
    /// etcd cannot be read or the copy does not catch up.
    fn settle(&self, client: &ClientKey) -> BoxFuture<'static, Result<(), IpamError>>;
}

/// A lease record another node wrote (or removed), as the store's watch
/// saw it: `old` is the record the store held before, `new` the one after
/// (both in the store's lease encoding).
#[derive(Debug, Clone)]
pub struct RemoteLease {
    pub ip: u32,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

/// A v6 binding record another node wrote (or removed): `key` is its
/// store key (address or prefix), `old`/`new` as in [`RemoteLease`].
#[derive(Debug, Clone)]
pub struct RemoteLease6 {
    pub key: Vec<u8>,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

/// The lease records one fold changed, v4 and v6.
#[derive(Debug, Default)]
pub struct Remote {
    pub leases: Vec<RemoteLease>,
    pub leases6: Vec<RemoteLease6>,
}

impl Remote {
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty() && self.leases6.is_empty()
    }
}

/// What a fold found queued locally, for the store to refuse the write
/// planned on what the remote change replaced.
pub trait Queued {
    /// Whether a local write of `ip` is queued or in flight with a value
    /// other than `value`.
    fn lease_differs(&self, ip: u32, value: Option<&[u8]>) -> bool;
    /// Whether a local write for `client` is queued or in flight (its
    /// binding may change) with an address other than `ip`.
    fn client_differs(&self, client: &ClientKey, ip: Option<u32>) -> bool;
    /// Whether a local write of the v6 binding `key` (a store key) is
    /// queued or in flight with a value other than `value`.
    fn lease6_differs(&self, key: &[u8], value: Option<&[u8]>) -> bool;
    /// Whether a local write for `ia` is queued or in flight (its binding
    /// may change) with a key other than `key`.
    fn ia_differs(&self, ia: &Ia6Key, key: Option<&[u8]>) -> bool;
}
