//! Loading the index from the store, and the rare administrative writes:
//! configuration, subnets, reservations, utilisation.

use std::sync::Arc;
use std::time::SystemTime;

use super::commit::Ticket;
use super::error::IpamError;
use super::handle::Ipam;
use super::index::SubnetIndex;
use super::load::load;
use super::model::{LeaseState, PoolUsage, ReservationSpec};
use super::record::{ip_key, reservation_key, to_json};
use super::spec::SubnetSpec;
use super::state::State;
use super::store::{Op, TreeId};
use crate::client::ClientKey;

fn subnet_op(spec: &SubnetSpec) -> Result<Op, IpamError> {
    Ok(Op {
        tree: TreeId::Subnets,
        key: spec.id.as_bytes().to_vec(),
        value: Some(to_json(spec)?),
    })
}

fn reservation_op(r: &ReservationSpec) -> Result<Op, IpamError> {
    Ok(Op {
        tree: TreeId::Reservations,
        key: reservation_key(&r.subnet, &r.client),
        value: Some(to_json(r)?),
    })
}

/// Checks a set of subnets for overlaps among themselves.
pub fn check_overlaps<'a>(
    specs: impl IntoIterator<Item = &'a SubnetSpec> + Clone,
) -> Result<(), IpamError> {
    for (i, a) in specs.clone().into_iter().enumerate() {
        if let Some(b) = specs
            .clone()
            .into_iter()
            .skip(i + 1)
            .find(|b| a.overlaps(b) || a.id == b.id)
        {
            if a.id == b.id {
                return Err(IpamError::SubnetExists(a.id.clone()));
            }
            return Err(IpamError::SubnetOverlap {
                id: b.id.clone(),
                other: a.id.clone(),
            });
        }
    }
    Ok(())
}

/// A reservation's address must be a host of its subnet.
fn check_reservation(spec: &SubnetSpec, r: &ReservationSpec) -> Result<(), IpamError> {
    if spec.is_unassignable(r.ip) {
        return Err(IpamError::NotInSubnet {
            ip: r.ip,
            subnet: spec.id.clone(),
        });
    }
    Ok(())
}

impl Ipam {
    /// Upserts the configured subnets and reservations (stored ones not in
    /// the config stay) and rebuilds the index. Durable on return; blocking
    /// (call at start-up, before serving). The specs come from a validated
    /// `Config` (which ran [`SubnetSpec::check`]); only what depends on the
    /// store (overlaps, reservations) is checked here.
    pub fn apply_config(
        &self,
        subnets: &[SubnetSpec],
        reservations: &[ReservationSpec],
        _now: SystemTime,
    ) -> Result<(), IpamError> {
        let (_applying, mut st) = self.lock_store();
        let kept: Vec<SubnetSpec> = st
            .subnets
            .iter()
            .map(|s| (*s.spec).clone())
            .filter(|s| !subnets.iter().any(|c| c.id == s.id))
            .collect();
        check_overlaps(subnets.iter().chain(kept.iter()))?;
        let mut seen: Vec<&ReservationSpec> = Vec::new();
        for r in reservations {
            let spec = subnets
                .iter()
                .chain(kept.iter())
                .find(|s| s.id == r.subnet)
                .ok_or_else(|| IpamError::UnknownSubnet(r.subnet.clone()))?;
            check_reservation(spec, r)?;
            if let Some(o) = seen.iter().find(|o| o.ip == r.ip && o.client != r.client) {
                return Err(IpamError::ReservationConflict(format!(
                    "{} is reserved for both {} and {}",
                    r.ip, o.client, r.client
                )));
            }
            seen.push(r);
        }
        let mut ops = subnets
            .iter()
            .map(subnet_op)
            .collect::<Result<Vec<_>, _>>()?;
        for r in reservations {
            // Replace stored reservations of the same address for other clients.
            for (_, other) in st
                .reservations
                .iter()
                .filter(|(_, o)| o.ip == r.ip && o.client != r.client)
            {
                ops.push(Op {
                    tree: TreeId::Reservations,
                    key: reservation_key(&other.subnet, &other.client),
                    value: None,
                });
            }
            ops.push(reservation_op(r)?);
        }
        self.drain(&mut st)?;
        self.store.apply(&ops)?;
        self.store.flush()?;
        let fresh = load(self.store.as_ref(), st.tuning.clone())?;
        self.replace_state(&mut st, fresh);
        Ok(())
    }

