//! Lease decisions: what a bind, renew, release, decline or expiry writes.
//! Pure (records come through a [`Reader`], time through `now`).

use std::net::Ipv4Addr;

use super::error::IpamError;
use super::model::{LeaseState, Port};
use super::record::{Record, FREE};
use super::state::{Change, Plan, Reader, State};
use crate::client::ClientKey;

impl State {
    fn lease_secs(&self, s: usize) -> u32 {
        u32::try_from(self.subnets[s].spec.lease_time.as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether a bound record is young enough to answer without a write.
    fn fresh(&self, s: usize, r: &Record, now: u32) -> bool {
        let lease = self.lease_secs(s);
        let age = now.saturating_sub(r.expires.saturating_sub(lease));
        f64::from(age) < self.tuning.cache_threshold * f64::from(lease)
    }

    fn not_mine(&self, s: usize, ip: u32, client: &ClientKey, now: u32) -> IpamError {
        if self.available(s, ip, client, now) {
            IpamError::NoLease
        } else {
            IpamError::NotOwner {
                ip: Ipv4Addr::from(ip),
            }
        }
    }

    /// Binds `ip` in subnet `s` to `client` (a DHCPREQUEST or an API
    /// allocation), through relay `port` if any (its cap applies; without
    /// one the record keeps the port it had). A bind repeating a fresh
    /// binding is answered cached, except on a cluster node: its copy may
    /// trail etcd, so what is new to the client (a REQUEST after DISCOVER)
    /// is written, with compares against the copy.
    #[allow(clippy::too_many_arguments)]
    pub fn plan_bind(
        &self,
        s: usize,
        client: &ClientKey,
        ip: u32,
        hostname: Option<&str>,
        port: Option<Port>,
        now: u32,
        read: Reader,
    ) -> Result<Plan, IpamError> {
        let cache = self.tuning.cluster.is_none();
        self.bind_plan(s, client, ip, hostname, port, now, read, cache)
    }

    /// [`Self::plan_bind`]; `cache`: a fresh binding may be answered unwritten.
    #[allow(clippy::too_many_arguments)]
    fn bind_plan(
        &self,
        s: usize,
        client: &ClientKey,
        ip: u32,
        hostname: Option<&str>,
        port: Option<Port>,
        now: u32,
        read: Reader,
        cache: bool,
    ) -> Result<Plan, IpamError> {
        let sub = &self.subnets[s];
        let addr = Ipv4Addr::from(ip);
        let subnet = || sub.spec.id.clone();
        if !sub.contains(ip) || sub.spec.is_unassignable(addr) {
            return Err(IpamError::NotInSubnet {
                ip: addr,
                subnet: subnet(),
            });
        }
        match self.reserved.get(&ip) {
            Some(c) if c != client => return Err(IpamError::Reserved { ip: addr }),
            None if !sub.spec.is_dynamic(addr) => {
                return Err(IpamError::NotInSubnet {
                    ip: addr,
                    subnet: subnet(),
                })
            }
            _ => {}
        }
        if !self.available(s, ip, client, now) {
            return Err(IpamError::AddressTaken { ip: addr });
        }
        self.check_port(s, client, ip, port, now)?;
        let current = self.clients.get(client);
        // The index knows which addresses have a record: a never-leased
        // address (most binds under a boot storm) costs no store read.
        let rec = if sub.state(ip) == FREE {
            None
        } else {
            read(ip)?
        };
        if cache && current == Some(ip) && sub.is_bound(ip, now) {
            if let Some(r) = rec.as_ref().filter(|r| &r.client == client) {
                if hostname.is_none_or(|h| r.hostname.as_deref() == Some(h))
                    && self.fresh(s, r, now)
                {
                    return Ok(Plan::Cached(r.to_lease(addr, &sub.spec.id)));
                }
            }
        }
        let mut changes = Vec::with_capacity(2);
        if let Some(old) = current.filter(|o| *o != ip) {
            let bound = self
                .subnet_of(old)
                .is_some_and(|os| self.subnets[os].is_bound(old, now));
            if let Some(mut r) = read(old)?.filter(|r| bound && &r.client == client) {
                (r.state, r.expires, r.updated) = (LeaseState::Released, now, now);
                changes.push(Change {
                    ip: old,
                    old_client: Some(client.clone()),
                    new: Some(r),
                });
            }
        }
        let own = rec.as_ref().filter(|r| &r.client == client);
        let new = Record {
            state: LeaseState::Bound,
            client: client.clone(),
            expires: now.saturating_add(self.lease_secs(s)),
            updated: now,
            hostname: hostname
                .map(str::to_owned)
                .or_else(|| own.and_then(|r| r.hostname.clone())),
            port: match port {
                Some(p) => Some(p.id.into()),
                None => own.and_then(|r| r.port.clone()),
            },
        };
        let lease = new.to_lease(addr, &sub.spec.id);
        changes.push(Change {
            ip,
            old_client: rec.map(|r| r.client),
            new: Some(new),
        });
        Ok(Plan::Write(changes, lease))
    }

    /// Renews the client's lease on `ip`; a lease younger than the cache
    /// threshold is answered cached; an expired or released one still free
    /// is bound again.
    pub fn plan_renew(
        &self,
        client: &ClientKey,
        ip: u32,
        now: u32,
        read: Reader,
    ) -> Result<Plan, IpamError> {
        let s = self.subnet_of(ip).ok_or(IpamError::NoLease)?;
        if self.clients.get(client) != Some(ip) {
            return Err(self.not_mine(s, ip, client, now));
        }
        match self.subnets[s].state(ip) {
            1..=3 => self
                .bind_plan(s, client, ip, None, None, now, read, true)
                .map_err(|e| match e {
                    IpamError::AddressTaken { ip } | IpamError::Reserved { ip } => {
                        IpamError::NotOwner { ip }
                    }
                    e => e,
                }),
            _ => Err(IpamError::NoLease),
        }
    }

    /// `Ok(None)`: nothing to write (already released, or only offered —
    /// the caller drops the offer).
    pub fn plan_release(
        &self,
        client: &ClientKey,
        ip: u32,
        now: u32,
        read: Reader,
    ) -> Result<Option<Vec<Change>>, IpamError> {
        if self.offers.get(&ip).is_some_and(|o| &o.client == client) {
            return Ok(None);
        }
        let s = self.subnet_of(ip).ok_or(IpamError::NoLease)?;
        if self.clients.get(client) != Some(ip) {
            return Err(self.not_mine(s, ip, client, now));
        }
        match self.subnets[s].state(ip) {
            1 => {
                let mut r = read(ip)?.ok_or(IpamError::NoLease)?;
                (r.state, r.expires, r.updated) = (LeaseState::Released, now, now);
                Ok(Some(vec![Change {
                    ip,
                    old_client: Some(client.clone()),
                    new: Some(r),
                }]))
            }
            2 | 3 => Ok(None),
            _ => Err(IpamError::NoLease),
        }
    }

    /// The client found `ip` in use on the wire: quarantine it.
    pub fn plan_decline(
        &self,
        client: &ClientKey,
        ip: u32,
        now: u32,
        read: Reader,
    ) -> Result<Vec<Change>, IpamError> {
        let s = self.subnet_of(ip).ok_or(IpamError::NoLease)?;
        let offered = self.offers.get(&ip).is_some_and(|o| &o.client == client);
        let bound = self.clients.get(client) == Some(ip) && self.subnets[s].state(ip) == 1;
        if !offered && !bound {
            return Err(self.not_mine(s, ip, client, now));
        }
        let rec = read(ip)?;
        let new = Record {
            state: LeaseState::Declined,
            client: client.clone(),
            expires: now.saturating_add(self.tuning.quarantine),
            updated: now,
            hostname: rec
                .as_ref()
                .filter(|r| &r.client == client)
                .and_then(|r| r.hostname.clone()),
            port: None,
        };
        Ok(vec![Change {
            ip,
            old_client: rec.map(|r| r.client),
            new: Some(new),
        }])
    }

    /// Bound leases past their end become expired; also returns the next
    /// bound expiry after `now`.
    pub fn plan_expiry(&self, now: u32, read: Reader) -> Result<(Vec<Change>, u32), IpamError> {
        let mut changes = Vec::new();
        let mut next = u32::MAX;
        for (s, sub) in self.subnets.iter().enumerate() {
            let (due, n) = sub.due(now);
            next = next.min(n);
            // In a cluster, each block's owner expires its leases.
            for ip in due.into_iter().filter(|ip| self.may_give(s, *ip)) {
                if let Some(mut r) = read(ip)? {
                    r.state = LeaseState::Expired;
                    r.updated = r.expires;
                    let old_client = Some(r.client.clone());
                    changes.push(Change {
                        ip,
                        old_client,
                        new: Some(r),
                    });
                }
            }
        }
        Ok((changes, next))
    }
}
