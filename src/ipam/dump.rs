//! `vpcbox db export|import`: the whole store as one JSON document.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::admin::check_overlaps;
use super::error::IpamError;
use super::handle::Ipam;
use super::load::load;
use super::model::Lease;
use super::model::{LeaseFilter, LeaseState, ReservationSpec};
use super::record::{from_json, ip_key, reservation_key, to_json, Record};
use super::spec::SubnetSpec;
use super::store::{Op, TreeId, SCHEMA};
use super::v6::{duid_of, restore6, Binding6, Subnet6Spec, DUID_KEY};
use crate::client::ClientKey;
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
    /// DHCPv6 subnets and stored bindings (absent from stores without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets6: Vec<Subnet6Spec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases6: Vec<Binding6>,
    /// The DHCPv6 server DUID (hex): carried so clients' Renews still name
    /// this server after an import or a migration into a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_duid: Option<String>,
}

/// Longest stored hostname, in bytes (the record's length is one byte).
const HOSTNAME_MAX: usize = 255;

/// A hostname must fit a record whole: cutting it would split a character
/// or silently change the name.
fn check_hostname(h: Option<&str>) -> Result<(), String> {
    match h {
        Some(h) if h.len() > HOSTNAME_MAX => Err(format!(
            "hostname is {} bytes (at most {HOSTNAME_MAX})",
            h.len()
        )),
        Some(h) if h.chars().any(char::is_control) => {
            Err("hostname holds control characters".into())
        }
        _ => Ok(()),
    }
}

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
            subnets6: self.subnets6().iter().map(|s| (**s).clone()).collect(),
            leases6: self
                .bindings6(&LeaseFilter::default(), None, usize::MAX, usize::MAX)
                .bindings
                .into_iter()
                .filter(|b| b.state != LeaseState::Offered)
                .collect(),
            server_duid: self.store.get(TreeId::Meta, DUID_KEY)?.map(hex::encode),
        })
    }

    fn check_dump(dump: &Dump) -> Result<(), IpamError> {
        if dump.schema > SCHEMA {
            return Err(IpamError::NewerSchema {
                found: dump.schema,
                supported: SCHEMA,
            });
        }
        let bad = |what: String| IpamError::InvalidDump(what);
        for s in &dump.subnets {
            s.validate()
                .map_err(|e| bad(format!("subnet '{}': {e}", s.id)))?;
        }
        check_overlaps(dump.subnets.iter()).map_err(|e| bad(e.to_string()))?;
        if let Some(d) = &dump.server_duid {
            duid_of(d).map_err(|e| bad(format!("server_duid '{d}': {e}")))?;
        }
        // A host address of the named subnet (not its network or broadcast
        // address, not outside it).
        let host = |id: &str, ip| match dump.subnets.iter().find(|s| s.id == id) {
            None => Err(format!("names unknown subnet '{id}'")),
            Some(s) if s.is_unassignable(ip) => {
                Err(format!("{ip} is not a host address of subnet '{id}'"))
            }
            Some(_) => Ok(()),
        };
        let mut reserved: HashMap<Ipv4Addr, &ReservationSpec> = HashMap::new();
        let mut reservation_of: HashSet<(&str, &ClientKey)> = HashSet::new();
        for r in &dump.reservations {
            let name = || format!("reservation {} {} in '{}'", r.client, r.ip, r.subnet);
            host(&r.subnet, r.ip).map_err(|e| bad(format!("{}: {e}", name())))?;
            check_hostname(r.hostname.as_deref()).map_err(|e| bad(format!("{}: {e}", name())))?;
            if let Some(o) = reserved.insert(r.ip, r).filter(|o| o.client != r.client) {
                return Err(bad(format!(
                    "{}: {} is also reserved for {}",
                    name(),
                    r.ip,
                    o.client
                )));
            }
            if !reservation_of.insert((&r.subnet, &r.client)) {
                return Err(bad(format!(
                    "{}: a second reservation of the client in the subnet",
                    name()
                )));
            }
        }
        let mut leased: HashSet<Ipv4Addr> = HashSet::new();
        let mut bound: HashMap<&ClientKey, Ipv4Addr> = HashMap::new();
        for l in &dump.leases {
            let name = || format!("lease {} of {}", l.ip, l.client);
            if l.state == LeaseState::Offered {
                return Err(bad(format!("{}: offers are not stored", name())));
            }
            host(&l.subnet, l.ip).map_err(|e| bad(format!("{}: {e}", name())))?;
            check_hostname(l.hostname.as_deref()).map_err(|e| bad(format!("{}: {e}", name())))?;
            if !leased.insert(l.ip) {
                return Err(bad(format!("{}: a second lease of {}", name(), l.ip)));
            }
            if l.state == LeaseState::Bound {
                if let Some(other) = bound.insert(&l.client, l.ip) {
                    return Err(bad(format!(
                        "{}: the client is also bound to {other}",
                        name()
                    )));
                }
            }
            if let Some(r) = reserved.get(&l.ip).filter(|r| r.client != l.client) {
                if l.state == LeaseState::Bound {
                    return Err(bad(format!(
                        "{}: {} is reserved for {}",
                        name(),
                        l.ip,
                        r.client
                    )));
                }
            }
        }
        Ok(())
    }

    fn is_empty_store(&self) -> Result<bool, IpamError> {
        for t in [
            TreeId::Subnets,
            TreeId::Leases,
            TreeId::Reservations,
            TreeId::Isolations,
            TreeId::Subnets6,
            TreeId::Leases6,
        ] {
            if self.store.scan(t, &[], None).next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Restores a dump into an empty store (`force`: replaces the contents).
    /// All or nothing: the dump is checked whole first (an error names the
    /// record), then written as one transaction and flushed.
    pub async fn import(&self, dump: Dump, force: bool) -> Result<(), IpamError> {
        Self::check_dump(&dump)?;
        let v4_ids: Vec<&str> = dump.subnets.iter().map(|s| s.id.as_str()).collect();
        let v6_ops =
            restore6(&dump.subnets6, &dump.leases6, &v4_ids).map_err(IpamError::InvalidDump)?;
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
            TreeId::Subnets6,
            TreeId::Leases6,
        ] {
            for kv in self.store.scan(t, &[], None) {
                ops.push(Op {
                    tree: t,
                    key: kv?.0,
                    value: None,
                });
            }
        }
        ops.extend(v6_ops);
        if let Some(d) = &dump.server_duid {
            ops.push(Op {
                tree: TreeId::Meta,
                key: DUID_KEY.to_vec(),
                value: Some(duid_of(d).map_err(IpamError::InvalidDump)?),
            });
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
            st.writable()?;
            if let Err(e) = self.store.apply(&ops) {
                self.roll_back(&mut st, &e);
                return Err(e);
            }
            let ticket = self.committer.submit(&mut st, &[], &self.stats);
            let fresh = load(self.store.as_ref(), st.tuning.clone())?;
            self.replace_state(&mut st, fresh);
            ticket
        };
        self.durable(Some(ticket)).await
    }
}
