//! Cluster mode (`[cluster]`, cargo feature `cluster`): several nodes share
//! one IPAM on etcd v3. Each node registers on an etcd lease, claims blocks
//! of the pools, allocates inside them from memory, and writes each group
//! commit as one txn fenced by compares, and gives back idle blocks it
//! does not need; a watch folds the others' writes into its index;
//! rendezvous hashing over the live nodes says who answers a client. See DESIGN.md "Cluster" for the key layout.

mod apply;
mod claim;
mod confirm;
mod etcd;
mod handle;
mod keys;
mod leave;
mod member;
mod node;
mod parts;
mod rates;
mod release;
mod rendezvous;
mod replica;
mod status;
mod store;
mod transfer;
mod view;
mod watch;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;

pub use apply::ApplyError;
pub use handle::Cluster;
pub use leave::{leave, LeaveError, Left};
pub use replica::NodeRates;
pub use status::{
    read as read_status, render as render_status, ClusterStatus, EndpointStatus, NodeStatus,
};
pub use store::ClusterStore;
pub use transfer::{export, import, prepare, ImportError, Imported, Writes};
pub use view::ClusterProbe;
