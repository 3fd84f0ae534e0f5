//! The in-memory index of the store and the lease decisions, pure: the
//! store is reached only through a record reader, time only through `now`.
//! A mutation is planned as [`Change`]s, written as store ops, then
//! [`State::apply`]d.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::error::IpamError;
use super::hooks::ClusterHooks;
use super::index::SubnetIndex;
use super::maps::{ClientMap, Ports};
use super::model::{time, Lease, LeaseState, Port, ReservationSpec};
use super::record::{self, ip_key, Record, FREE};
use super::store::{Op, TreeId};
use super::v6::V6State;
use crate::client::ClientKey;

pub type Reader<'a> = &'a dyn Fn(u32) -> Result<Option<Record>, IpamError>;

/// One stored lease changing: `old_client` is the client of the record it
/// replaces (to keep the client index exact).
#[derive(Debug, Clone)]
pub struct Change {
    pub ip: u32,
    pub old_client: Option<ClientKey>,
    pub new: Option<Record>,
}

/// What a lease operation decided under the lock: an answer needing no
/// write, or changes to write before answering.
#[derive(Debug)]
pub enum Plan<T = Lease> {
    Cached(T),
    Write(Vec<Change>, T),
}

#[derive(Debug, Clone)]
pub struct Tuning {
    pub cache_threshold: f64,
    pub offer_hold: u32,
    pub quarantine: u32,
    /// Cluster mode: which addresses this node may give, whether it may write.
    pub cluster: Option<Arc<dyn ClusterHooks>>,
}

#[derive(Debug)]
pub struct Offer {
    pub client: ClientKey,
    pub expires: u32,
    pub at: u32,
}

#[derive(Debug)]
pub struct State {
    /// Sorted by network address.
    pub subnets: Vec<SubnetIndex>,
    pub clients: ClientMap,
    pub offers: HashMap<u32, Offer>,
    offer_of: HashMap<ClientKey, u32>,
    /// `(expires, ip)` in creation order, which is expiry order.
    offer_queue: VecDeque<(u32, u32)>,
    pub reservations: BTreeMap<(String, ClientKey), ReservationSpec>,
    pub reserved: HashMap<u32, ClientKey>,
    /// Earliest bound expiry (`u32::MAX`: none).
    pub next_expiry: u32,
    pub tuning: Tuning,
    /// Sequence number of the latest durable write.
    pub seq: u64,
    /// Address → sequence number of its latest write (pruned once flushed):
    /// a cached answer about an address waits for that write's flush.
    pub pending: HashMap<u32, u64>,
    /// Writes waiting for the committer, applied as one atomic sled write
    /// per group commit (each sled write has a fixed cost).
    pub queue: Vec<Op>,
    /// Lease records in `queue` (or being applied by the committer), by
    /// address, so reads see them; each tagged with the `drains` count when
    /// it was queued.
    pub overlay: HashMap<u32, (u64, Option<Vec<u8>>)>,
    /// How many times the queue was taken for the store.
    pub drains: u64,
    /// The committer runs: writes are queued, not applied inline.
    pub committer_live: bool,
    /// Why writes are refused (a store write or flush failed and no probe
    /// has succeeded since); None when healthy.
    pub degraded: Option<String>,
    /// Bumped each time the index is rolled back to the store, so an answer
    /// planned before that can tell it may rest on a lost write.
    pub epoch: u64,
    /// The roll-back could not reload the index: it may hold lost writes
    /// until a probe reloads it.
    pub stale: bool,
    /// Bound leases and live offers per relay port.
    pub ports: Ports,
    /// The DHCPv6 bindings' index.
    pub v6: V6State,
    /// Cluster node: per subnet id, the free addresses last counted in
    /// this node's blocks (see `owned.rs`).
    pub owned_free: HashMap<String, OwnedFree>,
}

/// A cluster node's count of the never-used addresses in its blocks of a
/// subnet. Counting walks every block, so it is kept and counted down by
/// each address handed out; counted again when the blocks change, after a
/// number of hand-outs or a time (an offer that ended frees its address
/// again, a roll-back many).
#[derive(Debug)]
pub struct OwnedFree {
    pub blocks: std::sync::Arc<[(u32, u32)]>,
    pub left: u64,
    pub at: std::time::Instant,
    pub since: u32,
}

