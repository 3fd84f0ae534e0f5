//! Splits one group commit into txns that share no written key, each
//! within etcd's op limit, so that they can run at once (etcd folds
//! concurrent proposals into one WAL fsync). A lease, the bindings of the
//! clients it moves between, and everything linked to those stay in one
//! txn; config keys go in txns of their own. Pure.

use std::collections::{BTreeSet, HashMap};

use etcd_client::{Compare, CompareOp, TxnOp};

/// etcd's default `--max-txn-ops`: no txn may carry more ops, nor more
/// compares.
pub const MAX_TXN_OPS: usize = 128;

/// One key of a batch: the revision it must still have, and its write.
#[derive(Debug, Default)]
pub struct Item {
    pub key: Vec<u8>,
    /// Its `mod_revision` in the copy (0: absent).
    pub rev: i64,
    /// `Some(value)`: written (`Some(None)`: deleted); `None`: compared only.
    pub write: Option<Option<Vec<u8>>>,
    /// The block claim a new binding is fenced by: (block key, claim revision).
    pub block: Option<(Vec<u8>, i64)>,
    /// Config (not a lease or a binding): in txns of its own.
    pub config: bool,
    /// Another node changed it while this write was queued: its txn fails.
    pub poisoned: bool,
}

/// One txn, and the writes to fold into the copy once it committed.
#[derive(Debug, Default)]
pub struct Part {
    pub when: Vec<Compare>,
    pub ops: Vec<TxnOp>,
    /// (etcd key, new value) of each write.
    pub done: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// A key another node changed first: the txn is not sent, it fails.
    pub poisoned: Option<Vec<u8>>,
    blocks: BTreeSet<Vec<u8>>,
}

impl Part {
    fn new(fence: &Compare) -> Self {
        Self {
            when: vec![fence.clone()],
            ..Self::default()
        }
    }

    /// Whether `group` still fits under etcd's limits.
    fn fits(&self, group: &[Item]) -> bool {
        let ops = group.iter().filter(|i| i.write.is_some()).count();
        let blocks: BTreeSet<&Vec<u8>> = group
            .iter()
            .filter_map(|i| i.block.as_ref().map(|b| &b.0))
            .filter(|b| !self.blocks.contains(*b))
            .collect();
        self.ops.len() + ops <= MAX_TXN_OPS
            && self.when.len() + group.len() + blocks.len() <= MAX_TXN_OPS
    }

    fn add(&mut self, item: Item) {
        if item.poisoned && self.poisoned.is_none() {
            self.poisoned = Some(item.key.clone());
        }
        if let Some((block, claim)) = item.block {
            if self.blocks.insert(block.clone()) {
                self.when
                    .push(Compare::create_revision(block, CompareOp::Equal, claim));
            }
        }
        self.when.push(Compare::mod_revision(
            item.key.clone(),
            CompareOp::Equal,
            item.rev,
        ));
        if let Some(value) = item.write {
            self.ops.push(match &value {
                Some(v) => TxnOp::put(item.key.clone(), v.clone(), None),
                None => TxnOp::delete(item.key.clone(), None),
            });
            self.done.push((item.key, value));
        }
    }
}

/// The smallest set of txns for `items`: keys joined by `links` (directly
/// or through others) share one txn; each txn starts with `fence` and
/// stays within [`MAX_TXN_OPS`]. Err: one linked group alone is over it.
/// Txns without a write are left out; a group holding a poisoned key is a
/// txn of its own, so that only it fails.
pub fn partition(
    items: Vec<Item>,
    links: &[(Vec<u8>, Vec<u8>)],
    fence: &Compare,
) -> Result<Vec<Part>, String> {
    let at: HashMap<&[u8], usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.key.as_slice(), i))
        .collect();
    let mut parent: Vec<usize> = (0..items.len()).collect();
    for (a, b) in links {
        if let (Some(&a), Some(&b)) = (at.get(a.as_slice()), at.get(b.as_slice())) {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    // Groups in the order of their first item.
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<Item>> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let r = root(&mut parent, i);
        let g = *group_of.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(item);
    }
    // A group with a key another node changed goes alone (its txn fails).
    let (poisoned, groups): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|g| g.iter().any(|i| i.poisoned));
    let (config, leases): (Vec<_>, Vec<_>) =
        groups.into_iter().partition(|g| g.iter().all(|i| i.config));
    let mut parts = Vec::new();
    for group in poisoned {
        let mut p = Part::new(fence);
        group.into_iter().for_each(|i| p.add(i));
        parts.push(p);
    }
    for kind in [leases, config] {
        let mut cur = Part::new(fence);
        for group in kind {
            if !cur.fits(&group) {
                parts.push(std::mem::replace(&mut cur, Part::new(fence)));
                if !cur.fits(&group) {
                    return Err(format!(
                        "etcd: one write of {} linked keys needs more than etcd's txn op limit ({MAX_TXN_OPS})",
                        group.len()
                    ));
                }
            }
            for item in group {
                cur.add(item);
            }
        }
        parts.push(cur);
    }
    parts.retain(|p| !p.ops.is_empty() || p.poisoned.is_some());
    Ok(parts)
}

fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn lease(i: u32) -> Item {
        Item {
            key: format!("leases/{i}").into_bytes(),
            write: Some(Some(b"x".to_vec())),
            ..Item::default()
        }
    }

    fn binding(i: u32, block: u32) -> Item {
        Item {
            key: format!("bindings/c{i}").into_bytes(),
            write: Some(Some(b"ip".to_vec())),
            block: Some((format!("blocks/{block}").into_bytes(), 7)),
            ..Item::default()
        }
    }

    fn fence() -> Compare {
        Compare::create_revision("nodes/a", CompareOp::Equal, 3)
    }

    /// 300 bindings (600 writes) in one block: parts within the limit, no
    /// key in two parts, each lease with its client's binding, every write
    /// in exactly one part.
    #[test]
    fn a_large_batch_splits_into_parts_that_share_no_key() {
        let (mut items, mut links) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let (l, b) = (lease(i), binding(i, i / 256));
            links.push((l.key.clone(), b.key.clone()));
            items.extend([l, b]);
        }
        let parts = partition(items, &links, &fence()).unwrap();
        assert!(parts.len() >= 5, "{} parts", parts.len());
        let mut seen = HashSet::new();
        for p in &parts {
            assert!(p.ops.len() <= MAX_TXN_OPS && p.when.len() <= MAX_TXN_OPS);
            for (k, _) in &p.done {
                assert!(seen.insert(k.clone()), "{k:?} in two parts");
            }
            for i in 0..300 {
                let has = |k: String| p.done.iter().any(|(d, _)| *d == k.as_bytes());
                assert_eq!(has(format!("leases/{i}")), has(format!("bindings/c{i}")));
            }
        }
        assert_eq!(seen.len(), 600);
    }

    /// A lease moving from one client to another joins both clients'
    /// bindings (and, through them, their other leases) in one part.
    #[test]
    fn linked_keys_share_a_part_and_config_goes_alone() {
        let mut items: Vec<Item> = (0..100).map(lease).collect();
        items.extend((0..100).map(|i| binding(i, 0)));
        items.push(Item {
            key: b"subnets/lab".to_vec(),
            write: Some(Some(b"{}".to_vec())),
            config: true,
            ..Item::default()
        });
        // A chain: lease i linked to binding i and binding i+1.
        let mut links = Vec::new();
        for i in 0..40u32 {
            links.push((lease(i).key, binding(i, 0).key));
            links.push((lease(i).key, binding(i + 1, 0).key));
        }
        let parts = partition(items, &links, &fence()).unwrap();
        let part_of = |k: &[u8]| {
            parts
                .iter()
                .position(|p| p.done.iter().any(|(d, _)| d == k))
        };
        let first = part_of(&lease(0).key);
        for i in 0..40 {
            assert_eq!(part_of(&lease(i).key), first);
            assert_eq!(part_of(&binding(i + 1, 0).key), first);
        }
        let config = part_of(b"subnets/lab").unwrap();
        assert_eq!(parts[config].done.len(), 1, "config in a part of its own");
    }

    #[test]
    fn a_group_over_the_limit_is_refused_and_a_poisoned_key_fails_only_its_group() {
        let mut items: Vec<Item> = (0..200).map(lease).collect();
        let links: Vec<_> = (1..200).map(|i| (lease(0).key, lease(i).key)).collect();
        assert!(partition(items, &links, &fence()).is_err());
        items = (0..3).map(lease).collect();
        items[1].poisoned = true;
        let parts = partition(items, &[], &fence()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].poisoned.as_deref(), Some(lease(1).key.as_slice()));
        assert_eq!((parts[0].done.len(), parts[1].done.len()), (1, 2));
        assert_eq!(parts[1].poisoned, None);
    }
}
