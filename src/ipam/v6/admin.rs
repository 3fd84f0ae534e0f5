//! v6 subnets from the config, and what the API and `db export` list:
//! subnets with their usage, bindings and offers in key order.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::record::{Key6, Record6};
use super::spec::Subnet6Spec;
use super::types::Ia6Kind;
use crate::client::ClientKey;
use crate::ipam::error::IpamError;
use crate::ipam::handle::Ipam;
use crate::ipam::load::load;
use crate::ipam::model::{time, unix_secs, LeaseFilter, LeaseState};
use crate::ipam::record::to_json;
use crate::ipam::store::{Op, TreeId};

/// A v6 binding or offer as the API and `db export` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding6 {
    /// The address (IA_NA) or the delegated prefix (IA_PD), as text.
    pub ip: String,
    pub subnet: String,
    pub client: ClientKey,
    pub kind: Ia6Kind,
    pub iaid: u32,
    pub state: LeaseState,
    #[serde(with = "unix_secs")]
    pub expires_at: SystemTime,
    #[serde(with = "unix_secs")]
    pub updated_at: SystemTime,
}

/// A v6 subnet's use: members of its pools, and slots by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage6 {
    pub subnet: String,
    /// Addresses in the address pools (saturating).
    pub addresses: u64,
    /// Prefixes in the delegated-prefix pools (saturating).
    pub prefixes: u64,
    pub bound: u64,
    pub declined: u64,
    pub offered: u64,
    /// Delegated prefixes bound, offered or declined (counted in the above too).
    pub delegated: u64,
}

/// One page of v6 bindings; `next` resumes after it (the stored key of
/// the last binding covered: 16 address bytes and the length).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page6 {
    pub bindings: Vec<Binding6>,
    pub next: Option<[u8; 17]>,
}

impl Ipam {
    /// Upserts the configured v6 subnets (stored ones not in the config,
    /// such as those the API added, stay: as v4's `apply_config`) and
    /// rebuilds the index. Durable; blocking (call at start-up or reload).
    pub fn apply_config6(&self, subnets: &[Subnet6Spec]) -> Result<(), IpamError> {
        let (_applying, mut st) = self.lock_store();
        let kept: Vec<Subnet6Spec> = st
            .v6
            .subnets
            .iter()
            .map(|s| (*s.spec).clone())
            .filter(|s| !subnets.iter().any(|c| c.id == s.id))
            .collect();
        let all: Vec<&Subnet6Spec> = subnets.iter().chain(&kept).collect();
        for (i, s) in all.iter().enumerate() {
            if let Some(o) = all[..i].iter().find(|o| o.overlaps(s) || o.id == s.id) {
                return Err(IpamError::SubnetOverlap {
                    id: s.id.clone(),
                    other: o.id.clone(),
                });
            }
        }
        let ops = subnets
            .iter()
            .map(|s| {
                Ok(Op {
                    tree: TreeId::Subnets6,
                    key: s.id.as_bytes().to_vec(),
                    value: Some(to_json(s)?),
                })
            })
            .collect::<Result<Vec<_>, IpamError>>()?;
        self.drain(&mut st)?;
        st.writable()?;
        self.store.apply(&ops)?;
        self.store.flush()?;
        let fresh = load(self.store.as_ref(), st.tuning.clone())?;
        self.replace_state(&mut st, fresh);
        Ok(())
    }

    /// The first configured v6 subnet the store holds with another value,
    /// named as the config names it; `None` if the store agrees.
    pub fn config_differs6(&self, subnets: &[Subnet6Spec]) -> Option<String> {
        let st = self.lock();
        subnets.iter().find_map(|spec| {
            let stored = st.v6.subnets.iter().find(|s| s.spec.id == spec.id);
            stored
                .is_some_and(|s| *s.spec != *spec)
                .then(|| format!("subnet6 '{}'", spec.id))
        })
    }

    pub fn subnets6(&self) -> Vec<Arc<Subnet6Spec>> {
        let st = self.lock();
        st.v6.subnets.iter().map(|s| s.spec.clone()).collect()
    }

    pub fn usage6(&self) -> Vec<Usage6> {
        let st = self.lock();
        let sat = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        st.v6
            .subnets
            .iter()
            .map(|s| Usage6 {
                subnet: s.spec.id.clone(),
                addresses: sat(s.size(Ia6Kind::Na)),
                prefixes: sat(s.size(Ia6Kind::Pd)),
                bound: s.bound,
                declined: s.declined,
                offered: s.offered,
                delegated: sat(s
                    .pools
                    .iter()
                    .filter(|p| p.kind() == Ia6Kind::Pd)
                    .fold(0u128, |n, p| n.saturating_add(p.entries))),
            })
            .collect()
    }

