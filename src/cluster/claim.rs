//! Claiming blocks: `blocks/<subnet>/<first-ip>` created (create_revision
//! == 0) on the node's lease, ahead of need: when a subnet's owned blocks
//! run low, the claimer takes the unclaimed block with the most never-used
//! addresses, so a DISCOVER never waits on etcd.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};
use tokio_util::sync::CancellationToken;

use super::etcd::{txn, Etcd};
use super::node::Node;
use super::replica::{BlockValue, Folded, Replica};
use crate::ipam::{ClusterHooks, Ipam, SubnetSpec};

/// The first address of every block that holds part of a pool of `spec`.
pub fn blocks_of(spec: &SubnetSpec, size: u32) -> Vec<u32> {
    let mut firsts = Vec::new();
    for p in &spec.pools {
        let (start, end) = (u32::from(p.start), u32::from(p.end));
        let mut first = start & !(size - 1);
        loop {
            if firsts.last() != Some(&first) {
                firsts.push(first);
            }
            match first.checked_add(size) {
                Some(next) if next <= end => first = next,
                _ => break,
            }
        }
    }
    firsts.sort_unstable();
    firsts.dedup();
    firsts
}

pub struct Claimer {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
    pub node: Arc<Node>,
    pub ipam: Weak<Ipam>,
}

impl Claimer {
    /// Claims blocks whenever a subnet runs low (woken by the IPAM, or
    /// every second), until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.node.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.node.fenced().is_some() {
                continue;
            }
            let Some(ipam) = self.ipam.upgrade() else { return };
            for spec in ipam.subnets() {
                if self.node.needs_block(&spec.id) {
                    self.claim(&ipam, &spec).await;
                }
            }
        }
    }

    /// Claims one block of `spec`; false if none was free or another node
    /// took it first (the watch shows which).
    pub async fn claim(&self, ipam: &Ipam, spec: &SubnetSpec) -> bool {
        let size = self.node.block_size;
        let Some(first) = self.pick(ipam, spec) else { return false };
        let keys = &self.etcd.keys;
        let (epoch, lease) = (self.node.epoch.load(Relaxed), self.node.lease.load(Relaxed));
        let key = keys.block(&spec.id, first);
        let value = serde_json::json!(BlockValue {
            node: self.node.name.clone(),
            epoch
        })
        .to_string();
        let when = vec![
            Compare::create_revision(keys.node(&self.node.name), CompareOp::Equal, epoch),
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        ];
        let put = TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)));
        let res = tokio::time::timeout(Duration::from_secs(2), txn(self.etcd.client(), when, vec![put])).await;
        let Ok(Ok(Some(rev))) = res else { return false };
        {
            let mut r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
            r.put_raw(keys, &key, value.as_bytes(), (rev, rev), None, &mut Folded::default());
            self.node.refresh(&r);
        }
        tracing::info!(subnet = %spec.id, block = %std::net::Ipv4Addr::from(first), size, "claimed a block");
        true
    }

    /// The unclaimed block with the most never-used addresses (the lowest
    /// among equals).
    fn pick(&self, ipam: &Ipam, spec: &SubnetSpec) -> Option<u32> {
        let size = self.node.block_size;
        let claimed: Vec<u32> = {
            let r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
            r.blocks
                .range((spec.id.clone(), 0)..=(spec.id.clone(), u32::MAX))
                .map(|((_, f), _)| *f)
                .collect()
        };
        blocks_of(spec, size)
            .into_iter()
            .filter(|f| claimed.binary_search(f).is_err())
            .map(|f| (ipam.free_in(&spec.id, f, f + (size - 1)), f))
            .max_by_key(|(free, f)| (*free, std::cmp::Reverse(*f)))
            .map(|(_, f)| f)
    }
}
