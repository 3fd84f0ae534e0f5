//! This node's copy of everything under the prefix, kept current by the
//! watch and by its own successful txns, each key with the revision it was
//! last written at: reads are answered from here, and every write compares
//! against these revisions, so a write planned on a stale copy fails in
//! etcd instead of overwriting what another node wrote.

use std::collections::{BTreeMap, HashMap, HashSet};

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};

use super::keys::{from_etcd, ia_of, Keys, Parsed};
use crate::client::ClientKey;
use crate::ipam::{key6_from_text, Queued, RemoteLease, RemoteLease6, TreeId};

/// The value of `blocks/<subnet>/<first-ip>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockValue {
    pub node: String,
    /// The owner's registration (its `nodes/<node>` create revision).
    pub epoch: i64,
}

/// What a node last published of its rates (rates.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRates {
    pub dhcp_acks_per_s: f64,
    pub api_requests_per_s: f64,
}

/// The value of `nodes/<node>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeValue {
    pub node: String,
    /// Absent until the node has measured them (and from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<NodeRates>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub owner: BlockValue,
    /// The claim's revision: the fence token of every write in the block.
    pub create_rev: i64,
}

/// A stored value and the revision it was written at.
pub type Versioned = (Vec<u8>, i64);

#[derive(Debug, Default)]
pub struct Replica {
    /// The IPAM store's trees, in their key and value forms.
    pub trees: HashMap<TreeId, BTreeMap<Vec<u8>, Versioned>>,
    /// Client text → (address it is bound to, revision).
    pub bindings: HashMap<String, (u32, i64)>,
    /// IA text → (store key of the v6 binding it holds, revision).
    pub bindings6: HashMap<String, (Vec<u8>, i64)>,
    pub blocks: BTreeMap<(String, u32), Block>,
    /// Each owner registration's `(node, epoch)` blocks and their claim
    /// revisions, kept with `blocks`: a node finds its own blocks, and the
    /// view counts each node's, without a walk of every block.
    by_owner: HashMap<(String, i64), BTreeMap<(String, u32), i64>>,
    /// Live nodes → their registration revision.
    pub nodes: BTreeMap<String, i64>,
    /// Live nodes → the rates they last published in their key.
    pub rates: BTreeMap<String, NodeRates>,
    /// Keys another node changed while a local write of them was queued:
    /// that write must fail (the store refuses it until reopened).
    pub poisoned: HashSet<Vec<u8>>,
}

/// What one batch of watch events changed, beyond the copy itself.
#[derive(Debug, Default)]
pub struct Folded {
    pub leases: Vec<RemoteLease>,
    pub leases6: Vec<RemoteLease6>,
    /// Subnets or reservations changed: the IPAM reloads its index.
    pub reload: bool,
    pub isolations: bool,
    /// Nodes, their rates or blocks changed: the cluster view is rebuilt.
    pub layout: bool,
    /// A node joined, left or registered again: membership and this
    /// node's blocks are recomputed.
    pub members: bool,
    /// Nodes whose blocks changed (old and new owners): when this node is
    /// among them, its blocks are recomputed.
    pub owners: Vec<String>,
}

impl Replica {
    /// A copy of `kvs` (a full read of the prefix).
    pub fn load(keys: &Keys, kvs: &[KeyValue]) -> Self {
        let mut r = Self::default();
        for kv in kvs {
            r.put(keys, kv, None, &mut Folded::default());
        }
        r
    }

    pub fn tree(&self, t: TreeId) -> Option<&BTreeMap<Vec<u8>, Versioned>> {
        self.trees.get(&t)
    }

    /// The blocks `node` holds under its registration `epoch`, in key
    /// order, each with its claim revision.
    pub fn blocks_of(&self, node: &str, epoch: i64) -> Option<&BTreeMap<(String, u32), i64>> {
        // A handful of owners: no key is built for the lookup.
        self.by_owner
            .iter()
            .find(|((n, e), _)| *e == epoch && n == node)
            .map(|(_, blocks)| blocks)
    }

