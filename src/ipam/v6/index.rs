//! The in-memory index of the DHCPv6 bindings, pure (no store, no clock).
//! A v6 pool can be a /64: nothing here is per address of a pool. Only
//! addresses and prefixes with a stored binding or a live offer have a
//! slot, in one ordered map; a free one is found by hashing the IA to a
//! start point in the pool's window (`window.rs`) and walking the slots
//! from there to a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::record::Key6;
use super::spec::Subnet6Spec;
use super::types::{Ia6Key, Ia6Kind};
use super::window::Window;
use crate::client::ClientKey;
use crate::hash::Map;
use crate::ipam::maps::Ports;
use crate::ipam::model::LeaseState;
use crate::ipam::record::{BOUND, FREE};

/// State code of a declined binding (as `record::state_code`).
pub const DECLINED: u8 = 4;

/// Slots looked at past the start point when a pool holds as many slots
/// as it has members (every one may still be taken): bounds the work of a
/// Solicit on a full pool.
const FULL_PROBES: usize = 256;

#[derive(Debug, Clone)]
pub struct Offer6 {
    pub ia: Ia6Key,
    pub expires: u32,
    pub at: u32,
}

/// What the index knows of one address or prefix.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Stored state ([`FREE`]: no record).
    pub code: u8,
    /// Expiry of the record (quarantine end for declined).
    pub time: u32,
    pub offer: Option<Offer6>,
}

/// One pool: the members `lo, lo + step, ..., hi` of length `len`.
#[derive(Debug, Clone)]
pub struct Pool {
    pub lo: u128,
    pub hi: u128,
    pub len: u8,
    /// Slots (records or offers) on its members.
    pub entries: u128,
    /// Where its searches for a free member start.
    pub window: Window,
}

impl Pool {
    fn new(lo: u128, hi: u128, len: u8) -> Self {
        let size = ((hi - lo) / step(len)).saturating_add(1);
        Self {
            lo,
            hi,
            len,
            entries: 0,
            window: Window::new(size),
        }
    }

    pub fn kind(&self) -> Ia6Kind {
        if self.len == 128 {
            Ia6Kind::Na
        } else {
            Ia6Kind::Pd
        }
    }

    fn step(&self) -> u128 {
        step(self.len)
    }

    pub fn size(&self) -> u128 {
        ((self.hi - self.lo) / self.step()).saturating_add(1)
    }

    pub fn contains(&self, k: Key6) -> bool {
        k.len == self.len
            && self.lo <= k.addr
            && k.addr <= self.hi
            && (k.addr - self.lo) % self.step() == 0
    }

    fn member(&self, i: u128) -> Key6 {
        Key6 {
            addr: self.lo + i * self.step(),
            len: self.len,
        }
    }
}

/// One subnet: its spec, its address pools then its delegated-prefix pools.
#[derive(Debug)]
pub struct Subnet6Index {
    pub spec: Arc<Subnet6Spec>,
    pub pools: Vec<Pool>,
    /// Bound, declined and offered slots.
    pub bound: u64,
    pub declined: u64,
    pub offered: u64,
}

impl Subnet6Index {
    pub fn new(spec: Arc<Subnet6Spec>) -> Self {
        let mut pools: Vec<Pool> = spec
            .pools
            .iter()
            .map(|r| Pool::new(u128::from(r.start), u128::from(r.end), 128))
            .collect();
        for p in &spec.pd_pools {
            let len = p.delegated_len;
            let lo = u128::from(p.prefix.network());
            let hi = u128::from(p.prefix.broadcast()) - (step(len) - 1);
            pools.push(Pool::new(lo, hi, len));
        }
        Self {
            spec,
            pools,
            bound: 0,
            declined: 0,
            offered: 0,
        }
    }

    /// Whether `k` belongs to this subnet: an address on its link, or a
    /// prefix of one of its delegated-prefix pools.
    pub fn owns(&self, k: Key6) -> bool {
        self.spec.owns(k.net())
    }

    pub fn pool_of(&self, k: Key6) -> Option<usize> {
        self.pools.iter().position(|p| p.contains(k))
    }

    /// Bindings and offers in `state` (v6 keeps no released or expired ones).
    pub fn count(&self, state: LeaseState) -> u64 {
        match state {
            LeaseState::Bound => self.bound,
            LeaseState::Declined => self.declined,
            LeaseState::Offered => self.offered,
            LeaseState::Released | LeaseState::Expired => 0,
        }
    }

    /// Members of the pools of `kind`.
    pub fn size(&self, kind: Ia6Kind) -> u128 {
        self.pools
            .iter()
            .filter(|p| p.kind() == kind)
            .fold(0u128, |n, p| n.saturating_add(p.size()))
    }
}