impl State {
    pub fn new(tuning: Tuning) -> Self {
        Self {
            subnets: Vec::new(),
            clients: ClientMap::default(),
            offers: HashMap::new(),
            offer_of: HashMap::new(),
            offer_queue: VecDeque::new(),
            reservations: BTreeMap::new(),
            reserved: HashMap::new(),
            next_expiry: u32::MAX,
            tuning,
            seq: 0,
            pending: HashMap::new(),
            queue: Vec::new(),
            overlay: HashMap::new(),
            drains: 0,
            committer_live: false,
            ports: Ports::default(),
            degraded: None,
            epoch: 0,
            stale: false,
            v6: V6State::default(),
            owned_free: HashMap::new(),
        }
    }

    pub fn subnet_ix(&self, id: &str) -> Result<usize, IpamError> {
        self.subnets
            .iter()
            .position(|s| s.spec.id == id)
            .ok_or_else(|| IpamError::UnknownSubnet(id.to_owned()))
    }

    pub fn subnet_of(&self, ip: u32) -> Option<usize> {
        let i = self
            .subnets
            .partition_point(|s| u32::from(s.spec.cidr.network()) <= ip);
        i.checked_sub(1).filter(|&i| self.subnets[i].contains(ip))
    }

    /// Adds a subnet index in address order (the caller checked overlaps).
    pub fn insert_subnet(&mut self, ix: SubnetIndex) {
        let net = ix.spec.cidr.network();
        let at = self
            .subnets
            .partition_point(|s| s.spec.cidr.network() < net);
        self.subnets.insert(at, ix);
    }

    fn offer_live(&self, ip: u32, now: u32) -> Option<&Offer> {
        self.offers.get(&ip).filter(|o| o.expires > now)
    }

    /// Whether `client` may be given `ip` of subnet `s` at `now`.
    pub fn available(&self, s: usize, ip: u32, client: &ClientKey, now: u32) -> bool {
        let sub = &self.subnets[s];
        let addr = Ipv4Addr::from(ip);
        if !sub.contains(ip) || sub.spec.is_unassignable(addr) {
            return false;
        }
        let reserved = match self.reserved.get(&ip) {
            Some(c) if c != client => return false,
            Some(_) => true,
            None if !sub.spec.is_dynamic(addr) => return false,
            None => false,
        };
        if self
            .offer_live(ip, now)
            .is_some_and(|o| &o.client != client)
        {
            return false;
        }
        if sub.is_bound(ip, now) && self.clients.get(client) == Some(ip) {
            return true;
        }
        // A reservation is its client's wherever it lies; any other
        // address must be this node's to give.
        !sub.is_held(ip, now) && (reserved || self.may_give(s, ip))
    }

    /// The port (a [`Ports::hash`]) that giving `ip` to `client` through
    /// `port` counts against. [`IpamError::PortFull`] if that would be one
    /// address more than the port's cap: an address the port holds already
    /// (the client's offer) or the client's bound lease is not one more.
    pub fn check_port(
        &self,
        s: usize,
        client: &ClientKey,
        ip: u32,
        port: Option<Port>,
        now: u32,
    ) -> Result<Option<u64>, IpamError> {
        let Some(p) = port else { return Ok(None) };
        let h = self.ports.hash(p.id);
        let counted = self.ports.of(ip) == Some(h)
            || (self.clients.get(client) == Some(ip) && self.subnets[s].is_bound(ip, now));
        if p.cap > 0 && !counted && self.ports.held(h) >= p.cap {
            return Err(IpamError::PortFull { cap: p.cap });
        }
        Ok(Some(h))
    }

    /// Picks an address: the client's reservation, its current lease or
    /// offer, its previous address, the requested one, a never-used one,
    /// then the longest-reusable expired/released one.
    pub fn choose(
        &mut self,
        s: usize,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        now: u32,
    ) -> Result<u32, IpamError> {
        let sub = &self.subnets[s];
        if let Some(r) = self
            .reservations
            .get(&(sub.spec.id.clone(), client.clone()))
        {
            let ip = u32::from(r.ip);
            return if self.available(s, ip, client, now) {
                Ok(ip)
            } else {
                Err(IpamError::AddressTaken { ip: r.ip })
            };
        }
        let offered = self
            .offer_of
            .get(client)
            .copied()
            .filter(|ip| self.offer_live(*ip, now).is_some());
        let previous = self.clients.get(client);
        let candidates = [offered, previous, requested.map(u32::from)];
        if let Some(ip) = candidates
            .into_iter()
            .flatten()
            .find(|ip| self.subnets[s].contains(*ip) && self.available(s, *ip, client, now))
        {
            return Ok(ip);
        }
        if let Some(ip) = self.next_free(s) {
            return Ok(ip);
        }
        self.subnets[s]
            .oldest_reusable(now, |ip| self.available(s, ip, client, now))
            .ok_or_else(|| self.exhausted(s))
    }

