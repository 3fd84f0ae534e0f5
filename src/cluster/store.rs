//! The IPAM's [`Store`] on etcd: reads from this node's copy, writes as
//! one txn per group commit whose compares fence every write: the node's
//! registration, each key's last-seen revision, each client's binding,
//! and for a new binding the block's claim revision.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{Compare, CompareOp, TxnOp};
use futures::future::BoxFuture;

use super::etcd::{txn, Etcd};
use super::node::Node;
use super::replica::{Folded, Replica};
use crate::ipam::{
    key6_to_text, lease6_holder, lease_holder, IpamError, KvIter, Op, Store, TreeId,
};

/// etcd's default `--max-txn-ops`: a batch over it is split in parts.
const MAX_TXN_OPS: usize = 128;

pub struct ClusterStore {
    pub etcd: Arc<Etcd>,
    pub replica: Arc<Mutex<Replica>>,
    pub node: Arc<Node>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore").finish_non_exhaustive()
    }
}

/// One txn's parts, and the writes to confirm in the copy on success.
#[derive(Default)]
struct Plan {
    when: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// (etcd key, new value) of each write, to fold in once committed.
    done: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Plan {
    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.ops.push(match &value {
            Some(v) => TxnOp::put(key.clone(), v.clone(), None),
            None => TxnOp::delete(key.clone(), None),
        });
        self.done.push((key, value));
    }
}

fn conflict(key: &[u8]) -> IpamError {
    IpamError::Conflict(format!(
        "etcd: {} changed on another node first",
        String::from_utf8_lossy(key)
    ))
}

impl ClusterStore {
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        // std Mutex: short CPU-only sections, never held across an etcd call.
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The txn for `ops`, against the copy as it is now.
    fn plan(&self, ops: &[Op]) -> Result<Plan, IpamError> {
        let keys = &self.etcd.keys;
        let r = self.replica();
        let mut p = Plan::default();
        let node_key = keys.node(&self.node.name);
        let epoch = self.node.epoch.load(std::sync::atomic::Ordering::Relaxed);
        p.when
            .push(Compare::create_revision(node_key, CompareOp::Equal, epoch));
        // Last value per key (a batch may write one key twice).
        let mut last: BTreeMap<Vec<u8>, (TreeId, Option<&[u8]>)> = BTreeMap::new();
        // Client → address it ends up bound to (None: unbound), in order.
        let mut binds: BTreeMap<String, Option<u32>> = BTreeMap::new();
        // IA → v6 store key it ends up bound to (None: unbound), in order.
        let mut binds6: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            let Some(key) = keys.of_tree(op.tree, &op.key) else {
                continue;
            };
            if op.tree == TreeId::Leases6 {
                let before = last
                    .get(&key)
                    .map(|(_, v)| v.map(<[u8]>::to_vec))
                    .unwrap_or_else(|| {
                        r.tree(TreeId::Leases6)
                            .and_then(|t| t.get(&op.key))
                            .map(|v| v.0.clone())
                    });
                if let Some((ia, true)) = before.as_deref().and_then(lease6_holder) {
                    let text = ia.to_string();
                    if r.bindings6.get(&text).is_some_and(|b| b.0 == op.key) {
                        binds6.insert(text, None);
                    }
                }
                if let Some((ia, true)) = op.value.as_deref().and_then(lease6_holder) {
                    binds6.insert(ia.to_string(), Some(op.key.clone()));
                }
            }
            if op.tree == TreeId::Leases {
                let ip = <[u8; 4]>::try_from(op.key.as_slice())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                let before = last
                    .get(&key)
                    .map(|(_, v)| v.map(<[u8]>::to_vec))
                    .unwrap_or_else(|| {
                        r.tree(TreeId::Leases)
                            .and_then(|t| t.get(&op.key))
                            .map(|v| v.0.clone())
                    });
                if let Some((c, true)) = before.as_deref().and_then(lease_holder) {
                    let text = c.to_string();
                    if r.bindings.get(&text).is_some_and(|b| b.0 == ip) {
                        binds.insert(text, None);
                    }
                }
                if let Some((c, true)) = op.value.as_deref().and_then(lease_holder) {
                    binds.insert(c.to_string(), Some(ip));
                }
            }
            last.insert(key, (op.tree, op.value.as_deref()));
        }
        for (key, (tree, value)) in &last {
            if r.poisoned.contains(key) {
                return Err(conflict(key));
            }
            let stored = keys
                .parse(key)
                .and_then(|_| r.tree(*tree))
                .and_then(|t| t.get(&tree_key(keys, key)?));
            let rev = stored.map_or(0, |v| v.1);
            // Config shared by every node: rewriting the same value is no write.
            let lease = matches!(tree, TreeId::Leases | TreeId::Leases6);
            if !lease && stored.map(|v| v.0.as_slice()) == *value {
                continue;
            }
            p.when
                .push(Compare::mod_revision(key.clone(), CompareOp::Equal, rev));
            let value = value.map(|v| super::keys::to_etcd(*tree, v)).transpose()?;
            p.write(key.clone(), value);
        }
        let mut blocks = Vec::new();
        for (client, to) in binds {
            let key = keys.binding(&client);
            if r.poisoned.contains(&key) {
                return Err(conflict(&key));
            }
            let cur = r.bindings.get(&client).copied();
            p.when.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                cur.map_or(0, |b| b.1),
            ));
            match to {
                Some(ip) if cur.map(|b| b.0) == Some(ip) => {}
                Some(ip) => {
                    // A new binding: fenced by its block's claim if owned
                    // (the lease and binding compares alone keep it unique).
                    if let Some(subnet) = subnet_of(&r, ip) {
                        if let Some((first, claim)) = self.node.block_of(&subnet, ip) {
                            if !blocks.contains(&(subnet.clone(), first)) {
                                p.when.push(Compare::create_revision(
                                    keys.block(&subnet, first),
                                    CompareOp::Equal,
                                    claim,
                                ));
                                blocks.push((subnet, first));
                            }
                        }
                    }
                    p.write(key, Some(Ipv4Addr::from(ip).to_string().into_bytes()));
                }
                None if cur.is_some() => p.write(key, None),
                None => {}
            }
        }
        self.plan6(&r, binds6, &mut p)?;
        Ok(p)
    }

    /// The v6 IAs' binding keys: each compared on its last-seen revision
    /// (0: none yet), so one IA holds one binding cluster-wide. v6 has no
    /// blocks: a lease key's create-only compare keeps an address unique.
    fn plan6(
        &self,
        r: &Replica,
        binds6: BTreeMap<String, Option<Vec<u8>>>,
        p: &mut Plan,
    ) -> Result<(), IpamError> {
        let keys = &self.etcd.keys;
        for (ia, to) in binds6 {
            let key = keys.binding6(&ia);
            if r.poisoned.contains(&key) {
                return Err(conflict(&key));
            }
            let cur = r.bindings6.get(&ia);
            p.when.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                cur.map_or(0, |b| b.1),
            ));
            match to {
                Some(k) if cur.is_some_and(|b| b.0 == k) => {}
                Some(k) => {
                    let text = key6_to_text(&k)
                        .ok_or_else(|| IpamError::Storage("a v6 lease key is malformed".into()))?;
                    p.write(key, Some(text.into_bytes()));
                }
                None if cur.is_some() => p.write(key, None),
                None => {}
            }
        }
        Ok(())
    }

    /// Runs one planned txn and folds its writes into the copy.
    fn commit(&self, p: Plan) -> Result<(), IpamError> {
        if p.ops.is_empty() {
            return Ok(());
        }
        let client = self.etcd.client();
        let Plan { when, ops, done } = p;
        let rev = self
            .etcd
            .block(txn(client, when, ops))?
            .ok_or_else(|| IpamError::Conflict("etcd: a compare failed (another node wrote first, or this node's registration is gone)".into()))?;
        let keys = &self.etcd.keys;
        let mut r = self.replica();
        let mut out = Folded::default();
        for (key, value) in done {
            match value {
                Some(v) => {
                    let create = match r.rev_of(keys, &key) {
                        0 => rev,
                        _ => 0,
                    };
                    r.put_raw(keys, &key, &v, (rev, create), None, &mut out);
                }
                None => r.delete(keys, &key, rev, None, &mut out),
            }
        }
        Ok(())
    }
}

