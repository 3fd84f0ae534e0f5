//! Per-subnet in-memory index: one state byte and one time word per address
//! of the CIDR, a free-address bitmap over the pools and an ordered set of
//! reusable (expired, released, quarantined) addresses. Pure: no store, no
//! clock. About 5 bytes per address of the CIDR.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::model::LeaseState;
use super::record::{state_code, FREE};
use super::spec::SubnetSpec;

const BOUND: u8 = 1;
const RELEASED: u8 = 2;
const EXPIRED: u8 = 3;
const DECLINED: u8 = 4;

#[derive(Debug)]
pub struct SubnetIndex {
    pub spec: Arc<SubnetSpec>,
    base: u32,
    state: Vec<u8>,
    time: Vec<u32>,
    /// Bit set: dynamic address with no record, not reserved, not offered.
    free: Vec<u64>,
    cursor: usize,
    /// `(time, ip)` of expired/released/declined addresses not offered.
    reusable: BTreeSet<(u32, u32)>,
    counts: [u64; 5],
    pub offered: u64,
    pub size: u64,
}

impl SubnetIndex {
    /// An empty index; `blocked` are addresses not to mark free (reserved).
    pub fn new(spec: Arc<SubnetSpec>, blocked: impl Fn(u32) -> bool) -> Self {
        let base = u32::from(spec.cidr.network());
        let n = 1usize << (32 - spec.cidr.prefix_len());
        let mut ix = Self {
            spec,
            base,
            state: vec![FREE; n],
            time: vec![0; n],
            free: vec![0; n.div_ceil(64)],
            cursor: 0,
            reusable: BTreeSet::new(),
            counts: [0; 5],
            offered: 0,
            size: 0,
        };
        for p in ix.spec.pools.clone() {
            for ip in u32::from(p.start)..=u32::from(p.end) {
                if ix.spec.is_dynamic(Ipv4Addr::from(ip)) {
                    ix.size += 1;
                    if !blocked(ip) {
                        ix.set_free(ip, true);
                    }
                }
            }
        }
        ix
    }

    pub fn contains(&self, ip: u32) -> bool {
        ip.wrapping_sub(self.base) < self.state.len() as u32
    }

    fn at(&self, ip: u32) -> usize {
        ip.wrapping_sub(self.base) as usize
    }

    pub fn state(&self, ip: u32) -> u8 {
        self.state.get(self.at(ip)).copied().unwrap_or(FREE)
    }

    pub fn time(&self, ip: u32) -> u32 {
        self.time.get(self.at(ip)).copied().unwrap_or(0)
    }

    pub fn is_bound(&self, ip: u32, now: u32) -> bool {
        self.state(ip) == BOUND && self.time(ip) > now
    }

    /// Held by its record's client: bound, or declined in quarantine.
    pub fn is_held(&self, ip: u32, now: u32) -> bool {
        matches!(self.state(ip), BOUND | DECLINED) && self.time(ip) > now
    }

    fn set_free(&mut self, ip: u32, on: bool) {
        let i = self.at(ip);
        if let Some(w) = self.free.get_mut(i / 64) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }

    /// Takes `ip` out of the free and reusable sets (it is being offered,
    /// reserved, or its record is changing).
    pub fn unindex(&mut self, ip: u32) {
        self.set_free(ip, false);
        if matches!(self.state(ip), RELEASED | EXPIRED | DECLINED) {
            self.reusable.remove(&(self.time(ip), ip));
        }
    }

    /// Puts `ip` back into the free or reusable set according to its state.
    /// The caller has checked it is neither reserved nor offered.
    pub fn reindex(&mut self, ip: u32) {
        match self.state(ip) {
            FREE if self.spec.is_dynamic(Ipv4Addr::from(ip)) => self.set_free(ip, true),
            RELEASED | EXPIRED | DECLINED => {
                self.reusable.insert((self.time(ip), ip));
            }
            _ => {}
        }
    }

    /// Records the stored state of `ip` (`None`: no record). Unindexes it;
    /// the caller reindexes if it is not reserved or offered.
    pub fn set(&mut self, ip: u32, st: Option<(LeaseState, u32)>) {
        self.unindex(ip);
        let i = self.at(ip);
        let (code, t) = st.map(|(s, t)| (state_code(s), t)).unwrap_or((FREE, 0));
        if let Some(c) = self.counter(self.state(ip)) {
            *c = c.saturating_sub(1);
        }
        if let Some(c) = self.counter(code) {
            *c += 1;
        }
        if let Some(s) = self.state.get_mut(i) {
            *s = code;
        }
        if let Some(tm) = self.time.get_mut(i) {
            *tm = t;
        }
    }

    fn counter(&mut self, code: u8) -> Option<&mut u64> {
        code.checked_sub(1)
            .and_then(|k| self.counts.get_mut(usize::from(k)))
    }

    /// The next free dynamic address, round-robin from the last one found.
    pub fn next_free(&mut self) -> Option<u32> {
        let n = self.free.len();
        for k in 0..n {
            let w = (self.cursor + k) % n;
            let word = self.free[w];
            if word != 0 {
                self.cursor = w;
                return Some(self.base + (w * 64) as u32 + word.trailing_zeros());
            }
        }
        None
    }

    /// The first never-used dynamic address in `[lo, hi]`.
    pub fn free_in(&self, lo: u32, hi: u32) -> Option<u32> {
        (lo..=hi).find(|&ip| self.contains(ip) && self.is_free(ip))
    }