    /// v6 bindings and live offers matching `filter` after `after`, in key
    /// order: at most `limit`, reading at most `budget` stored records.
    /// Blocking (sled reads): call it off async threads.
    pub fn bindings6(
        &self,
        filter: &LeaseFilter,
        after: Option<[u8; 17]>,
        limit: usize,
        budget: usize,
    ) -> Page6 {
        // Just past `after`: the same address with a longer length (any
        // length is a bound here, valid or not).
        let from = after.map_or(Key6 { addr: 0, len: 0 }, |b| {
            let (addr, len) = b.split_at(16);
            Key6 {
                addr: u128::from_be_bytes(addr.try_into().unwrap_or([0; 16])),
                len: len[0].saturating_add(1),
            }
        });
        let (subnets, offers) = {
            let st = self.lock();
            let subnets: Vec<_> = st.v6.subnets.iter().map(|s| s.spec.clone()).collect();
            let now = crate::ipam::model::secs(SystemTime::now());
            let offers: Vec<(Key6, Binding6)> = st
                .v6
                .slots
                .range(from..)
                // Slots are bindings too: bound the walk under the lock.
                .take(budget)
                .filter_map(|(k, s)| Some((*k, s.offer.as_ref().filter(|o| o.expires > now)?)))
                .filter_map(|(k, o)| {
                    let sub = st.v6.subnet_of(k)?;
                    let b = binding(k, &st.v6.subnets[sub].spec.id, &o.ia, o.expires, o.at);
                    Some((
                        k,
                        Binding6 {
                            state: LeaseState::Offered,
                            ..b
                        },
                    ))
                })
                .filter(|(_, b)| matches(filter, b))
                .take(limit)
                .collect();
            (subnets, offers)
        };
        let subnet_of = |k: Key6| {
            subnets
                .iter()
                .find(|s| s.owns(k.net()))
                .map(|s| s.id.clone())
        };
        let mut stored = Vec::new();
        let (mut next, mut last) = (None, None);
        for (scanned, kv) in self
            .store
            .scan(TreeId::Leases6, &from.bytes(), None)
            .enumerate()
        {
            let Ok((k, v)) = kv else { continue };
            let (Some(key), Ok(r)) = (Key6::from_bytes(&k), Record6::decode(&v)) else {
                continue;
            };
            if scanned >= budget {
                // Out of budget: the page ends after the last record read.
                next = last;
                break;
            }
            last = Some(key);
            let Some(id) = subnet_of(key) else { continue };
            let b = Binding6 {
                state: r.state,
                ..binding(key, &id, &r.ia, r.expires, r.updated)
            };
            if matches(filter, &b) {
                stored.push((key, b));
                if stored.len() >= limit {
                    break;
                }
            }
        }
        merge(offers, stored, limit, next)
    }
}

fn binding(k: Key6, subnet: &str, ia: &super::types::Ia6Key, expires: u32, at: u32) -> Binding6 {
    Binding6 {
        ip: Ipam::key6_text(k.net()),
        subnet: subnet.to_owned(),
        client: ia.client.clone(),
        kind: ia.kind,
        iaid: ia.iaid,
        state: LeaseState::Bound,
        expires_at: time(expires),
        updated_at: time(at),
    }
}

fn matches(f: &LeaseFilter, b: &Binding6) -> bool {
    f.subnet.as_ref().is_none_or(|s| *s == b.subnet)
        && f.state.is_none_or(|s| s == b.state)
        && f.client.as_ref().is_none_or(|c| *c == b.client)
}

/// Offers and stored bindings in key order (an offer stands in for the
/// record on its key), at most `limit`; the page ends where either list
/// stopped short.
fn merge(
    offers: Vec<(Key6, Binding6)>,
    stored: Vec<(Key6, Binding6)>,
    limit: usize,
    scan_end: Option<Key6>,
) -> Page6 {
    let mut all: Vec<(Key6, Binding6)> = offers;
    for (k, b) in stored {
        if !all.iter().any(|(o, _)| *o == k) {
            all.push((k, b));
        }
    }
    all.sort_by_key(|(k, _)| *k);
    let mut next = scan_end;
    if all.len() > limit {
        all.truncate(limit);
    }
    if all.len() == limit {
        next = all.last().map(|(k, _)| *k);
    } else if let Some(end) = scan_end {
        all.retain(|(k, _)| *k <= end);
    }
    Page6 {
        bindings: all.into_iter().map(|(_, b)| b).collect(),
        next: next.map(Key6::bytes),
    }
}
