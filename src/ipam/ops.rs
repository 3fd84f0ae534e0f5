//! Lease operations: the DHCP handler's and the allocation API's calls.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use super::commit::Ticket;
use super::error::IpamError;
use super::handle::{Ipam, Locked};
use super::model::{secs, Lease, LeaseState, Port};
use super::record::{ip_key, offered, Record};
use super::state::{Plan, State};
use super::store::TreeId;
use crate::client::ClientKey;
use crate::stats::LeaseCount;

/// How an operation's answer becomes final.
pub(super) enum Settle<T> {
    Ready(T),
    /// Wait for this write's batch to be flushed.
    Commit(Ticket, T),
    /// Cached answer about an address whose last write is not flushed yet
    /// (and the index's epoch when it was planned).
    AfterFlush(T, u64),
}

/// An operation's answer: the address a cached answer rests on, if any.
trait Answer {
    fn address(&self) -> Option<u32>;
}

impl Answer for Lease {
    fn address(&self) -> Option<u32> {
        Some(u32::from(self.ip))
    }
}

impl Answer for () {
    fn address(&self) -> Option<u32> {
        None
    }
}

impl Ipam {
    /// The stored record of `ip`, including writes still queued.
    pub(super) fn read(&self, st: &State, ip: u32) -> Result<Option<Record>, IpamError> {
        let bytes = match st.overlay.get(&ip) {
            Some((_, queued)) => queued.clone(),
            None => self.store.get(TreeId::Leases, &ip_key(ip))?,
        };
        bytes.map(|b| Record::decode(&b)).transpose()
    }

    /// Housekeeping due at `now`: timed-out offers, ended leases (written
    /// without waiting for a flush: a lost expiry is redone after restart).
    pub(super) fn maintain(&self, st: &mut State, now: u32) -> Result<(), IpamError> {
        if st.purge_offers(now) {
            self.note_change(st);
        }
        // While writes are refused (or this cluster node is fenced), expiry
        // waits (the leases stay held) and cached answers still go out.
        if now >= st.next_expiry && st.writable().is_ok() {
            let view: &State = st;
            let (changes, next) = view.plan_expiry(now, &|ip| self.read(view, ip))?;
            self.write(st, &changes, false)?;
            st.next_expiry = next;
            self.note_change(st);
        }
        self.maintain6(st, now)
    }