    /// Adds `block` at `at` to its owner's blocks, or takes it out.
    fn index(&mut self, at: &(String, u32), block: &Block, add: bool) {
        let owner = (block.owner.node.clone(), block.owner.epoch);
        if add {
            let blocks = self.by_owner.entry(owner).or_default();
            blocks.insert(at.clone(), block.create_rev);
        } else if let Some(blocks) = self.by_owner.get_mut(&owner) {
            blocks.remove(at);
            if blocks.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// The revision `key` (an etcd key) was last written at; 0: absent.
    pub fn rev_of(&self, keys: &Keys, key: &[u8]) -> i64 {
        keys.parse(key).map_or(0, |p| self.rev_at(&p))
    }

    /// [`Self::rev_of`] a key parsed already.
    fn rev_at(&self, parsed: &Parsed) -> i64 {
        match parsed {
            Parsed::Tree(t, k) => self.tree(*t).and_then(|m| m.get(k)).map_or(0, |v| v.1),
            Parsed::Binding(c) => self.bindings.get(c).map_or(0, |b| b.1),
            Parsed::Binding6(ia) => self.bindings6.get(ia).map_or(0, |b| b.1),
            Parsed::Block(s, f) => self
                .blocks
                .get(&(s.clone(), *f))
                .map_or(0, |b| b.create_rev),
            Parsed::Node(n) => self.nodes.get(n).copied().unwrap_or(0),
        }
    }

    /// Folds a watched put.
    pub fn put(
        &mut self,
        keys: &Keys,
        kv: &KeyValue,
        queued: Option<&dyn Queued>,
        out: &mut Folded,
    ) {
        let at = (kv.mod_revision(), kv.create_revision());
        self.put_raw(keys, kv.key(), kv.value(), at, queued, out);
    }

    /// Folds a put of `key` at `(mod, create)` revisions (watched, or one
    /// of our own confirmed writes): skipped when the copy holds that
    /// revision or a newer one. With `queued`, a change to a key a local
    /// write is pending on poisons that key.
    pub fn put_raw(
        &mut self,
        keys: &Keys,
        key: &[u8],
        value: &[u8],
        (rev, create_rev): (i64, i64),
        queued: Option<&dyn Queued>,
        out: &mut Folded,
    ) {
        let Some(parsed) = keys.parse(key) else {
            return;
        };
        // Also each of this node's own writes, which the watch brings back.
        if self.rev_at(&parsed) >= rev {
            return;
        }
        match parsed {
            Parsed::Tree(t, k) => {
                let Ok(v) = from_etcd(t, value) else {
                    tracing::warn!(key = %String::from_utf8_lossy(key), "unreadable value in etcd; ignored");
                    return;
                };
                self.set(t, k, Some((v, rev)), key, queued, out);
            }
            Parsed::Binding(c) => {
                let ip = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
                    .map(u32::from);
                if let Some(ip) = ip {
                    self.check_binding(&c, Some(ip), key, queued);
                    self.bindings.insert(c, (ip, rev));
                }
            }
            Parsed::Binding6(ia) => {
                let to = std::str::from_utf8(value).ok().and_then(key6_from_text);
                if let Some(to) = to {
                    self.check_binding6(&ia, Some(&to), key, queued);
                    self.bindings6.insert(ia, (to, rev));
                }
            }
            Parsed::Block(s, f) => {
                if let Ok(owner) = serde_json::from_slice::<BlockValue>(value) {
                    let (at, block) = ((s, f), Block { owner, create_rev });
                    out.owners.push(block.owner.node.clone());
                    // The old owner's entry goes first: a put by the same
                    // owner keeps its entry.
                    if let Some(old) = self.blocks.remove(&at) {
                        self.index(&at, &old, false);
                        out.owners.push(old.owner.node);
                    }
                    self.index(&at, &block, true);
                    self.blocks.insert(at, block);
                    out.layout = true;
                }
            }
            Parsed::Node(n) => {
                let rates = serde_json::from_slice::<NodeValue>(value)
                    .ok()
                    .and_then(|v| v.rates);
                let old = match rates {
                    Some(r) => self.rates.insert(n.clone(), r),
                    None => self.rates.remove(&n),
                };
                let joined = self.nodes.insert(n, create_rev) != Some(create_rev);
                out.layout |= joined || old != rates;
                out.members |= joined;
            }
        }
    }

    /// Folds a watched delete at revision `rev`.
    pub fn delete(
        &mut self,
        keys: &Keys,
        key: &[u8],
        rev: i64,
        queued: Option<&dyn Queued>,
        out: &mut Folded,
    ) {
        let Some(parsed) = keys.parse(key) else {
            return;
        };
        let have = self.rev_at(&parsed);
        if have == 0 || have >= rev {
            return;
        }
        match parsed {
            Parsed::Tree(t, k) => self.set(t, k, None, key, queued, out),
            Parsed::Binding(c) => {
                self.check_binding(&c, None, key, queued);
                self.bindings.remove(&c);
            }
            Parsed::Binding6(ia) => {
                self.check_binding6(&ia, None, key, queued);
                self.bindings6.remove(&ia);
            }
            Parsed::Block(s, f) => {
                let at = (s, f);
                if let Some(old) = self.blocks.remove(&at) {
                    self.index(&at, &old, false);
                    out.owners.push(old.owner.node);
                    out.layout = true;
                }
            }
            Parsed::Node(n) => {
                self.rates.remove(&n);
                let gone = self.nodes.remove(&n).is_some();
                out.layout |= gone;
                out.members |= gone;
            }
        }
    }

    fn set(
        &mut self,
        t: TreeId,
        k: Vec<u8>,
        new: Option<Versioned>,
        etcd_key: &[u8],
        queued: Option<&dyn Queued>,
        out: &mut Folded,
    ) {
        let tree = self.trees.entry(t).or_default();
        let old = match &new {
            Some(v) => tree.insert(k.clone(), v.clone()),
            None => tree.remove(&k),
        };
        match t {
            TreeId::Leases => {
                let Ok(ip) = <[u8; 4]>::try_from(k.as_slice()).map(u32::from_be_bytes) else {
                    return;
                };
                let value = new.as_ref().map(|v| v.0.as_slice());
                if queued.is_some_and(|q| q.lease_differs(ip, value)) {
                    self.poisoned.insert(etcd_key.to_vec());
                }
                out.leases.push(RemoteLease {
                    ip,
                    old: old.map(|v| v.0),
                    new: new.map(|v| v.0),
                });
            }
            TreeId::Leases6 => {
                let value = new.as_ref().map(|v| v.0.as_slice());
                if queued.is_some_and(|q| q.lease6_differs(&k, value)) {
                    self.poisoned.insert(etcd_key.to_vec());
                }
                out.leases6.push(RemoteLease6 {
                    key: k,
                    old: old.map(|v| v.0),
                    new: new.map(|v| v.0),
                });
            }
            TreeId::Subnets | TreeId::Reservations | TreeId::Subnets6 => out.reload = true,
            TreeId::Isolations => out.isolations = true,
            TreeId::Meta | TreeId::Clients => {}
        }
    }

    /// A remote change of an IA's v6 binding while a local write for that
    /// IA is queued poisons the binding's key (as v4's [`Self::check_binding`]).
    fn check_binding6(
        &mut self,
        ia: &str,
        to: Option<&[u8]>,
        key: &[u8],
        queued: Option<&dyn Queued>,
    ) {
        let Some(q) = queued else { return };
        if ia_of(ia).is_some_and(|ia| q.ia_differs(&ia, to)) {
            self.poisoned.insert(key.to_vec());
        }
    }

    fn check_binding(
        &mut self,
        client: &str,
        ip: Option<u32>,
        key: &[u8],
        queued: Option<&dyn Queued>,
    ) {
        let Some(q) = queued else { return };
        if client
            .parse::<ClientKey>()
            .is_ok_and(|c| q.client_differs(&c, ip))
        {
            self.poisoned.insert(key.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each owner's blocks follow claims, takeovers, rewrites and deletes
    /// (a node's own blocks and the view are read from them), and a batch
    /// names the owners whose blocks changed and whether membership did.
    #[test]
    fn block_counts_follow_claims_takeovers_and_deletes() {
        let keys = Keys::new("/vpcbox/v1/");
        let mut r = Replica::default();
        let owner = |node: &str, epoch: i64| {
            serde_json::to_vec(&BlockValue {
                node: node.into(),
                epoch,
            })
            .unwrap()
        };
        let mut rev = 0;
        let mut put = |r: &mut Replica, key: Vec<u8>, value: Vec<u8>| {
            rev += 1;
            let mut out = Folded::default();
            r.put_raw(&keys, &key, &value, (rev, rev), None, &mut out);
            (out, rev)
        };
        let node = serde_json::to_vec(&NodeValue {
            node: "a".into(),
            rates: None,
        })
        .unwrap();
        let (out, _) = put(&mut r, keys.node("a"), node);
        assert!(out.members && out.layout);
        for first in [16, 32, 48] {
            let (out, _) = put(&mut r, keys.block("lab", first), owner("a", 1));
            assert_eq!((out.owners, out.members), (vec!["a".to_string()], false));
        }
        let (out, _) = put(&mut r, keys.block("lab", 32), owner("b", 7));
        assert_eq!(out.owners, ["b", "a"]);
        // Written again by its owner: still one of its blocks.
        let (out, _) = put(&mut r, keys.block("lab", 32), owner("b", 7));
        assert_eq!(out.owners, ["b", "b"]);
        let count = |r: &Replica, n: &str, e: i64| r.blocks_of(n, e).map_or(0, |b| b.len());
        assert_eq!((count(&r, "a", 1), count(&r, "b", 7)), (2, 1));
        let mut out = Folded::default();
        r.delete(&keys, &keys.block("lab", 16), 100, None, &mut out);
        assert_eq!(out.owners, ["a"]);
        assert_eq!((count(&r, "a", 1), count(&r, "a", 2)), (1, 0));
        let naive = |r: &Replica, n: &str, e: i64| {
            let owned = r
                .blocks
                .iter()
                .filter(|(_, b)| b.owner.node == n && b.owner.epoch == e);
            owned
                .map(|(k, b)| (k.clone(), b.create_rev))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(r.blocks_of("a", 1), Some(&naive(&r, "a", 1)));
        assert_eq!(r.blocks_of("b", 7), Some(&naive(&r, "b", 7)));
    }
}
