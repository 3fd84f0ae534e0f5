//! `vpcbox db export|import`: the whole store as one JSON document.

use serde::{Deserialize, Serialize};

use super::admin::{check_overlaps, load};
use super::model::{LeaseFilter, LeaseState, ReservationSpec, SubnetSpec};
use super::record::{from_json, ip_key, reservation_key, to_json, Record};
use super::store::{Op, TreeId, SCHEMA};
use super::{Ipam, IpamError, Lease};
use crate::isolation::IsolationEntry;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    pub schema: u32,
    pub subnets: Vec<SubnetSpec>,
    pub reservations: Vec<ReservationSpec>,
    /// Stored leases (offers are not exported).
    pub leases: Vec<Lease>,
    #[serde(default)]
    pub isolations: Vec<IsolationEntry>,
}

/// Writes are applied in chunks of this many keys (one transaction each).
const CHUNK: usize = 4096;

impl Ipam {
    pub fn export(&self) -> Result<Dump, IpamError> {
        self.drain(&mut self.lock_store().1)?;
        let isolations = self
            .store
            .scan(TreeId::Isolations, &[], None)
            .map(|kv| kv.and_then(|(_, v)| from_json(&v)))
            .collect::<Result<_, _>>()?;
        Ok(Dump {
            schema: SCHEMA,
            subnets: self.subnets().iter().map(|s| (**s).clone()).collect(),
            reservations: self.reservations(),
            leases: self
                .leases(&LeaseFilter::default())
                .into_iter()
                .filter(|l| l.state != LeaseState::Offered)
                .collect(),
            isolations,
        })
    }

    fn check_dump(dump: &Dump) -> Result<(), IpamError> {
        if dump.schema > SCHEMA {
            return Err(IpamError::NewerSchema {
                found: dump.schema,
                supported: SCHEMA,
            });
        }
        dump.subnets.iter().try_for_each(SubnetSpec::validate)?;
        check_overlaps(dump.subnets.iter())?;
        let inside = |id: &str, ip| {
            dump.subnets
                .iter()
                .any(|s| s.id == id && s.cidr.contains(&ip))
        };
        if let Some(r) = dump.reservations.iter().find(|r| !inside(&r.subnet, r.ip)) {
            return Err(IpamError::InvalidDump(format!(
                "reservation {} {} is outside its subnet",
                r.client, r.ip
            )));
        }
        if let Some(l) = dump
            .leases
            .iter()
            .find(|l| !inside(&l.subnet, l.ip) || l.state == LeaseState::Offered)
        {
            return Err(IpamError::InvalidDump(format!(
                "lease {} is outside its subnet or offered",
                l.ip
            )));
        }
        Ok(())
    }

    fn is_empty_store(&self) -> Result<bool, IpamError> {
        for t in [
            TreeId::Subnets,
            TreeId::Leases,
            TreeId::Reservations,
            TreeId::Isolations,
        ] {
            if self.store.scan(t, &[], None).next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Restores a dump into an empty store (`force`: replaces the contents).
    /// Not atomic: written in chunks, then flushed; if it fails midway,
    /// import again with `force`. Not cancel-safe for the same reason —
    /// run it to completion (it is a CLI operation).
    pub async fn import(&self, dump: Dump, force: bool) -> Result<(), IpamError> {
        Self::check_dump(&dump)?;
        if !force && !self.is_empty_store()? {
            return Err(IpamError::NotEmpty);
        }
        let mut ops = Vec::new();
        for t in [
            TreeId::Subnets,
            TreeId::Leases,
            TreeId::Clients,
            TreeId::Reservations,
            TreeId::Isolations,
        ] {
            for kv in self.store.scan(t, &[], None) {
                ops.push(Op {
                    tree: t,
                    key: kv?.0,
                    value: None,
                });
            }
        }
        for s in &dump.subnets {
            ops.push(Op {
                tree: TreeId::Subnets,
                key: s.id.as_bytes().to_vec(),
                value: Some(to_json(s)?),
            });
        }
        for r in &dump.reservations {
            ops.push(Op {
                tree: TreeId::Reservations,
                key: reservation_key(&r.subnet, &r.client),
                value: Some(to_json(r)?),
            });
        }
        for i in &dump.isolations {
            ops.push(Op {
                tree: TreeId::Isolations,
                key: i.client.to_string().into_bytes(),
                value: Some(to_json(i)?),
            });
        }
        let mut latest: std::collections::HashMap<&crate::client::ClientKey, &Lease> =
            Default::default();
        for l in &dump.leases {
            let r = Record {
                state: l.state,
                client: l.client.clone(),
                expires: super::model::secs(l.expires_at),
                updated: super::model::secs(l.updated_at),
                hostname: l.hostname.clone(),
                // Dumps carry no relay port: imported leases count against none.
                port: None,
            };
            ops.push(Op {
                tree: TreeId::Leases,
                key: ip_key(u32::from(l.ip)).to_vec(),
                value: Some(r.encode()),
            });
            let e = latest.entry(&l.client).or_insert(l);
            if (l.state == LeaseState::Bound, l.updated_at)
                > (e.state == LeaseState::Bound, e.updated_at)
            {
                *e = l;
            }
        }
        for (c, l) in latest {
            ops.push(Op {
                tree: TreeId::Clients,
                key: c.to_string().into_bytes(),
                value: Some(ip_key(u32::from(l.ip)).to_vec()),
            });
        }
        let ticket = {
            let (_applying, mut st) = self.lock_store();
            self.drain(&mut st)?;
            for chunk in ops.chunks(CHUNK) {
                self.store.apply(chunk)?;
            }
            let ticket = self.committer.submit(&mut st, &[], &self.stats);
            *st = load(self.store.as_ref(), st.tuning)?;
            self.publish_locked(&st);
            self.refresh_specs(&st);
            ticket
        };
        self.durable(Some(ticket)).await
    }
}