    /// The first configured subnet or reservation the store holds with
    /// another value (a reservation: its address held by another client),
    /// named as the config names it; `None` if the store agrees.
    pub fn config_differs(
        &self,
        subnets: &[SubnetSpec],
        reservations: &[ReservationSpec],
    ) -> Option<String> {
        let st = self.lock();
        for spec in subnets {
            let stored = st.subnets.iter().find(|s| s.spec.id == spec.id);
            if stored.is_some_and(|s| *s.spec != *spec) {
                return Some(format!("subnet '{}'", spec.id));
            }
        }
        for r in reservations {
            let key = (r.subnet.clone(), r.client.clone());
            let changed = st.reservations.get(&key).is_some_and(|o| o != r);
            let taken = st
                .reservations
                .values()
                .any(|o| o.ip == r.ip && o.client != r.client);
            if changed || taken {
                return Some(format!("reservation {} of '{}'", r.ip, r.client));
            }
        }
        None
    }

    pub(super) fn write_ops(&self, st: &mut State, ops: &[Op]) -> Result<Ticket, IpamError> {
        self.store_apply(st, ops.to_vec())?;
        self.stats
            .ipam
            .writes_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.committer.submit(st, &[], &self.stats))
    }

    /// Adds a subnet; durable on return. Cancel-safe (the write happens or
    /// not as a whole; dropping only abandons the wait).
    pub async fn add_subnet(&self, spec: SubnetSpec) -> Result<(), IpamError> {
        spec.validate()?;
        let ticket = {
            let mut st = self.lock();
            // v4 and v6 subnets share one id space (one API listing).
            if st.subnet_ix(&spec.id).is_ok() || st.v6.subnet_ix(&spec.id).is_some() {
                return Err(IpamError::SubnetExists(spec.id));
            }
            if let Some(o) = st.subnets.iter().find(|s| s.spec.overlaps(&spec)) {
                return Err(IpamError::SubnetOverlap {
                    id: spec.id,
                    other: o.spec.id.clone(),
                });
            }
            let t = self.write_ops(&mut st, &[subnet_op(&spec)?])?;
            st.insert_subnet(SubnetIndex::new(Arc::new(spec), |_| false));
            self.refresh_specs(&st);
            self.note_change(&st);
            t
        };
        self.durable(Some(ticket)).await
    }

    /// Deletes a subnet with its leases and reservations; durable on return.
    /// Cancel-safe as `add_subnet`.
    pub async fn delete_subnet(&self, id: &str) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            let s = st.subnet_ix(id)?;
            let mut ops = vec![Op {
                tree: TreeId::Subnets,
                key: id.as_bytes().to_vec(),
                value: None,
            }];
            let mut gone_clients = Vec::new();
            for ip in st.subnets[s].stored() {
                if let Some(r) = self.read(&st, ip)? {
                    if st.clients.get(&r.client) == Some(ip) {
                        gone_clients.push(r.client);
                    }
                }
                ops.push(Op {
                    tree: TreeId::Leases,
                    key: ip_key(ip).to_vec(),
                    value: None,
                });
            }
            let gone_res: Vec<ClientKey> = st
                .reservations
                .keys()
                .filter(|(sid, _)| sid == id)
                .map(|(_, c)| c.clone())
                .collect();
            ops.extend(gone_res.iter().map(|c| Op {
                tree: TreeId::Reservations,
                key: reservation_key(id, c),
                value: None,
            }));
            let t = self.write_ops(&mut st, &ops)?;
            for c in &gone_res {
                st.unreserve(id, c);
            }
            let offered: Vec<u32> = st
                .offers
                .keys()
                .copied()
                .filter(|ip| st.subnets[s].contains(*ip))
                .collect();
            offered.into_iter().for_each(|ip| st.drop_offer(ip));
            gone_clients.iter().for_each(|c| st.clients.remove(c));
            st.subnets.remove(s);
            self.refresh_specs(&st);
            self.note_change(&st);
            t
        };
        self.durable(Some(ticket)).await
    }

    pub fn reservations(&self) -> Vec<ReservationSpec> {
        self.lock().reservations.values().cloned().collect()
    }

    /// Adds (or moves) the client's reservation in a subnet; durable on
    /// return. Refused if the address is reserved for, or leased to, another
    /// client. Cancel-safe as `add_subnet`.
    pub async fn add_reservation(&self, r: ReservationSpec) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            let s = st.subnet_ix(&r.subnet)?;
            check_reservation(&st.subnets[s].spec, &r)?;
            let ip = u32::from(r.ip);
            if let Some(other) = st.reserved.get(&ip).filter(|c| **c != r.client) {
                return Err(IpamError::ReservationConflict(format!(
                    "{} is reserved for {other}",
                    r.ip
                )));
            }
            let code = st.subnets[s].state(ip);
            if matches!(code, 1 | 4) && st.clients.get(&r.client) != Some(ip) {
                return Err(IpamError::ReservationConflict(format!(
                    "{} is leased to another client",
                    r.ip
                )));
            }
            let mut ops = Vec::new();
            if let Some(old) = st.reservations.get(&(r.subnet.clone(), r.client.clone())) {
                ops.push(Op {
                    tree: TreeId::Reservations,
                    key: reservation_key(&old.subnet, &old.client),
                    value: None,
                });
            }
            ops.push(reservation_op(&r)?);
            let t = self.write_ops(&mut st, &ops)?;
            st.unreserve(&r.subnet, &r.client);
            if st.offers.get(&ip).is_some_and(|o| o.client != r.client) {
                st.drop_offer(ip);
            }
            st.reserve(r);
            t
        };
        self.durable(Some(ticket)).await
    }

    /// Durable on return. Cancel-safe as `add_subnet`.
    pub async fn delete_reservation(
        &self,
        subnet: &str,
        client: &ClientKey,
    ) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            if !st
                .reservations
                .contains_key(&(subnet.to_owned(), client.clone()))
            {
                return Err(IpamError::UnknownReservation);
            }
            let op = Op {
                tree: TreeId::Reservations,
                key: reservation_key(subnet, client),
                value: None,
            };
            let t = self.write_ops(&mut st, &[op])?;
            st.unreserve(subnet, client);
            t
        };
        self.durable(Some(ticket)).await
    }

    /// Per-subnet pool usage.
    pub fn utilisation(&self) -> Vec<PoolUsage> {
        let st = self.lock();
        st.subnets
            .iter()
            .map(|s| {
                let by_state: Vec<(LeaseState, u64)> =
                    LeaseState::ALL.iter().map(|x| (*x, s.count(*x))).collect();
                let reserved_idle = st
                    .reservations
                    .values()
                    .filter(|r| {
                        r.subnet == s.spec.id
                            && s.state(u32::from(r.ip)) != 1
                            && !st.offers.contains_key(&u32::from(r.ip))
                    })
                    .count() as u64;
                let used = s.count(LeaseState::Offered)
                    + s.count(LeaseState::Bound)
                    + s.count(LeaseState::Declined)
                    + reserved_idle;
                PoolUsage {
                    subnet: s.spec.id.clone(),
                    size: s.size,
                    used,
                    by_state,
                }
            })
            .collect()
    }
}