/// The store key of an etcd key of one of the trees.
fn tree_key(keys: &super::keys::Keys, key: &[u8]) -> Option<Vec<u8>> {
    match keys.parse(key)? {
        super::keys::Parsed::Tree(_, k) => Some(k),
        _ => None,
    }
}

/// The subnet holding `ip`, from the stored subnet specs.
fn subnet_of(r: &Replica, ip: u32) -> Option<String> {
    r.tree(TreeId::Subnets)?.values().find_map(|(v, _)| {
        let spec: crate::ipam::SubnetSpec = serde_json::from_slice(v).ok()?;
        spec.cidr.contains(&Ipv4Addr::from(ip)).then_some(spec.id)
    })
}

impl Store for ClusterStore {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, IpamError> {
        Ok(self
            .replica()
            .tree(tree)
            .and_then(|t| t.get(key))
            .map(|v| v.0.clone()))
    }

    fn scan(&self, tree: TreeId, from: &[u8], to: Option<&[u8]>) -> KvIter<'_> {
        let r = self.replica();
        let items: Vec<_> = r
            .tree(tree)
            .map(|t| {
                t.range(from.to_vec()..)
                    .take_while(|(k, _)| to.is_none_or(|to| k.as_slice() < to))
                    .map(|(k, v)| Ok((k.clone(), v.0.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Box::new(items.into_iter())
    }

    /// One txn (or, past etcd's op limit, one per part, in order); fails
    /// at once while the node is fenced.
    fn apply(&self, ops: &[Op]) -> Result<(), IpamError> {
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(why) = crate::ipam::ClusterHooks::fenced(self.node.as_ref()) {
            return Err(IpamError::Degraded(why));
        }
        let p = self.plan(ops)?;
        if p.ops.len() <= MAX_TXN_OPS && p.when.len() <= MAX_TXN_OPS {
            return self.commit(p);
        }
        let (a, b) = ops.split_at(ops.len() / 2);
        if a.is_empty() {
            return Err(IpamError::Storage(
                "etcd: one write needs more than etcd's txn op limit".into(),
            ));
        }
        self.apply(a)?;
        self.apply(b)
    }

    /// A committed txn is durable in etcd already.
    fn flush(&self) -> Result<(), IpamError> {
        Ok(())
    }

    fn flush_async(&self) -> BoxFuture<'static, Result<(), IpamError>> {
        Box::pin(async { Ok(()) })
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    /// After a failed write: the copy holds only what etcd confirmed, so
    /// it stays; the keys poisoned by remote changes are clean again.
    fn reopen(&self) -> Result<(), IpamError> {
        self.replica().poisoned.clear();
        Ok(())
    }
}