    /// Holds `ip` for `client` until `now + offer_hold` (memory only),
    /// counted against `port` (a [`Ports::hash`]) while it lasts.
    pub fn offer(
        &mut self,
        s: usize,
        client: &ClientKey,
        ip: u32,
        port: Option<u64>,
        now: u32,
    ) -> Lease {
        let expires = now.saturating_add(self.tuning.offer_hold);
        // The same offer made again within its second is queued already.
        let queued = self.offers.get(&ip).is_some_and(|o| o.expires == expires);
        if let Some(old) = self.offer_of.get(client).copied() {
            self.drop_offer(old);
        }
        self.drop_offer(ip);
        self.subnets[s].unindex(ip);
        self.subnets[s].offered += 1;
        self.offers.insert(
            ip,
            Offer {
                client: client.clone(),
                expires,
                at: now,
            },
        );
        self.offer_of.insert(client.clone(), ip);
        if !queued {
            self.offer_queue.push_back((expires, ip));
            self.compact_offer_queue();
        }
        self.ports.set(ip, port);
        Lease {
            ip: Ipv4Addr::from(ip),
            subnet: self.subnets[s].spec.id.clone(),
            client: client.clone(),
            state: LeaseState::Offered,
            expires_at: time(expires),
            updated_at: time(now),
            hostname: None,
        }
    }

    pub fn drop_offer(&mut self, ip: u32) {
        let Some(o) = self.offers.remove(&ip) else {
            return;
        };
        if self.offer_of.get(&o.client) == Some(&ip) {
            self.offer_of.remove(&o.client);
        }
        if let Some(s) = self.subnet_of(ip) {
            if self.subnets[s].state(ip) != record::BOUND {
                self.ports.set(ip, None);
            }
            self.subnets[s].offered = self.subnets[s].offered.saturating_sub(1);
            if !self.reserved.contains_key(&ip) {
                self.subnets[s].reindex(ip);
            }
        }
    }

    /// Drops offers that timed out; returns whether any did.
    pub fn purge_offers(&mut self, now: u32) -> bool {
        let mut any = false;
        while let Some(&(exp, ip)) = self.offer_queue.front() {
            if exp > now {
                break;
            }
            self.offer_queue.pop_front();
            if self.offers.get(&ip).is_some_and(|o| o.expires == exp) {
                self.drop_offer(ip);
                any = true;
            }
        }
        any
    }

    /// Drops the queue entries of offers replaced before they expired (a
    /// client that DISCOVERs again, an offered address taken by a bind), so
    /// the queue stays within twice the live offers, which the pools bound,
    /// however fast clients ask. Amortised O(1) per offer.
    fn compact_offer_queue(&mut self) {
        if self.offer_queue.len() <= 2 * self.offers.len() + 64 {
            return;
        }
        let offers = &self.offers;
        self.offer_queue
            .retain(|(exp, ip)| offers.get(ip).is_some_and(|o| o.expires == *exp));
        self.offer_queue.shrink_to(2 * self.offer_queue.len() + 64);
    }

    /// Queue entries waiting for their offer's expiry (live or replaced).
    #[cfg(test)]
    pub fn offer_queue_len(&self) -> usize {
        self.offer_queue.len()
    }

    pub fn next_offer_expiry(&self) -> Option<u32> {
        self.offer_queue.front().map(|(e, _)| *e)
    }

    pub fn offer_of(&self, client: &ClientKey) -> Option<(u32, &Offer)> {
        let ip = *self.offer_of.get(client)?;
        self.offers.get(&ip).map(|o| (ip, o))
    }

