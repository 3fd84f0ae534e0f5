//! The IPAM's [`Store`] on etcd: reads from this node's copy, writes a
//! group commit as txns (parts sharing no key, run at once) whose compares
//! fence every write: the node's registration, each key's last-seen
//! revision, each client's binding, and for a new binding the block's
//! claim revision.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;

use super::etcd::Etcd;
use super::node::Node;
use super::parts::{partition, Item, Part};
use super::replica::{Folded, Replica};
use crate::ipam::{
    key6_to_text, lease6_holder, lease_holder, IpamError, KvIter, Op, Store, TreeId,
};

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

fn conflict(what: &str) -> IpamError {
    IpamError::Conflict(format!("etcd: {what} changed on another node first"))
}

/// How one part's txn ended.
enum Outcome {
    Committed(i64),
    /// A compare failed: another node wrote one of its keys first.
    Conflict,
    /// This node's registration is gone (or renewed): a fence, not a race.
    Unregistered,
}

impl ClusterStore {
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        // std Mutex: short CPU-only sections, never held across an etcd call.
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The txns for `ops`, against the copy as it is now.
    fn plan(&self, ops: &[Op]) -> Result<Vec<Part>, IpamError> {
        let keys = &self.etcd.keys;
        let r = self.replica();
        let epoch = self.node.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let fence = Compare::create_revision(keys.node(&self.node.name), CompareOp::Equal, epoch);
        // Last value per key (a batch may write one key twice).
        let mut last: BTreeMap<Vec<u8>, (TreeId, Option<&[u8]>)> = BTreeMap::new();
        // Client → address it ends up bound to (None: unbound), in order.
        let mut binds: BTreeMap<String, Option<u32>> = BTreeMap::new();
        // IA → v6 store key it ends up bound to (None: unbound), in order.
        let mut binds6: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        // A lease and the bindings of the clients (IAs) it moves between: one txn.
        let mut links = Vec::new();
        for op in ops {
            let Some(key) = keys.of_tree(op.tree, &op.key) else {
                continue;
            };
            // A lease's value before this op: earlier in the batch, else the copy.
            let before = match op.tree {
                TreeId::Leases | TreeId::Leases6 => last
                    .get(&key)
                    .map(|(_, v)| v.map(<[u8]>::to_vec))
                    .unwrap_or_else(|| {
                        r.tree(op.tree)
                            .and_then(|t| t.get(&op.key))
                            .map(|v| v.0.clone())
                    }),
                _ => None,
            };
            if op.tree == TreeId::Leases6 {
                if let Some((ia, bound)) = before.as_deref().and_then(lease6_holder) {
                    let text = ia.to_string();
                    links.push((key.clone(), keys.binding6(&text)));
                    if bound && r.bindings6.get(&text).is_some_and(|b| b.0 == op.key) {
                        binds6.insert(text, None);
                    }
                }
                if let Some((ia, bound)) = op.value.as_deref().and_then(lease6_holder) {
                    let text = ia.to_string();
                    links.push((key.clone(), keys.binding6(&text)));
                    if bound {
                        binds6.insert(text, Some(op.key.clone()));
                    }
                }
            }
            if op.tree == TreeId::Leases {
                let ip = <[u8; 4]>::try_from(op.key.as_slice())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if let Some((c, bound)) = before.as_deref().and_then(lease_holder) {
                    let text = c.to_string();
                    links.push((key.clone(), keys.binding(&text)));
                    if bound && r.bindings.get(&text).is_some_and(|b| b.0 == ip) {
                        binds.insert(text, None);
                    }
                }
                if let Some((c, bound)) = op.value.as_deref().and_then(lease_holder) {
                    let text = c.to_string();
                    links.push((key.clone(), keys.binding(&text)));
                    if bound {
                        binds.insert(text, Some(ip));
                    }
                }
            }
            last.insert(key, (op.tree, op.value.as_deref()));
        }
        let mut items = Vec::with_capacity(last.len() + binds.len());
        for (key, (tree, value)) in last {
            let stored = keys
                .parse(&key)
                .and_then(|_| r.tree(tree))
                .and_then(|t| t.get(&tree_key(keys, &key)?));
            // Config shared by every node: rewriting the same value is no write.
            let lease = matches!(tree, TreeId::Leases | TreeId::Leases6);
            if !lease && stored.map(|v| v.0.as_slice()) == value {
                continue;
            }
            items.push(Item {
                poisoned: r.poisoned.contains(&key),
                rev: stored.map_or(0, |v| v.1),
                write: Some(value.map(|v| super::keys::to_etcd(tree, v)).transpose()?),
                config: !lease,
                block: None,
                key,
            });
        }
        let subnets = Subnets::of(&r);
        for (client, to) in binds {
            let key = keys.binding(&client);
            let cur = r.bindings.get(&client).copied();
            let mut item = Item {
                poisoned: r.poisoned.contains(&key),
                rev: cur.map_or(0, |b| b.1),
                ..Item::default()
            };
            match to {
                Some(ip) if cur.map(|b| b.0) == Some(ip) => {}
                Some(ip) => {
                    // A new binding: fenced by its block's claim if owned
                    // (the lease and binding compares alone keep it unique).
                    item.block = subnets.of_ip(ip).and_then(|subnet| {
                        let (first, claim) = self.node.block_of(subnet, ip)?;
                        Some((keys.block(subnet, first), claim))
                    });
                    item.write = Some(Some(Ipv4Addr::from(ip).to_string().into_bytes()));
                }
                None if cur.is_some() => item.write = Some(None),
                None => {}
            }
            item.key = key;
            items.push(item);
        }
        self.plan6(&r, binds6, &mut items)?;
        partition(items, &links, &fence).map_err(IpamError::Storage)
    }

