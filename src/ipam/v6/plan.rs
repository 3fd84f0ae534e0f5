//! DHCPv6 binding decisions: what a Commit, Extend, Release, Decline or
//! expiry writes. Pure (records come through a [`Reader6`], time through
//! `now`), as the v4 plans in `ipam/plan.rs`.

use ipnet::Ipv6Net;

use super::index::DECLINED;
use super::record::{Key6, Record6};
use super::types::{Held6, Ia6Key, Ia6Kind, Ia6Result};
use crate::ipam::error::IpamError;
use crate::ipam::hooks::RemoteLease6;
use crate::ipam::model::{time, LeaseState, Port};
use crate::ipam::record::{state_code, BOUND};
use crate::ipam::state::State;
use crate::ipam::store::{Op, TreeId};

pub type Reader6<'a> = &'a dyn Fn(Key6) -> Result<Option<Record6>, IpamError>;

/// One stored binding changing: `old` is the IA of the record it replaces
/// (to keep the IA index exact); `new: None` removes the record.
#[derive(Debug, Clone)]
pub struct Change6 {
    pub key: Key6,
    pub old: Option<Ia6Key>,
    pub new: Option<Record6>,
}

/// What an operation decided under the lock: an answer needing no write
/// (and the binding it rests on), or changes to write before answering.
#[derive(Debug)]
pub enum Plan6 {
    Cached(Ia6Result, Option<Key6>),
    Write(Vec<Change6>, Ia6Result),
}

/// One IA of one message, in subnet `s`.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub s: usize,
    pub ia: &'a Ia6Key,
    pub hints: &'a [Ipv6Net],
    pub port: Option<Port<'a>>,
    pub now: u32,
}

impl State {
    fn valid6(&self, s: usize) -> u32 {
        self.v6.subnets[s].spec.valid_secs()
    }

    /// What `ia` holds: `k` until `expires`.
    pub fn held6(k: Key6, expires: u32) -> Ia6Result {
        Ia6Result::Held(vec![Held6 {
            prefix: k.net(),
            expires_at: time(expires),
        }])
    }

    /// An IA_NA hint outside the subnet's link prefix.
    pub fn off_link(&self, a: &Ask) -> bool {
        let prefix = self.v6.subnets[a.s].spec.prefix;
        a.ia.kind == Ia6Kind::Na && a.hints.iter().any(|h| !prefix.contains(&h.addr()))
    }

    /// The bound record `ia` holds in subnet `s` (its lifetime may have
    /// run out, not yet reaped).
    pub fn binding6(&self, s: usize, ia: &Ia6Key) -> Option<Key6> {
        let k = *self.v6.ias.get(ia)?;
        (self.v6.holds(ia, k) && self.v6.subnets[s].owns(k)).then_some(k)
    }

    /// Picks a member for `a.ia`: its live offer, a free hint, then a free
    /// member of the pools of its kind (those of the hinted length first).
    pub fn choose6(&self, a: &Ask) -> Option<Key6> {
        let v6 = &self.v6;
        let sub = &v6.subnets[a.s];
        let ok = |k: Key6| sub.pool_of(k).is_some() && v6.available(k, a.ia, a.now);
        let offered = v6.offer_of.get(a.ia).copied().filter(|k| {
            v6.slot(*k)
                .and_then(|s| s.offer.as_ref())
                .is_some_and(|o| o.expires > a.now)
        });
        let hinted = a
            .hints
            .iter()
            .filter(|h| !h.addr().is_unspecified())
            .map(|h| member(a.ia.kind, *h));
        if let Some(k) = offered.into_iter().chain(hinted).find(|k| ok(*k)) {
            return Some(k);
        }
        let wanted = a.hints.iter().map(|h| h.prefix_len()).next();
        let mut pools: Vec<usize> = (0..sub.pools.len())
            .filter(|p| sub.pools[*p].kind() == a.ia.kind)
            .collect();
        pools.sort_by_key(|p| Some(sub.pools[*p].len) != wanted);
        pools
            .into_iter()
            .find_map(|p| v6.probe(a.s, p, a.ia, a.now))
    }