#[derive(Debug, Default)]
pub struct V6State {
    /// In prefix order.
    pub subnets: Vec<Subnet6Index>,
    pub slots: BTreeMap<Key6, Slot>,
    /// The IA holding each bound record.
    pub ias: Map<Ia6Key, Key6>,
    /// `ias` and `offer_of` change through `held.rs`, which counts, per
    /// client, the IAs of each type with a binding or a live offer.
    pub offer_of: Map<Ia6Key, Key6>,
    pub held_by: Map<ClientKey, [u32; 2]>,
    offer_due: BTreeSet<(u32, Key6)>,
    /// `(time, key)` of every bound or declined record.
    expiry: BTreeSet<(u32, Key6)>,
    /// Bound bindings and live offers per relay port.
    pub ports: Ports<Key6>,
    /// Key → sequence number of its latest write (pruned once flushed).
    pub pending: Map<Key6, u64>,
    /// Binding records queued for the committer (see `State::overlay`).
    pub overlay: Map<Key6, (u64, Option<Vec<u8>>)>,
    /// Keys the hash of an IA that gives its search's start in a window
    /// (SipHash, randomly keyed: an outsider cannot compute it).
    start_key: RandomState,
}

impl V6State {
    pub fn subnet_ix(&self, id: &str) -> Option<usize> {
        self.subnets.iter().position(|s| s.spec.id == id)
    }

    pub fn subnet_of(&self, k: Key6) -> Option<usize> {
        self.subnets.iter().position(|s| s.owns(k))
    }

    pub fn insert_subnet(&mut self, ix: Subnet6Index) {
        let at = self
            .subnets
            .partition_point(|s| s.spec.prefix < ix.spec.prefix);
        self.subnets.insert(at, ix);
    }

    pub fn slot(&self, k: Key6) -> Option<&Slot> {
        self.slots.get(&k)
    }

    /// Whether `ia` holds `k` bound (its lifetime may have run out, not
    /// yet reaped).
    pub fn holds(&self, ia: &Ia6Key, k: Key6) -> bool {
        self.ias.get(ia) == Some(&k) && self.slot(k).is_some_and(|s| s.code == BOUND)
    }

    /// Whether `ia` may be given `k` at `now`: nobody else's live offer,
    /// binding or quarantine is on it.
    pub fn available(&self, k: Key6, ia: &Ia6Key, now: u32) -> bool {
        let Some(s) = self.slot(k) else { return true };
        if s.offer
            .as_ref()
            .is_some_and(|o| o.expires > now && &o.ia != ia)
        {
            return false;
        }
        match s.code {
            BOUND if s.time > now => self.ias.get(ia) == Some(&k),
            DECLINED if s.time > now => false,
            _ => true,
        }
    }

    /// A member of pool `p` of subnet `s` that `ia` may be given: the
    /// first gap in the slots at or after the IA's start point, wrapping.
    pub fn probe(&self, s: usize, p: usize, ia: &Ia6Key, now: u32) -> Option<Key6> {
        let pool = &self.subnets[s].pools[p];
        let size = pool.size();
        let start = pool.window.start(self.start_key.hash_one(ia)) % size;
        let ok = |k: Key6| self.available(k, ia, now);
        let found = if pool.entries >= size {
            // Maybe full: only a few may still be free (ended, not reaped).
            (0..size.min(FULL_PROBES as u128))
                .map(|i| pool.member((start + i) % size))
                .find(|k| ok(*k))
        } else {
            // Not full, so a member without a slot exists: walk the slots
            // from the start point (then from the pool's start) to the first gap.
            let first = pool.member(start);
            self.gap(first, pool, &ok)
                .or_else(|| self.gap(pool.member(0), pool, &ok))
        };
        if found.is_some() {
            pool.window.took(size);
        }
        found
    }

    /// The first member at or after `from` (up to the pool's end) that has
    /// no slot, or whose slot `ok` accepts.
    fn gap(&self, from: Key6, pool: &Pool, ok: &dyn Fn(Key6) -> bool) -> Option<Key6> {
        let mut cand = from;
        for (k, _) in self.slots.range(from..) {
            if k.addr > pool.hi {
                break;
            }
            // Another length, or off the pool's grid (a changed config).
            if k.len != pool.len || *k < cand {
                continue;
            }
            if *k > cand || ok(*k) {
                return Some(cand);
            }
            cand.addr = cand.addr.checked_add(pool.step())?;
            if cand.addr > pool.hi {
                return None;
            }
        }
        (cand.addr <= pool.hi).then_some(cand)
    }