    /// Locks the state and does the housekeeping due at `now`.
    pub(super) fn locked(&self, now: u32) -> Result<Locked<'_>, IpamError> {
        let mut st = self.lock();
        self.maintain(&mut st, now)?;
        Ok(st)
    }

    /// One lease operation: lock, housekeeping, `plan` under the lock,
    /// write and note what it decided, then (outside the lock) wait until
    /// the answer is final. Cancel-safe: dropping it abandons the wait,
    /// never a write.
    async fn operate<T: Answer>(
        &self,
        now: SystemTime,
        plan: impl FnOnce(&mut State, u32) -> Result<Plan<T>, IpamError>,
    ) -> Result<T, IpamError> {
        let now = secs(now);
        let settle = {
            let mut st = self.locked(now)?;
            let plan = plan(&mut st, now)?;
            self.finish(&mut st, plan)?
        };
        self.settle(settle).await
    }

    fn finish<T: Answer>(&self, st: &mut State, plan: Plan<T>) -> Result<Settle<T>, IpamError> {
        match plan {
            Plan::Cached(answer) => {
                let unflushed = answer.address().is_some_and(|ip| {
                    st.pending
                        .get(&ip)
                        .is_some_and(|s| *s > self.committer.flushed())
                });
                Ok(if unflushed {
                    Settle::AfterFlush(answer, st.epoch)
                } else {
                    Settle::Ready(answer)
                })
            }
            Plan::Write(changes, answer) => {
                let ticket = self.write(st, &changes, true)?;
                self.note_change(st);
                Ok(match ticket {
                    Some(t) => Settle::Commit(t, answer),
                    None => Settle::Ready(answer),
                })
            }
        }
    }

    pub(super) async fn settle<T>(&self, s: Settle<T>) -> Result<T, IpamError> {
        match s {
            Settle::Ready(l) => Ok(l),
            Settle::Commit(t, l) => self.wait(t).await.map(|()| l),
            Settle::AfterFlush(l, epoch) => {
                self.flush().await?;
                // A roll-back since may have taken the write it rests on.
                if self.lock().epoch != epoch {
                    return Err(IpamError::Storage("the lease's write was lost".into()));
                }
                Ok(l)
            }
        }
    }

    /// Picks an address for `client` and holds it for `offer_hold`. Not
    /// durable (a restart forgets offers). A client with a bound lease in
    /// the subnet is offered that lease unchanged.
    pub fn offer(
        &self,
        subnet: &str,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        self.offer_via(subnet, client, requested, None, now)
    }

    /// [`Ipam::offer`] to a client asking through relay `port`: the offer
    /// counts against the port's cap while it lasts, and is refused with
    /// [`IpamError::PortFull`] past it (a bound lease is still offered).
    pub fn offer_via(
        &self,
        subnet: &str,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        port: Option<Port>,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        let now = secs(now);
        let mut st = self.locked(now)?;
        let s = st.subnet_ix(subnet)?;
        let ip = st.choose(s, client, requested, now)?;
        if st.clients.get(client) == Some(ip) && st.subnets[s].is_bound(ip, now) {
            if let Some(r) = self.read(&st, ip)? {
                return Ok(r.to_lease(Ipv4Addr::from(ip), subnet));
            }
        }
        // No offer that could not be bound: its REQUEST needs a write.
        st.writable()?;
        let port = st.check_port(s, client, ip, port, now)?;
        let first = st.next_offer_expiry().is_none();
        let lease = st.offer(s, client, ip, port, now);
        if first {
            self.reaper_wake.notify_one();
        }
        self.note_change(&st);
        Ok(lease)
    }

    /// Binds `ip` to `client`; durable on return. Cancel-safe: if dropped,
    /// the binding may or may not have been made, and is flushed anyway.
    pub async fn bind(
        &self,
        subnet: &str,
        client: &ClientKey,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        self.bind_via(subnet, client, ip, hostname, None, now).await
    }

    /// [`Ipam::bind`] through relay `port`: the lease records the port and
    /// counts against its cap ([`IpamError::PortFull`] past it, unless the
    /// port holds the address already: the client's offer).
    pub async fn bind_via(
        &self,
        subnet: &str,
        client: &ClientKey,
        ip: Ipv4Addr,
        hostname: Option<&str>,
        port: Option<Port<'_>>,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        self.operate(now, |st, now| {
            let s = st.subnet_ix(subnet)?;
            st.plan_bind(s, client, u32::from(ip), hostname, port, now, &|ip| {
                self.read(st, ip)
            })
        })
        .await
    }

    /// Whether `port` holds its cap of addresses already (never without a
    /// cap).
    pub fn port_full(&self, port: Port) -> bool {
        port.cap > 0 && self.port_held(port.id) >= port.cap
    }

    /// The addresses (bound leases and live offers) relay port `id` holds.
    pub fn port_held(&self, id: &[u8]) -> u32 {
        let st = self.lock();
        st.ports.held(st.ports.hash(id))
    }

    /// Extends the client's lease on `ip`. Within the cache threshold the
    /// cached lease is returned untouched (no write). Cancel-safe as `bind`.
    pub async fn renew(
        &self,
        client: &ClientKey,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        self.operate(now, |st, now| {
            st.plan_renew(client, u32::from(ip), now, &|ip| self.read(st, ip))
        })
        .await
    }

    /// Releases the client's lease (or offer) on `ip`; durable on return.
    /// Cancel-safe as `bind`.
    pub async fn release(
        &self,
        client: &ClientKey,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), IpamError> {
        self.operate(now, |st, now| {
            let ip = u32::from(ip);
            match st.plan_release(client, ip, now, &|ip| self.read(st, ip))? {
                Some(changes) => Ok(Plan::Write(changes, ())),
                None => {
                    if st.offers.get(&ip).is_some_and(|o| &o.client == client) {
                        st.drop_offer(ip);
                    }
                    self.note_change(st);
                    Ok(Plan::Cached(()))
                }
            }
        })
        .await
    }

    /// Quarantines `ip` for `decline_quarantine`; durable on return.
    /// Cancel-safe as `bind`.
    pub async fn decline(
        &self,
        client: &ClientKey,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), IpamError> {
        self.operate(now, |st, now| {
            let changes = st.plan_decline(client, u32::from(ip), now, &|ip| self.read(st, ip))?;
            Ok(Plan::Write(changes, ()))
        })
        .await
    }

    /// API allocation: offer + bind in one step; idempotent per client (a
    /// client with a bound lease in the subnet gets it back, unwritten).
    /// In a cluster any node answers it, so this node's copy first catches
    /// up with etcd on the client (it may trail by the watch's delay, or a
    /// whole partition).
    /// Cancel-safe as `bind`.
    pub async fn allocate(
        &self,
        subnet: &str,
        client: &ClientKey,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        if let Some(reads) = self.reads.get() {
            reads.settle(client).await?;
        }
        self.allocate_here(subnet, client, now).await
    }

    /// [`Self::allocate`] as this node's index sees it.
    async fn allocate_here(
        &self,
        subnet: &str,
        client: &ClientKey,
        now: SystemTime,
    ) -> Result<Lease, IpamError> {
        self.operate(now, |st, now| {
            let s = st.subnet_ix(subnet)?;
            let held = st
                .clients
                .get(client)
                .filter(|ip| st.subnets[s].contains(*ip) && st.subnets[s].is_bound(*ip, now));
            match held
                .map(|ip| self.read(st, ip).map(|r| (ip, r)))
                .transpose()?
            {
                Some((ip, Some(r))) => Ok(Plan::Cached(r.to_lease(Ipv4Addr::from(ip), subnet))),
                _ => {
                    let ip = st.choose(s, client, None, now)?;
                    st.plan_bind(s, client, ip, None, None, now, &|ip| self.read(st, ip))
                }
            }
        })
        .await
    }

    /// The client's lease: its bound lease, else its live offer, else its
    /// last (released/expired/declined) one. Found through the in-memory
    /// client index; the full record (hostname, times) is one sled read
    /// from its page cache, so a flood of unknown clients costs no I/O.
    pub fn lease_of(&self, client: &ClientKey) -> Option<Lease> {
        let st = self.lock();
        let stored = st.clients.get(client);
        let offer = st.offer_of(client).map(|(ip, o)| (ip, o.expires, o.at));
        let sub = |ip: u32| st.subnet_of(ip).map(|s| st.subnets[s].spec.id.clone());
        if let Some(ip) = stored
            .filter(|ip| st.code(*ip) == 1)
            .or(if offer.is_none() { stored } else { None })
        {
            let r = self.read(&st, ip).ok().flatten()?;
            return Some(r.to_lease(Ipv4Addr::from(ip), &sub(ip)?));
        }
        let (ip, expires, at) = offer?;
        Some(offered(ip, &sub(ip)?, client, expires, at))
    }

    /// The lease on `ip` (its live offer, else its stored record).
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Lease> {
        let ip = u32::from(ip);
        let st = self.lock();
        let s = st.subnet_of(ip)?;
        let id = &st.subnets[s].spec.id;
        if let Some(o) = st.offers.get(&ip) {
            return Some(offered(ip, id, &o.client, o.expires, o.at));
        }
        self.read(&st, ip)
            .ok()
            .flatten()
            .map(|r| r.to_lease(Ipv4Addr::from(ip), id))
    }

    /// Marks lease counts changed; publishes them at most every 250 ms (the
    /// reaper publishes the last change).
    pub(super) fn note_change(&self, st: &State) {
        self.dirty.store(true, Relaxed);
        let due = {
            let mut last = self.published.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed().as_millis() >= 250);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.publish_locked(st);
        }
    }

    pub(super) fn publish_locked(&self, st: &State) {
        self.dirty.store(false, Relaxed);
        let v6 = st.v6.subnets.iter().flat_map(|s| {
            LeaseState::ALL.iter().map(|state| LeaseCount {
                subnet: s.spec.id.clone(),
                state: state.as_str(),
                count: s.count(*state),
            })
        });
        let counts: Vec<LeaseCount> = st
            .subnets
            .iter()
            .flat_map(|s| {
                LeaseState::ALL.iter().map(|state| LeaseCount {
                    subnet: s.spec.id.clone(),
                    state: state.as_str(),
                    count: s.count(*state),
                })
            })
            .chain(v6)
            .collect();
        *self
            .stats
            .ipam
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = counts;
    }

    pub(super) fn publish_counts(&self, force: bool) {
        if force || self.dirty.load(Relaxed) {
            let st = self.lock();
            self.publish_locked(&st);
        }
    }
}
