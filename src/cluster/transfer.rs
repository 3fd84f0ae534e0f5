//! Moving a whole store in and out of a cluster, without joining it:
//! `db export` reads everything under the prefix; `db import` and `cluster
//! migrate` write a dump into an empty prefix, every key created with a
//! compare on `create_revision == 0` (nothing is ever overwritten).
//! The dump's checks and its mapping to store keys are the IPAM's own.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, CompareOp, TxnOp};
use futures::future::BoxFuture;

use super::etcd::{txn, Etcd};
use super::keys::{to_etcd, Keys, Parsed};
use super::node::Node;
use super::replica::Replica;
use super::store::ClusterStore;
use crate::config::ClusterConfig;
use crate::ipam::{
    key6_to_text, lease6_holder, lease_holder, Dump, Ipam, IpamError, IpamOptions, KvIter, Op,
    Store, TreeId, DUID_KEY,
};
use crate::stats::Stats;

/// Keys per import txn (each is one compare and one put; etcd's default
/// `--max-txn-ops` is 128).
const KEYS_PER_TXN: usize = 64;

/// The whole cluster as a dump (offers are not exported), read at one
/// revision. Blocking.
pub fn export(config: &ClusterConfig) -> Result<Dump, IpamError> {
    let etcd = Arc::new(Etcd::connect(&config.etcd, &config.prefix)?);
    let (kvs, _) = etcd.load_all()?;
    let replica = Replica::load(&etcd.keys, &kvs);
    let stats = Stats::new(16);
    // Never registered, so always fenced: this store can write nothing.
    let node = Node::new(
        &config.node,
        config.lease_ttl,
        config.block_size,
        stats.clone(),
    );
    let store = ClusterStore {
        etcd,
        replica: Arc::new(Mutex::new(replica)),
        node: Arc::new(node),
    };
    let ipam = Ipam::with_store(
        PathBuf::new(),
        Arc::new(store),
        IpamOptions::default(),
        stats,
    )?;
    ipam.export()
}

/// One etcd key and its value; a lease and its client's binding travel
/// in one txn.
pub type Writes = Vec<Vec<(Vec<u8>, Vec<u8>)>>;

/// Checks `dump` whole (as `db import` into sled does) and turns it into
/// the etcd keys under the cluster's prefix.
pub async fn prepare(dump: Dump, config: &ClusterConfig) -> Result<Writes, IpamError> {
    let mem = Arc::new(MemStore::default());
    let ipam = Ipam::with_store(
        PathBuf::new(),
        mem.clone(),
        IpamOptions::default(),
        Stats::new(16),
    )?;
    ipam.import(dump, false).await?;
    mem.writes(&Keys::new(&config.prefix))
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub keys: usize,
    pub txns: usize,
    /// The cluster had a server DUID already and kept it.
    pub kept_duid: bool,
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cluster prefix '{prefix}' is not empty ({found} holds data): import only into an empty prefix")]
    NotEmpty { prefix: String, found: String },
    #[error("{0}")]
    Etcd(#[from] IpamError),
}

/// Writes `writes` into the cluster of `config`, refusing a prefix that
/// holds any data already. A txn that fails part way deletes what the
/// earlier ones wrote (compared on their revision), so nothing is half
/// imported. Blocking.
pub fn import(config: &ClusterConfig, writes: Writes) -> Result<Imported, ImportError> {
    let etcd = Etcd::connect(&config.etcd, &config.prefix)?;
    let (kvs, _) = etcd.load_all()?;
    if let Some(kv) = kvs.iter().find(|kv| holds_data(&etcd.keys, kv.key())) {
        return Err(ImportError::NotEmpty {
            prefix: config.prefix.clone(),
            found: String::from_utf8_lossy(kv.key()).into_owned(),
        });
    }
    // A node that ran on the prefix made a server DUID already: it stays
    // (the imported store's v6 clients Rebind to it).
    let duid = etcd.keys.of_tree(TreeId::Meta, DUID_KEY);
    let kept_duid = kvs.iter().any(|kv| Some(kv.key()) == duid.as_deref());
    let writes = writes
        .into_iter()
        .filter(|g| !kept_duid || !g.iter().any(|(k, _)| Some(k) == duid.as_ref()));
    let mut done: Vec<(Vec<Vec<u8>>, i64)> = Vec::new();
    let mut count = 0;
    let mut part: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut groups = writes.into_iter().peekable();
    while let Some(group) = groups.next() {
        part.extend(group);
        let full = groups
            .peek()
            .is_none_or(|g| part.len() + g.len() > KEYS_PER_TXN);
        if !full {
            continue;
        }
        let keys: Vec<Vec<u8>> = part.iter().map(|(k, _)| k.clone()).collect();
        match create_all(&etcd, std::mem::take(&mut part)) {
            Ok(rev) => {
                count += keys.len();
                done.push((keys, rev));
            }
            Err(e) => {
                undo(&etcd, &done);
                return Err(e);
            }
        }
    }
    Ok(Imported {
        keys: count,
        txns: done.len(),
        kept_duid,
    })
}

/// Whether `key` is IPAM data (not a node's registration or its blocks).
fn holds_data(keys: &Keys, key: &[u8]) -> bool {
    match keys.parse(key) {
        Some(Parsed::Tree(t, _)) => t != TreeId::Meta,
        Some(Parsed::Binding(_) | Parsed::Binding6(_)) => true,
        _ => false,
    }
}

/// One txn creating every key of `part` (each compared absent).
fn create_all(etcd: &Etcd, part: Vec<(Vec<u8>, Vec<u8>)>) -> Result<i64, ImportError> {
    let when = part
        .iter()
        .map(|(k, _)| Compare::create_revision(k.clone(), CompareOp::Equal, 0))
        .collect();
    let ops = part
        .into_iter()
        .map(|(k, v)| TxnOp::put(k, v, None))
        .collect();
    let committed = etcd.block(txn(etcd.client(), when, ops))?;
    committed.ok_or_else(|| ImportError::NotEmpty {
        prefix: String::from_utf8_lossy(&etcd.keys.all()).into_owned(),
        found: "a key written meanwhile by someone else".into(),
    })
}

/// Deletes what earlier txns of a failed import created, each key only if
/// nobody changed it since.
fn undo(etcd: &Etcd, done: &[(Vec<Vec<u8>>, i64)]) {
    for (keys, rev) in done {
        for key in keys {
            let when = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)];
            let ops = vec![TxnOp::delete(key.clone(), None)];
            if let Err(e) = etcd.block(txn(etcd.client(), when, ops)) {
                tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "undoing a failed import");
            }
        }
    }
}