    /// The port hash giving `k` to `a.ia` counts against; PortFull past
    /// the cap (a member the port holds already, or the IA's own binding,
    /// is not one more).
    pub fn check_port6(&self, a: &Ask, k: Key6) -> Result<Option<u64>, IpamError> {
        let Some(p) = a.port else { return Ok(None) };
        let h = self.v6.ports.hash(p.id);
        let counted = self.v6.ports.of(k) == Some(h) || self.v6.holds(a.ia, k);
        if p.cap > 0 && !counted && self.v6.ports.held(h) >= p.cap {
            return Err(IpamError::PortFull { cap: p.cap });
        }
        Ok(Some(h))
    }

    /// Whether a binding ending at `expires` is young enough to answer
    /// without a write (the v4 cache threshold, over the valid lifetime).
    fn fresh6(&self, s: usize, expires: u32, now: u32) -> bool {
        let valid = self.valid6(s);
        let age = now.saturating_sub(expires.saturating_sub(valid));
        expires > now && f64::from(age) < self.tuning.cache_threshold * f64::from(valid)
    }

    /// Binds (Request, Rapid Commit): the IA's binding again, else a new
    /// member; a fresh binding is answered cached, except on a cluster
    /// node (its copy may trail etcd: the write's compares check it, as v4's).
    pub fn plan_commit6(&self, a: &Ask, read: Reader6) -> Result<Plan6, IpamError> {
        if self.off_link(a) {
            return Ok(Plan6::Cached(Ia6Result::NotOnLink, None));
        }
        let own = self
            .binding6(a.s, a.ia)
            .filter(|k| self.v6.available(*k, a.ia, a.now));
        let Some(k) = own.or_else(|| self.choose6(a)) else {
            return Ok(Plan6::Cached(Ia6Result::Exhausted, None));
        };
        self.bind6(a, k, read, self.tuning.cluster.is_none())
    }

    /// Extends (Renew, Rebind) the IA's binding; NoBinding without one.
    pub fn plan_extend6(&self, a: &Ask, read: Reader6) -> Result<Plan6, IpamError> {
        if self.off_link(a) {
            return Ok(Plan6::Cached(Ia6Result::NotOnLink, None));
        }
        match self.binding6(a.s, a.ia) {
            Some(k) => self.bind6(a, k, read, true),
            None => Ok(Plan6::Cached(Ia6Result::NoBinding, None)),
        }
    }

    /// Binds `k` to `a.ia` for the valid lifetime; the IA's other binding,
    /// if any, ends. `cache`: a fresh binding may be answered unwritten.
    fn bind6(&self, a: &Ask, k: Key6, read: Reader6, cache: bool) -> Result<Plan6, IpamError> {
        let slot = self.v6.slot(k);
        let mine = self.v6.holds(a.ia, k);
        if let Some(t) = slot
            .map(|s| s.time)
            .filter(|t| cache && mine && self.fresh6(a.s, *t, a.now))
        {
            return Ok(Plan6::Cached(Self::held6(k, t), Some(k)));
        }
        self.check_port6(a, k)?;
        let mut changes = Vec::with_capacity(2);
        if let Some(old) = self.v6.ias.get(a.ia).copied().filter(|o| *o != k) {
            changes.push(Change6 {
                key: old,
                old: Some(a.ia.clone()),
                new: None,
            });
        }
        let rec = match slot.map_or(0, |s| s.code) {
            0 => None,
            _ => read(k)?,
        };
        let own_port = rec
            .as_ref()
            .filter(|r| &r.ia == a.ia)
            .and_then(|r| r.port.clone());
        let expires = a.now.saturating_add(self.valid6(a.s));
        changes.push(Change6 {
            key: k,
            old: rec.map(|r| r.ia),
            new: Some(Record6 {
                state: LeaseState::Bound,
                ia: a.ia.clone(),
                expires,
                updated: a.now,
                port: a.port.map(|p| p.id.into()).or(own_port),
            }),
        });
        Ok(Plan6::Write(changes, Self::held6(k, expires)))
    }

    /// The IA's binding, if the message names it (or names nothing).
    fn named(&self, a: &Ask, k: Key6) -> bool {
        a.hints.is_empty() || a.hints.iter().any(|h| member(a.ia.kind, *h) == k)
    }

