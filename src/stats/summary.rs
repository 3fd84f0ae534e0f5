//! Space-saving top-K bookkeeping (Metwally, Agrawal, El Abbadi, 2005):
//! K slots; a new key takes the slot with the smallest count and inherits
//! it as its `error`, so `count - error <= true <= count`.
//!
//! Slots sit in an array sorted by count, cut into groups of equal count
//! (the paper's "stream-summary"): a hit and an eviction are both O(1).
//! Memory is fixed by K, whatever the number of distinct keys.
//!
//! Each key is stored once, in its slot, with its hash: the index holds slot
//! ids only, so admitting a key (and evicting another) hashes the new key
//! once and allocates one copy of it.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::client::ClientKey;
use crate::hash::Seeded;

#[derive(Debug)]
struct Slot {
    key: Option<ClientKey>,
    /// `key`'s hash in the index (valid while `key` is Some).
    hash: u64,
    count: u64,
    error: u64,
    /// Position in `order`.
    pos: u32,
    /// Index in `groups` of the group holding this slot's count.
    group: u32,
}

/// A run `order[start..=end]` of slots that share `count`.
#[derive(Debug, Clone, Copy)]
struct Group {
    count: u64,
    start: u32,
    end: u32,
}

#[derive(Debug)]
pub(super) struct Summary {
    slots: Vec<Slot>,
    /// Slot ids by ascending count.
    order: Vec<u32>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    /// Slot ids by their key. Keys are what clients send: the hasher is
    /// seeded at random, and the table never holds more than K.
    index: HashTable<u32>,
    hasher: Seeded,
}

impl Summary {
    pub(super) fn new(capacity: usize) -> Self {
        // Slot ids and positions are u32 to keep slots small; a table of
        // four billion clients is not a bounded table anyway.
        let k = capacity.min(u32::MAX as usize - 1) as u32;
        let slots = (0..k)
            .map(|i| Slot {
                key: None,
                hash: 0,
                count: 0,
                error: 0,
                pos: i,
                group: 0,
            })
            .collect();
        let groups = match k {
            0 => Vec::new(),
            _ => vec![Group {
                count: 0,
                start: 0,
                end: k - 1,
            }],
        };
        Self {
            slots,
            order: (0..k).collect(),
            groups,
            free_groups: Vec::new(),
            index: HashTable::with_capacity(k as usize),
            hasher: Seeded::default(),
        }
    }

    /// Number of slots holding a key.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn find(&self, key: &ClientKey) -> Option<usize> {
        self.lookup(key, self.hasher.hash_one(key))
    }

    fn lookup(&self, key: &ClientKey, hash: u64) -> Option<usize> {
        let slots = &self.slots;
        let is = |&id: &u32| slots[id as usize].key.as_ref() == Some(key);
        self.index.find(hash, is).map(|&id| id as usize)
    }

    /// Counts one hit for `key`, admitting it if absent. Returns its slot id
    /// and whether admitting it evicted another key (whose per-slot data the
    /// caller must fold away). `None` only when the capacity is 0.
    pub(super) fn touch(&mut self, key: &ClientKey) -> Option<(usize, bool)> {
        let hash = self.hasher.hash_one(key);
        if let Some(id) = self.lookup(key, hash) {
            self.hit(id);
            return Some((id, false));
        }
        let id = *self.order.first()? as usize;
        let evicted = self.slots[id].key.is_some();
        if evicted {
            let old = self.slots[id].hash;
            if let Ok(entry) = self.index.find_entry(old, |&i| i as usize == id) {
                entry.remove();
            }
        }
        let slot = &mut self.slots[id];
        slot.error = slot.count;
        slot.key = Some(key.clone());
        slot.hash = hash;
        let slots = &self.slots;
        self.index
            .insert_unique(hash, id as u32, |&i| slots[i as usize].hash);
        self.hit(id);
        Some((id, evicted))
    }

    pub(super) fn key(&self, id: usize) -> Option<&ClientKey> {
        self.slots.get(id).and_then(|s| s.key.as_ref())
    }

    pub(super) fn error(&self, id: usize) -> u64 {
        self.slots.get(id).map_or(0, |s| s.error)
    }

    /// Slot ids that hold a key, in no particular order.
    pub(super) fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        self.index.iter().map(|&id| id as usize)
    }

    /// Adds one to slot `id`, keeping `order` sorted in O(1).
    fn hit(&mut self, id: usize) {
        let g = self.slots[id].group as usize;
        let Group { count, start, end } = self.groups[g];
        self.swap(self.slots[id].pos, end);
        // The slot now sits at `end`; it joins the next group if that one
        // holds `count + 1`, or starts a new group there.
        let next = self
            .order
            .get(end as usize + 1)
            .map(|&n| self.slots[n as usize].group)
            .filter(|&ng| self.groups[ng as usize].count == count + 1);
        if start == end {
            self.free_groups.push(g as u32);
        } else {
            self.groups[g].end = end - 1;
        }
        let ng = match next {
            Some(ng) => {
                self.groups[ng as usize].start = end;
                ng
            }
            None => self.new_group(Group {
                count: count + 1,
                start: end,
                end,
            }),
        };
        let slot = &mut self.slots[id];
        slot.group = ng;
        slot.count = count + 1;
    }

    fn swap(&mut self, a: u32, b: u32) {
        self.order.swap(a as usize, b as usize);
        for p in [a, b] {
            let id = self.order[p as usize] as usize;
            self.slots[id].pos = p;
        }
    }

    fn new_group(&mut self, g: Group) -> u32 {
        match self.free_groups.pop() {
            Some(i) => {
                self.groups[i as usize] = g;
                i
            }
            None => {
                self.groups.push(g);
                (self.groups.len() - 1) as u32
            }
        }
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(super) fn assert_valid(&self) {
        let counts: Vec<u64> = self
            .order
            .iter()
            .map(|&id| self.slots[id as usize].count)
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "order is sorted");
        for (p, &id) in self.order.iter().enumerate() {
            let s = &self.slots[id as usize];
            assert_eq!(s.pos as usize, p);
            let g = self.groups[s.group as usize];
            assert_eq!(g.count, s.count);
            assert!(g.start as usize <= p && p <= g.end as usize);
            assert!(s.error <= s.count);
        }
        assert!(self.groups.len() <= self.slots.len() + 1);
        assert_eq!(
            self.index.len(),
            self.slots.iter().filter(|s| s.key.is_some()).count()
        );
        for (id, s) in self.slots.iter().enumerate() {
            if let Some(key) = &s.key {
                assert_eq!(s.hash, self.hasher.hash_one(key));
                assert_eq!(self.find(key), Some(id));
            }
        }
    }
}