type Trees = HashMap<TreeId, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An empty in-memory store the IPAM imports into: what it holds after
/// the import is what goes to etcd.
#[derive(Debug, Default)]
struct MemStore {
    // std Mutex: CPU-only sections, never held across an await.
    trees: Mutex<Trees>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored key in etcd form, each bound lease with its client's
    /// `bindings/<client>` and each bound v6 lease with its IA's
    /// `bindings6/<ia>` (what the cluster store keeps for a binding).
    fn writes(&self, keys: &Keys) -> Result<Writes, IpamError> {
        let trees = self.lock();
        let mut out = Vec::new();
        for tree in [
            TreeId::Subnets,
            TreeId::Reservations,
            TreeId::Isolations,
            TreeId::Leases,
            TreeId::Subnets6,
            TreeId::Leases6,
        ] {
            for (k, v) in trees.get(&tree).into_iter().flatten() {
                let Some(key) = keys.of_tree(tree, k) else {
                    continue;
                };
                let mut group = vec![(key, to_etcd(tree, v)?)];
                if let (TreeId::Leases, Some((client, true))) = (tree, lease_holder(v)) {
                    let ip = <[u8; 4]>::try_from(k.as_slice())
                        .map(Ipv4Addr::from)
                        .map_err(|_| {
                            IpamError::Storage("a lease key is not an IPv4 address".into())
                        })?;
                    group.push((
                        keys.binding(&client.to_string()),
                        ip.to_string().into_bytes(),
                    ));
                }
                if let (TreeId::Leases6, Some((ia, true))) = (tree, lease6_holder(v)) {
                    let at = key6_to_text(k)
                        .ok_or_else(|| IpamError::Storage("a v6 lease key is malformed".into()))?;
                    group.push((keys.binding6(&ia.to_string()), at.into_bytes()));
                }
                out.push(group);
            }
        }
        let duid = trees.get(&TreeId::Meta).and_then(|t| t.get(DUID_KEY));
        if let (Some(d), Some(key)) = (duid, keys.of_tree(TreeId::Meta, DUID_KEY)) {
            out.push(vec![(key, d.clone())]);
        }
        Ok(out)
    }
}

impl Store for MemStore {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, IpamError> {
        Ok(self.lock().get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn scan(&self, tree: TreeId, from: &[u8], to: Option<&[u8]>) -> KvIter<'_> {
        let items: Vec<_> = self
            .lock()
            .get(&tree)
            .map(|t| {
                t.range(from.to_vec()..)
                    .take_while(|(k, _)| to.is_none_or(|to| k.as_slice() < to))
                    .map(|(k, v)| Ok((k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Box::new(items.into_iter())
    }

    fn apply(&self, ops: &[Op]) -> Result<(), IpamError> {
        let mut trees = self.lock();
        for op in ops {
            let t = trees.entry(op.tree).or_default();
            match &op.value {
                Some(v) => t.insert(op.key.clone(), v.clone()),
                None => t.remove(&op.key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IpamError> {
        Ok(())
    }

    fn flush_async(&self) -> BoxFuture<'static, Result<(), IpamError>> {
        Box::pin(async { Ok(()) })
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn reopen(&self) -> Result<(), IpamError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cluster::testkit::TestEtcd;

    /// A key that appears under the prefix after the emptiness check (here
    /// one the check does not count) fails its txn's compare: nothing is
    /// overwritten, and the txns before it are undone.
    #[test]
    fn a_key_taken_meanwhile_fails_the_import_and_undoes_the_earlier_txns() {
        let etcd = TestEtcd::start();
        let config = ClusterConfig {
            node: "t".into(),
            etcd: vec![etcd.url.clone()],
            prefix: "/vpcbox/imp".into(),
            lease_ttl: std::time::Duration::from_secs(10),
            block_size: 16,
        };
        let put = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &etcd.url,
                "put",
                "/vpcbox/imp/nodes/zz",
                "theirs",
            ])
            .status()
            .unwrap();
        assert!(put.success());
        let mut writes: Writes = (0..KEYS_PER_TXN + 5)
            .map(|i| {
                vec![(
                    format!("/vpcbox/imp/subnets/s{i}").into_bytes(),
                    b"{}".to_vec(),
                )]
            })
            .collect();
        writes.push(vec![(b"/vpcbox/imp/nodes/zz".to_vec(), b"ours".to_vec())]);
        let err = import(&config, writes).unwrap_err();
        assert!(matches!(err, ImportError::NotEmpty { .. }), "{err}");
        assert_eq!(etcd.get("/vpcbox/imp/subnets/", true), Vec::<String>::new());
        assert_eq!(etcd.get("/vpcbox/imp/nodes/zz", false)[1], "theirs");
    }
}