    /// Store writes for `changes`: the lease record, and for a lease that
    /// ended (released, expired, declined) the client's entry in the clients
    /// tree, which says at open which of a client's ended leases is its
    /// latest. A bound record needs none (a client has one at most, and it
    /// wins), so a bind or renewal is one write to one tree.
    pub fn ops(changes: &[Change]) -> Vec<Op> {
        let mut ops = Vec::with_capacity(changes.len());
        for c in changes {
            let key = ip_key(c.ip).to_vec();
            if let Some(r) = c.new.as_ref().filter(|r| r.state != LeaseState::Bound) {
                ops.push(Op {
                    tree: TreeId::Clients,
                    key: r.client.to_string().into_bytes(),
                    value: Some(key.clone()),
                });
            }
            ops.push(Op {
                tree: TreeId::Leases,
                key,
                value: c.new.as_ref().map(Record::encode),
            });
        }
        ops
    }

    /// Applies changes already written to the store.
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            let Some(s) = self.subnet_of(c.ip) else {
                continue;
            };
            if let Some(r) = &c.new {
                if let Some(oip) = self.offer_of.get(&r.client).copied() {
                    self.drop_offer(oip);
                }
            }
            self.drop_offer(c.ip);
            if let Some(o) = &c.old_client {
                if c.new.as_ref().is_none_or(|r| &r.client != o)
                    && self.clients.get(o) == Some(c.ip)
                {
                    self.clients.remove(o);
                }
            }
            let sub = &mut self.subnets[s];
            sub.set(c.ip, c.new.as_ref().map(|r| (r.state, r.expires)));
            if !self.reserved.contains_key(&c.ip) {
                sub.reindex(c.ip);
            }
            if let Some(r) = &c.new {
                self.clients.insert(&r.client, c.ip);
                if r.state == LeaseState::Bound {
                    self.next_expiry = self.next_expiry.min(r.expires);
                }
            }
            let port = c
                .new
                .as_ref()
                .filter(|r| r.state == LeaseState::Bound)
                .and_then(|r| r.port.as_deref())
                .map(|p| self.ports.hash(p));
            self.ports.set(c.ip, port);
        }
    }

    /// Marks `ip` reserved for `client` (it leaves the free sets).
    pub fn reserve(&mut self, r: ReservationSpec) {
        let ip = u32::from(r.ip);
        if let Some(s) = self.subnet_of(ip) {
            self.subnets[s].unindex(ip);
        }
        self.reserved.insert(ip, r.client.clone());
        self.reservations
            .insert((r.subnet.clone(), r.client.clone()), r);
    }

    pub fn unreserve(&mut self, subnet: &str, client: &ClientKey) -> Option<ReservationSpec> {
        let r = self
            .reservations
            .remove(&(subnet.to_owned(), client.clone()))?;
        let ip = u32::from(r.ip);
        self.reserved.remove(&ip);
        if let Some(s) = self.subnet_of(ip) {
            if !self.offers.contains_key(&ip) {
                self.subnets[s].reindex(ip);
            }
        }
        Some(r)
    }

    /// The stored state code of `ip` (FREE if none or outside all subnets).
    pub fn code(&self, ip: u32) -> u8 {
        self.subnet_of(ip)
            .map(|s| self.subnets[s].state(ip))
            .unwrap_or(FREE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: LeaseState) -> Record {
        Record {
            state,
            client: ClientKey::Mac([2, 0, 0, 0, 0, 1]),
            expires: 100,
            updated: 1,
            hostname: None,
            port: None,
        }
    }

    /// A bind or renewal is one write to one tree (no transaction); a lease
    /// that ends also names itself the client's latest in the clients tree.
    #[test]
    fn only_an_ended_lease_writes_the_clients_tree() {
        let change = |state| Change {
            ip: 7,
            old_client: None,
            new: Some(record(state)),
        };
        let bound = State::ops(&[change(LeaseState::Bound)]);
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].tree, TreeId::Leases);
        for ended in [
            LeaseState::Released,
            LeaseState::Expired,
            LeaseState::Declined,
        ] {
            let ops = State::ops(&[change(ended)]);
            let trees: Vec<TreeId> = ops.iter().map(|o| o.tree).collect();
            assert_eq!(trees, [TreeId::Clients, TreeId::Leases], "{ended:?}");
            assert_eq!(ops[0].value.as_deref(), Some(&ip_key(7)[..]));
        }
        let freed = State::ops(&[Change {
            ip: 7,
            old_client: Some(record(LeaseState::Bound).client),
            new: None,
        }]);
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].value, None);
    }
}