    /// Records the stored state of `k` (`None`: no record).
    pub fn set(&mut self, k: Key6, st: Option<(u8, u32)>) {
        let (code, time) = st.unwrap_or((FREE, 0));
        let (old, old_time) = self.slot(k).map_or((FREE, 0), |s| (s.code, s.time));
        if old != FREE {
            self.expiry.remove(&(old_time, k));
        }
        if code != FREE {
            self.expiry.insert((time, k));
        }
        self.count(k, old, -1);
        self.count(k, code, 1);
        // In place: the slot's offer (and its IA) stays where it is.
        match self.slots.get_mut(&k) {
            Some(s) if code != FREE || s.offer.is_some() => {
                s.code = code;
                s.time = time;
            }
            Some(_) => self.put(k, Slot::default()),
            None => self.put(
                k,
                Slot {
                    code,
                    time,
                    offer: None,
                },
            ),
        }
    }

    fn count(&mut self, k: Key6, code: u8, by: i64) {
        let Some(s) = self.subnet_of(k) else { return };
        let sub = &mut self.subnets[s];
        let n = match code {
            BOUND => &mut sub.bound,
            DECLINED => &mut sub.declined,
            _ => return,
        };
        *n = n.saturating_add_signed(by);
    }

    /// Stores `slot` (removing it when empty), keeping the pools' counts.
    fn put(&mut self, k: Key6, slot: Slot) {
        let empty = slot.code == FREE && slot.offer.is_none();
        let was = if empty {
            self.slots.remove(&k).is_some()
        } else {
            self.slots.insert(k, slot).is_some()
        };
        if was == empty {
            let Some(s) = self.subnet_of(k) else { return };
            let sub = &mut self.subnets[s];
            if let Some(p) = sub.pool_of(k) {
                let e = &mut sub.pools[p].entries;
                *e = if empty { e.saturating_sub(1) } else { *e + 1 };
            }
        }
    }

    /// Holds `k` for `ia` until `expires` (memory only), counted against
    /// `port` while it lasts.
    pub fn offer(&mut self, k: Key6, ia: &Ia6Key, expires: u32, now: u32, port: Option<u64>) {
        if let Some(old) = self.offer_of.get(ia).copied() {
            self.drop_offer(old);
        }
        self.drop_offer(k);
        let mut slot = self.slots.get(&k).cloned().unwrap_or_default();
        slot.offer = Some(Offer6 {
            ia: ia.clone(),
            expires,
            at: now,
        });
        self.put(k, slot);
        self.offer_ia(ia, k);
        self.offer_due.insert((expires, k));
        if let Some(s) = self.subnet_of(k) {
            self.subnets[s].offered += 1;
        }
        if self.slot(k).is_some_and(|s| s.code != BOUND) {
            self.ports.set(k, port);
        }
    }

    pub fn drop_offer(&mut self, k: Key6) {
        let Some(slot) = self.slots.get_mut(&k) else {
            return;
        };
        let Some(o) = slot.offer.take() else { return };
        let code = slot.code;
        self.offer_due.remove(&(o.expires, k));
        if self.offer_of.get(&o.ia) == Some(&k) {
            self.unoffer_ia(&o.ia);
        }
        if let Some(s) = self.subnet_of(k) {
            self.subnets[s].offered = self.subnets[s].offered.saturating_sub(1);
        }
        if code != BOUND {
            self.ports.set(k, None);
        }
        if code == FREE {
            self.put(k, Slot::default());
        }
    }

    pub fn live_offers(&self) -> usize {
        self.offer_due.len()
    }

    /// Drops offers that timed out; returns whether any did.
    pub fn purge_offers(&mut self, now: u32) -> bool {
        let mut any = false;
        while let Some(&(exp, k)) = self.offer_due.first() {
            if exp > now {
                break;
            }
            self.drop_offer(k);
            // A slot without its offer (never: both move together) still leaves.
            self.offer_due.remove(&(exp, k));
            any = true;
        }
        any
    }

    /// The earliest record expiry or offer end (`u32::MAX`: none).
    pub fn next_deadline(&self) -> u32 {
        let e = self.expiry.first().map_or(u32::MAX, |(t, _)| *t);
        let o = self.offer_due.first().map_or(u32::MAX, |(t, _)| *t);
        e.min(o)
    }

    /// The earliest record expiry (`u32::MAX`: none).
    pub fn next_expiry(&self) -> u32 {
        self.expiry.first().map_or(u32::MAX, |(t, _)| *t)
    }

    /// Records whose lifetime or quarantine ended at or before `now`.
    pub fn due(&self, now: u32) -> Vec<Key6> {
        self.expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| *k)
            .collect()
    }
}

