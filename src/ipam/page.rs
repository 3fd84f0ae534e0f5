//! One page of the lease listing, in address order, resumable after any
//! address. The work per page is bounded twice: at most `limit` leases
//! answered and at most `budget` stored records read, so a filter that
//! matches little never turns one request into a scan of the whole store.

use std::net::Ipv4Addr;

use super::handle::Ipam;
use super::model::{Lease, LeaseFilter, LeaseState};
use super::record::{ip_key, key_ip, offered, Record};
use super::store::TreeId;

/// Leases in address order; `next` is the last address this page covered
/// when there may be more (pass it back as `after`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeasePage {
    pub leases: Vec<Lease>,
    pub next: Option<Ipv4Addr>,
}

impl Ipam {
    /// Leases matching `filter`, at most its `limit`: live offers first,
    /// then stored records in address order. Scans the store without
    /// holding the state lock (`db export`, the dashboard).
    pub fn leases(&self, filter: &LeaseFilter) -> Vec<Lease> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        if let Some(c) = &filter.client {
            return self
                .lease_of(c)
                .filter(|l| filter.matches(l))
                .into_iter()
                .take(limit)
                .collect();
        }
        let (subnets, mut out) = self.page_start(filter, 0, limit);
        for (id, first, last) in &subnets {
            for (ip, r) in self.stored(*first, *last) {
                if out.len() >= limit {
                    return out;
                }
                let Some(r) = r else { continue };
                let lease = r.to_lease(Ipv4Addr::from(ip), id);
                if filter.matches(&lease) {
                    out.push(lease);
                }
            }
        }
        out
    }

    /// The stored lease records on addresses `first..=last`, in address
    /// order (None: unreadable).
    fn stored(&self, first: u32, last: u32) -> impl Iterator<Item = (u32, Option<Record>)> + '_ {
        let to = last.checked_add(1).map(ip_key);
        self.store
            .scan(TreeId::Leases, &ip_key(first), to.as_ref().map(|k| &k[..]))
            .filter_map(|kv| {
                let (k, v) = kv.ok()?;
                Some((key_ip(&k)?, Record::decode(&v).ok()))
            })
    }

    /// Leases matching `filter` (its `limit` is ignored) on addresses after
    /// `after`: at most `limit`, reading at most `budget` stored records.
    /// A live offer stands in for the stored record on its address, as in
    /// [`Ipam::lookup`]. Blocking (sled reads): call it off async threads.
    pub fn lease_page(
        &self,
        filter: &LeaseFilter,
        after: Option<Ipv4Addr>,
        limit: usize,
        budget: usize,
    ) -> LeasePage {
        let Some(start) = after.map_or(Some(0), |a| u32::from(a).checked_add(1)) else {
            return LeasePage::default();
        };
        let limit = limit.max(1);
        if let Some(c) = &filter.client {
            let leases = self
                .lease_of(c)
                .filter(|l| filter.matches(l) && u32::from(l.ip) >= start)
                .into_iter()
                .collect();
            return LeasePage { leases, next: None };
        }
        let (subnets, offers) = self.page_start(filter, start, limit);
        let mut page = Paging {
            out: Vec::new(),
            offers: offers.into_iter().peekable(),
            limit,
        };
        let mut scanned = 0;
        for (id, first, last) in &subnets {
            for (ip, record) in self.stored(start.max(*first), *last) {
                if page.offers_up_to(ip) {
                    return page.full();
                }
                let overridden = page.offers.peek().is_some_and(|o| u32::from(o.ip) == ip);
                if let Some(r) = record.filter(|_| !overridden) {
                    let lease = r.to_lease(Ipv4Addr::from(ip), id);
                    if filter.matches(&lease) && page.push(lease) {
                        return page.full();
                    }
                }
                scanned += 1;
                if scanned >= budget {
                    // Out of budget: the page ends at `ip`, offers included.
                    if page.offers_up_to(ip.saturating_add(1)) {
                        return page.full();
                    }
                    return LeasePage {
                        leases: page.out,
                        next: Some(Ipv4Addr::from(ip)),
                    };
                }
            }
        }
        if page.offers_up_to(u32::MAX) {
            return page.full();
        }
        LeasePage {
            leases: page.out,
            next: None,
        }
    }

    /// The subnets to scan (id, first, last address; in address order) and
    /// the first `limit` matching offers from `start`, in address order.
    fn page_start(
        &self,
        filter: &LeaseFilter,
        start: u32,
        limit: usize,
    ) -> (Vec<(String, u32, u32)>, Vec<Lease>) {
        let (_applying, mut st) = self.lock_store();
        // Listing reads the store: apply queued writes first.
        if let Err(e) = self.drain(&mut st) {
            tracing::warn!(error = %e, "listing leases without queued writes");
        }
        let wanted = |id: &str| filter.subnet.as_deref().is_none_or(|w| w == id);
        let mut subnets: Vec<(String, u32, u32)> = st
            .subnets
            .iter()
            .filter(|s| wanted(&s.spec.id))
            .map(|s| {
                let (first, last) = (s.spec.cidr.network(), s.spec.cidr.broadcast());
                (s.spec.id.clone(), u32::from(first), u32::from(last))
            })
            .filter(|(_, _, last)| *last >= start)
            .collect();
        subnets.sort_by_key(|s| s.1);
        let mut ips: Vec<u32> = if filter.state.is_none_or(|s| s == LeaseState::Offered) {
            st.offers
                .keys()
                .copied()
                .filter(|ip| *ip >= start)
                .filter(|ip| {
                    st.subnet_of(*ip)
                        .is_some_and(|s| wanted(&st.subnets[s].spec.id))
                })
                .collect()
        } else {
            Vec::new()
        };
        ips.sort_unstable();
        ips.truncate(limit);
        let offers = ips
            .into_iter()
            .filter_map(|ip| {
                let o = st.offers.get(&ip)?;
                let s = st.subnet_of(ip)?;
                Some(offered(
                    ip,
                    &st.subnets[s].spec.id,
                    &o.client,
                    o.expires,
                    o.at,
                ))
            })
            .collect();
        (subnets, offers)
    }
}

/// A page being filled from the store scan and the sorted offers.
struct Paging {
    out: Vec<Lease>,
    offers: std::iter::Peekable<std::vec::IntoIter<Lease>>,
    limit: usize,
}

impl Paging {
    /// Adds `lease`; true when the page is full.
    fn push(&mut self, lease: Lease) -> bool {
        self.out.push(lease);
        self.out.len() >= self.limit
    }

    /// Adds the offers on addresses below `ip`; true when the page is full.
    fn offers_up_to(&mut self, ip: u32) -> bool {
        while let Some(o) = self
            .offers
            .next_if(|o| u32::from(o.ip) < ip || ip == u32::MAX)
        {
            if self.push(o) {
                return true;
            }
        }
        false
    }

    fn full(self) -> LeasePage {
        let next = self.out.last().map(|l| l.ip);
        LeasePage {
            leases: self.out,
            next,
        }
    }
}