    /// The v6 IAs' binding keys: each compared on its last-seen revision
    /// (0: none yet), so one IA holds one binding cluster-wide. v6 has no
    /// blocks: a lease key's create-only compare keeps an address unique.
    fn plan6(
        &self,
        r: &Replica,
        binds6: BTreeMap<String, Option<Vec<u8>>>,
        items: &mut Vec<Item>,
    ) -> Result<(), IpamError> {
        let keys = &self.etcd.keys;
        for (ia, to) in binds6 {
            let key = keys.binding6(&ia);
            let cur = r.bindings6.get(&ia);
            let mut item = Item {
                poisoned: r.poisoned.contains(&key),
                rev: cur.map_or(0, |b| b.1),
                ..Item::default()
            };
            match to {
                Some(k) if cur.is_some_and(|b| b.0 == k) => {}
                Some(k) => {
                    let text = key6_to_text(&k)
                        .ok_or_else(|| IpamError::Storage("a v6 lease key is malformed".into()))?;
                    item.write = Some(Some(text.into_bytes()));
                }
                None if cur.is_some() => item.write = Some(None),
                None => {}
            }
            item.key = key;
            items.push(item);
        }
        Ok(())
    }

    /// Runs the parts' txns at once and folds each committed one into the
    /// copy. Ok only if every part committed; else the worst error (an
    /// etcd failure or a lost registration before a conflict). Parts that
    /// committed stay committed: their writers get the error too and retry
    /// (they get the same binding), never a success for a write that failed.
    fn commit(&self, parts: Vec<Part>) -> Result<(), IpamError> {
        let mut poisoned = None;
        let mut sent = Vec::new();
        let mut txns = Vec::new();
        for p in parts {
            if let Some(key) = p.poisoned {
                poisoned.get_or_insert(key);
                continue;
            }
            txns.push(part_txn(
                self.etcd.client(),
                p.when,
                p.ops,
                self.fence_key(),
            ));
            sent.push(p.done);
        }
        if txns.is_empty() && poisoned.is_none() {
            return Ok(());
        }
        let outcomes = self
            .etcd
            .block(async move { Ok(futures::future::join_all(txns).await) })?;
        let epoch = self.node.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let mut worst: Option<IpamError> = poisoned.map(|k| conflict(&String::from_utf8_lossy(&k)));
        let mut r = self.replica();
        for (done, outcome) in sent.into_iter().zip(outcomes) {
            let e = match outcome {
                Ok(Outcome::Committed(rev)) => {
                    self.fold(&mut r, done, rev);
                    continue;
                }
                Ok(Outcome::Conflict) => conflict("a key of this write"),
                Ok(Outcome::Unregistered) => IpamError::Cluster(format!(
                    "etcd: this node's registration (epoch {epoch}) is gone; it writes nothing until it registers again"
                )),
                Err(e) => super::etcd::storage(e),
            };
            if worst
                .as_ref()
                .is_none_or(|w| matches!(w, IpamError::Conflict(_)))
            {
                worst = Some(e);
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// This node's registration key and the epoch every txn compares.
    fn fence_key(&self) -> (Vec<u8>, i64) {
        let epoch = self.node.epoch.load(std::sync::atomic::Ordering::Relaxed);
        (self.etcd.keys.node(&self.node.name), epoch)
    }

    /// Folds one committed txn's writes, at revision `rev`, into the copy.
    fn fold(&self, r: &mut Replica, done: Vec<(Vec<u8>, Option<Vec<u8>>)>, rev: i64) {
        let keys = &self.etcd.keys;
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
    }
}

/// One part's txn; when a compare fails, its else-branch reads this
/// node's registration to tell a race from a lost registration.
async fn part_txn(
    mut c: Client,
    when: Vec<Compare>,
    ops: Vec<TxnOp>,
    (node_key, epoch): (Vec<u8>, i64),
) -> Result<Outcome, etcd_client::Error> {
    if when.is_empty() {
        return Err(etcd_client::Error::InvalidArgs(
            "a write without a compare".into(),
        ));
    }
    let txn = Txn::new()
        .when(when)
        .and_then(ops)
        .or_else([TxnOp::get(node_key, None)]);
    let resp = c.txn(txn).await?;
    if resp.succeeded() {
        return Ok(Outcome::Committed(
            resp.header().map(|h| h.revision()).unwrap_or(0),
        ));
    }
    let registered = resp.op_responses().iter().any(|r| match r {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == epoch),
        _ => false,
    });
    Ok(if registered {
        Outcome::Conflict
    } else {
        Outcome::Unregistered
    })
}

/// The stored subnets' ranges, parsed once per plan.
struct Subnets(Vec<(ipnet::Ipv4Net, String)>);

impl Subnets {
    fn of(r: &Replica) -> Self {
        let specs = r.tree(TreeId::Subnets).into_iter().flat_map(|t| t.values());
        Self(
            specs
                .filter_map(|(v, _)| {
                    let spec: crate::ipam::SubnetSpec = serde_json::from_slice(v).ok()?;
                    Some((spec.cidr, spec.id))
                })
                .collect(),
        )
    }

    /// The subnet holding `ip`.
    fn of_ip(&self, ip: u32) -> Option<&str> {
        let ip = Ipv4Addr::from(ip);
        self.0
            .iter()
            .find(|(cidr, _)| cidr.contains(&ip))
            .map(|(_, id)| id.as_str())
    }
}

/// The store key of an etcd key of one of the trees.
fn tree_key(keys: &super::keys::Keys, key: &[u8]) -> Option<Vec<u8>> {
    match keys.parse(key)? {
        super::keys::Parsed::Tree(_, k) => Some(k),
        _ => None,
    }
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

    /// The batch's parts at once ([`ClusterStore::commit`]); fails at once
    /// while the node is fenced.
    fn apply(&self, ops: &[Op]) -> Result<(), IpamError> {
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(why) = crate::ipam::ClusterHooks::fenced(self.node.as_ref()) {
            return Err(IpamError::Degraded(why));
        }
        let parts = self.plan(ops)?;
        self.commit(parts)
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