    /// Removes the IA's binding (Release). `None`: no binding named; the
    /// caller drops the IA's offer, if any.
    pub fn plan_release6(&self, a: &Ask) -> Option<Vec<Change6>> {
        let k = self.binding6(a.s, a.ia).filter(|k| self.named(a, *k))?;
        Some(vec![Change6 {
            key: k,
            old: Some(a.ia.clone()),
            new: None,
        }])
    }

    /// Quarantines the IA's binding or offered member (Decline).
    pub fn plan_decline6(&self, a: &Ask, read: Reader6) -> Result<Option<Change6>, IpamError> {
        let offered = self.v6.offer_of.get(a.ia).copied();
        let Some(k) = self
            .binding6(a.s, a.ia)
            .into_iter()
            .chain(offered)
            .find(|k| self.named(a, *k))
        else {
            return Ok(None);
        };
        let rec = match self.v6.slot(k).map_or(0, |s| s.code) {
            0 => None,
            _ => read(k)?,
        };
        Ok(Some(Change6 {
            key: k,
            old: rec.map(|r| r.ia),
            new: Some(Record6 {
                state: LeaseState::Declined,
                ia: a.ia.clone(),
                expires: a.now.saturating_add(self.tuning.quarantine),
                updated: a.now,
                port: None,
            }),
        }))
    }

    /// Bindings whose lifetime, and quarantines that, ended by `now`: removed.
    pub fn plan_expiry6(&self, now: u32, read: Reader6) -> Result<Vec<Change6>, IpamError> {
        let mut changes = Vec::new();
        for k in self.v6.due(now) {
            let old = read(k)?.map(|r| r.ia);
            changes.push(Change6 {
                key: k,
                old,
                new: None,
            });
        }
        Ok(changes)
    }

    /// Store writes for `changes`: one record each, in the v6 bindings tree.
    pub fn ops6(changes: &[Change6]) -> Vec<Op> {
        changes
            .iter()
            .map(|c| Op {
                tree: TreeId::Leases6,
                key: c.key.bytes().to_vec(),
                value: c.new.as_ref().map(Record6::encode),
            })
            .collect()
    }

    /// Folds v6 binding records another node wrote (a key with a local
    /// write queued is skipped, as v4's: that write's compare fails).
    pub fn apply_remote6(&mut self, remote: Vec<RemoteLease6>) {
        let decode = |b: Option<Vec<u8>>| b.and_then(|b| Record6::decode(&b).ok());
        let changes: Vec<Change6> = remote
            .into_iter()
            .filter_map(|r| {
                let key = Key6::from_bytes(&r.key)?;
                (!self.v6.overlay.contains_key(&key)).then(|| Change6 {
                    key,
                    old: decode(r.old).map(|o| o.ia),
                    new: decode(r.new),
                })
            })
            .collect();
        self.apply6(&changes);
    }

    /// Applies changes already written to the store.
    pub fn apply6(&mut self, changes: &[Change6]) {
        let v6 = &mut self.v6;
        for c in changes {
            if let Some(r) = &c.new {
                if let Some(o) = v6.offer_of.get(&r.ia).copied() {
                    v6.drop_offer(o);
                }
            }
            v6.drop_offer(c.key);
            if let Some(o) = &c.old {
                if c.new.as_ref().is_none_or(|r| &r.ia != o) && v6.ias.get(o) == Some(&c.key) {
                    v6.unbind_ia(o);
                }
            }
            v6.set(
                c.key,
                c.new.as_ref().map(|r| (state_code(r.state), r.expires)),
            );
            let mut port = None;
            if let Some(r) = &c.new {
                if state_code(r.state) == BOUND {
                    v6.bind_ia(&r.ia, c.key);
                    port = r.port.as_deref().map(|p| v6.ports.hash(p));
                } else if state_code(r.state) == DECLINED && v6.ias.get(&r.ia) == Some(&c.key) {
                    v6.unbind_ia(&r.ia);
                }
            }
            v6.ports.set(c.key, port);
        }
    }
}

/// A hint as a member of the IA's kind: an address for IA_NA, the prefix
/// for IA_PD.
fn member(kind: Ia6Kind, hint: Ipv6Net) -> Key6 {
    match kind {
        Ia6Kind::Na => Key6 {
            addr: u128::from(hint.addr()),
            len: 128,
        },
        Ia6Kind::Pd => Key6::of(hint.trunc()),
    }
}
