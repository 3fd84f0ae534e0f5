//! Rebuilding the in-memory index from the store (at open, after a
//! roll-back, after an import).

use std::collections::HashMap;
use std::sync::Arc;

use super::error::IpamError;
use super::index::SubnetIndex;
use super::model::{LeaseState, ReservationSpec};
use super::record::{from_json, ip_key, key_ip, Record, FREE};
use super::spec::SubnetSpec;
use super::state::{State, Tuning};
use super::store::{Store, TreeId};
use super::v6::load6;
use crate::client::ClientKey;

/// Rebuilds the whole index from the store.
pub fn load(store: &dyn Store, tuning: Tuning) -> Result<State, IpamError> {
    let mut st = State::new(tuning);
    for kv in store.scan(TreeId::Subnets, &[], None) {
        let spec: SubnetSpec = from_json(&kv?.1)?;
        st.insert_subnet(SubnetIndex::new(Arc::new(spec), |_| false));
    }
    for kv in store.scan(TreeId::Reservations, &[], None) {
        let r: ReservationSpec = from_json(&kv?.1)?;
        if st.subnet_ix(&r.subnet).is_ok() {
            st.reserve(r);
        }
    }
    let mut skipped = 0u64;
    // A client's address is its bound record's, else the ended one its
    // clients-tree entry names (none if that address went to another
    // client), else (no entry: a store written by hand) its latest.
    let mut ended: HashMap<ClientKey, (u32, u32)> = HashMap::new();
    for kv in store.scan(TreeId::Leases, &[], None) {
        let (k, v) = kv?;
        match (key_ip(&k), Record::decode(&v)) {
            (Some(ip), Ok(r)) if st.subnet_of(ip).is_some() => {
                load_lease(&mut st, ip, r.state, r.expires);
                if r.state == LeaseState::Bound {
                    if let Some(p) = r.port.as_deref() {
                        let port = st.ports.hash(p);
                        st.ports.set(ip, Some(port));
                    }
                    st.clients.insert(&r.client, ip);
                } else {
                    let latest = ended.entry(r.client).or_insert((r.updated, ip));
                    *latest = (*latest).max((r.updated, ip));
                }
            }
            _ => skipped += 1,
        }
    }
    for (c, (_, latest)) in ended {
        if st.clients.get(&c).is_some() {
            continue;
        }
        let named = store.get(TreeId::Clients, c.to_string().as_bytes())?;
        let ip = match named.as_deref().map(key_ip) {
            None => Some(latest),
            Some(ip) => ip.filter(|ip| {
                store
                    .get(TreeId::Leases, &ip_key(*ip))
                    .ok()
                    .flatten()
                    .and_then(|v| Record::decode(&v).ok())
                    .is_some_and(|r| r.client == c)
            }),
        };
        if let Some(ip) = ip.filter(|ip| st.code(*ip) != FREE) {
            st.clients.insert(&c, ip);
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "ignored unreadable stored leases, or leases outside every subnet"
        );
    }
    load6(store, &mut st.v6)?;
    Ok(st)
}

fn load_lease(st: &mut State, ip: u32, state: LeaseState, expires: u32) {
    let Some(s) = st.subnet_of(ip) else { return };
    if state == LeaseState::Bound {
        st.next_expiry = st.next_expiry.min(expires);
    }
    let sub = &mut st.subnets[s];
    sub.set(ip, Some((state, expires)));
    if !st.reserved.contains_key(&ip) {
        sub.reindex(ip);
    }
}