    /// Never-used dynamic addresses in `[lo, hi]`: a popcount of the free
    /// bitmap word by word (only pool addresses are ever marked free).
    pub fn free_count(&self, lo: u32, hi: u32) -> u64 {
        let (base, len) = (u64::from(self.base), self.state.len() as u64);
        let mut i = u64::from(lo).max(base) - base;
        let end = (u64::from(hi) + 1).saturating_sub(base).min(len);
        let mut count = 0;
        while i < end {
            let bit = i % 64;
            let bits = (end - i).min(64 - bit);
            let mask = u64::MAX >> (64 - bits) << bit;
            let word = self.free.get((i / 64) as usize).copied().unwrap_or(0);
            count += u64::from((word & mask).count_ones());
            i += bits;
        }
        count
    }

    fn is_free(&self, ip: u32) -> bool {
        let i = self.at(ip);
        self.free
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The longest-reusable address usable at `now` that `ok` accepts.
    pub fn oldest_reusable(&self, now: u32, ok: impl Fn(u32) -> bool) -> Option<u32> {
        self.reusable
            .iter()
            .take_while(|(t, _)| *t <= now)
            .find(|(_, ip)| ok(*ip))
            .map(|(_, ip)| *ip)
    }

    /// Bound addresses whose lease ended at or before `now`, and the earliest
    /// bound expiry after `now` (`u32::MAX` if none).
    pub fn due(&self, now: u32) -> (Vec<u32>, u32) {
        let mut due = Vec::new();
        let mut next = u32::MAX;
        for (i, (&s, &t)) in self.state.iter().zip(&self.time).enumerate() {
            if s == BOUND {
                if t <= now {
                    due.push(self.base + i as u32);
                } else {
                    next = next.min(t);
                }
            }
        }
        (due, next)
    }

    pub fn count(&self, s: LeaseState) -> u64 {
        if s == LeaseState::Offered {
            return self.offered;
        }
        let k = usize::from(state_code(s).saturating_sub(1));
        self.counts.get(k).copied().unwrap_or(0)
    }

    /// Addresses with a stored record, in address order.
    pub fn stored(&self) -> impl Iterator<Item = u32> + '_ {
        let base = self.base;
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != FREE)
            .map(move |(i, _)| base + i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::model::PoolRange;
    use std::time::Duration;

    pub fn spec() -> SubnetSpec {
        let ip = |s: &str| s.parse().unwrap();
        let pool = PoolRange {
            start: ip("10.0.0.1"),
            end: ip("10.0.0.4"),
        };
        let mut s = SubnetSpec::new("t", "10.0.0.0/24".parse().unwrap(), pool)
            .with_lease_time(Duration::from_secs(100));
        s.exclude = vec![ip("10.0.0.3")];
        s.gateway = Some(ip("10.0.0.1"));
        s
    }

    #[test]
    fn free_skips_gateway_and_excluded() {
        let mut ix = SubnetIndex::new(Arc::new(spec()), |_| false);
        assert_eq!(ix.size, 2);
        let a = ix.next_free().unwrap();
        assert_eq!(Ipv4Addr::from(a), "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        ix.set(a, Some((LeaseState::Bound, 50)));
        assert_eq!(
            Ipv4Addr::from(ix.next_free().unwrap()),
            "10.0.0.4".parse::<Ipv4Addr>().unwrap()
        );
        ix.set(0x0a000004, Some((LeaseState::Released, 10)));
        ix.reindex(0x0a000004);
        assert_eq!(ix.next_free(), None);
        assert_eq!(ix.oldest_reusable(9, |_| true), None);
        assert_eq!(ix.oldest_reusable(10, |_| true), Some(0x0a000004));
        assert_eq!(ix.due(50), (vec![a], u32::MAX));
        assert_eq!(ix.count(LeaseState::Bound), 1);
    }

    /// The word-wise count agrees with an address-by-address one on every
    /// range, inside, across and outside the CIDR.
    #[test]
    fn free_count_is_the_number_of_free_addresses_in_the_range() {
        let pool = PoolRange {
            start: "10.1.0.5".parse().unwrap(),
            end: "10.1.1.250".parse().unwrap(),
        };
        let spec = SubnetSpec::new("t", "10.1.0.0/23".parse().unwrap(), pool);
        let mut ix = SubnetIndex::new(Arc::new(spec), |ip| ip % 7 == 0);
        for ip in (0x0a01_0000..0x0a01_0200).step_by(5) {
            ix.set(ip, Some((LeaseState::Bound, 50)));
        }
        let naive = |lo: u32, hi: u32| {
            (lo..=hi)
                .filter(|&ip| ix.contains(ip) && ix.is_free(ip))
                .count() as u64
        };
        for (lo, hi) in [
            (0x0a00_fff0, 0x0a01_0010),
            (0x0a01_0000, 0x0a01_01ff),
            (0x0a01_003f, 0x0a01_0040),
            (0x0a01_0100, 0x0a01_010f),
            (0x0a01_01f0, 0x0a01_0210),
            (0x0a01_0300, 0x0a01_0400),
            (0x0a01_0041, 0x0a01_00bf),
        ] {
            assert_eq!(ix.free_count(lo, hi), naive(lo, hi), "{lo:x}-{hi:x}");
        }
    }
}