/// The distance between two prefixes of length `len` (1 for addresses).
fn step(len: u8) -> u128 {
    1u128
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::v6::spec::Range6;

    fn state(start: &str, end: &str) -> V6State {
        let spec = Subnet6Spec {
            pools: vec![Range6 {
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
            }],
            ..Subnet6Spec::new("t", "fd00::/64".parse().unwrap())
        };
        let mut v6 = V6State::default();
        v6.insert_subnet(Subnet6Index::new(Arc::new(spec)));
        v6
    }

    fn addr(s: &str) -> Key6 {
        Key6::of(s.parse::<std::net::Ipv6Addr>().unwrap().into())
    }

    fn ia(n: u32) -> Ia6Key {
        Ia6Key {
            client: crate::client::ClientKey::Duid(vec![0, 4, 1, 2, 3].into()),
            kind: Ia6Kind::Na,
            iaid: n,
        }
    }

    /// The walk skips a run of taken members to the first gap, stops at the
    /// pool's end, and a full pool still finds a member whose binding ended.
    #[test]
    fn the_walk_finds_the_first_gap_and_a_full_pool_its_ended_members() {
        let mut v6 = state("fd00::100", "fd00::107");
        let pool = v6.subnets[0].pools[0].clone();
        let gap = |v6: &V6State, from: Key6| v6.gap(from, &pool, &|k| v6.available(k, &ia(1), 10));
        for i in 0..6u128 {
            v6.set(pool.member(i), Some((BOUND, 1000)));
        }
        assert_eq!(gap(&v6, pool.member(0)), Some(addr("fd00::106")));
        assert_eq!(gap(&v6, pool.member(7)), Some(addr("fd00::107")));
        v6.set(pool.member(6), Some((DECLINED, 1000)));
        v6.set(pool.member(7), Some((BOUND, 1000)));
        assert_eq!(v6.subnets[0].pools[0].entries, 8);
        assert_eq!(gap(&v6, pool.member(6)), None);
        assert_eq!(v6.probe(0, 0, &ia(1), 10), None);
        // Ended at 5, not reaped yet: free at 10.
        v6.set(pool.member(3), Some((BOUND, 5)));
        assert_eq!(v6.probe(0, 0, &ia(1), 10), Some(addr("fd00::103")));
        // Removing a record frees its slot and the pool's count.
        v6.set(pool.member(3), None);
        assert_eq!(v6.subnets[0].pools[0].entries, 7);
        assert_eq!(v6.subnets[0].bound, 6);
    }

    /// New members come from the pool's window (a batch of new bindings
    /// sits together in the store), never in address order, never twice,
    /// and the windows move over the whole pool until it is found full.
    #[test]
    fn new_members_come_from_a_window_never_twice_until_the_pool_is_full() {
        use crate::ipam::v6::window::WINDOW;
        let mut v6 = state("fd00::", "fd00::ffff:ffff:ffff:ffff");
        let mut picks = Vec::new();
        for n in 0..(WINDOW / 2) as u32 {
            let k = v6.probe(0, 0, &ia(n), 10).unwrap();
            v6.set(k, Some((BOUND, 1000)));
            picks.push(k.addr);
        }
        let (lo, hi) = (picks.iter().min().unwrap(), picks.iter().max().unwrap());
        assert!(hi - lo < 2 * WINDOW, "spread over {}", hi - lo);
        let in_order = picks.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(in_order < picks.len() / 4, "{in_order} handed out in order");
        // The next window is elsewhere in the /64.
        let next = v6.probe(0, 0, &ia(u32::MAX), 10).unwrap();
        assert!(next.addr.abs_diff(*lo) > 4 * WINDOW);

        let size = 3 * WINDOW as u32 + 17;
        let mut v6 = state("fd00::1:0", &format!("fd00::1:{:x}", size - 1));
        let mut seen = BTreeSet::new();
        for n in 0..size {
            let k = v6.probe(0, 0, &ia(n), 10).unwrap();
            assert!(seen.insert(k), "{k:?} handed out twice");
            v6.set(k, Some((BOUND, 1000)));
        }
        assert_eq!(v6.probe(0, 0, &ia(size), 10), None);
    }

    /// Another IA's live offer is taken; the same IA's is not; an offer
    /// past its end is purged and its slot freed.
    #[test]
    fn offers_hold_for_their_ia_until_purged() {
        let mut v6 = state("fd00::100", "fd00::100");
        let k = addr("fd00::100");
        v6.offer(k, &ia(1), 30, 0, None);
        assert!(!v6.available(k, &ia(2), 29));
        assert!(v6.available(k, &ia(1), 29));
        assert_eq!(v6.next_deadline(), 30);
        assert!(v6.purge_offers(30));
        assert!(v6.slot(k).is_none());
        assert_eq!(
            (v6.subnets[0].offered, v6.subnets[0].pools[0].entries),
            (0, 0)
        );
        assert_eq!(v6.next_deadline(), u32::MAX);
    }
}
