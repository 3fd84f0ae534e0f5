//! Cluster mode (`[cluster]`, cargo feature `cluster`): several nodes share
//! one IPAM on etcd v3. Each node registers on an etcd lease, claims blocks
//! of the pools, allocates inside them from memory, and writes each group
//! commit as one txn fenced by compares; a watch folds the others' writes
//! into its index; rendezvous hashing over the live nodes says who answers
//! a client. See DESIGN.md "Cluster" for the key layout.

mod claim;
mod etcd;
mod handle;
mod keys;
mod member;
mod node;
mod rendezvous;
mod replica;
mod store;
mod watch;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use handle::Cluster;
pub use store::ClusterStore;
