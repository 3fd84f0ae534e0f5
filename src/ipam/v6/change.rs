//! v6 subnets added and deleted through the API, as v4 ones are
//! (`ipam/admin.rs`): one write through the group commit, the index and
//! the DHCPv6 server's subnet list changed under the same lock.

use std::sync::Arc;
use std::time::SystemTime;

use ipnet::Ipv6Net;

use super::index::Subnet6Index;
use super::plan::Change6;
use super::spec::Subnet6Spec;
use super::types::Ia6Key;
use crate::ipam::error::IpamError;
use crate::ipam::handle::Ipam;
use crate::ipam::model::secs;
use crate::ipam::record::to_json;
use crate::ipam::state::State;
use crate::ipam::store::{Op, TreeId};

impl Ipam {
    /// Adds a v6 subnet: served by the DHCPv6 server at once, durable on
    /// return. Its id may be no other subnet's, v4 or v6; it may share no
    /// address or prefix with another v6 subnet. Cancel-safe (the write
    /// happens or not as a whole; dropping only abandons the wait).
    pub async fn add_subnet6(&self, spec: Subnet6Spec) -> Result<(), IpamError> {
        spec.validate()?;
        let ticket = {
            let mut st = self.lock();
            if st.subnet_ix(&spec.id).is_ok() || st.v6.subnet_ix(&spec.id).is_some() {
                return Err(IpamError::SubnetExists(spec.id));
            }
            if let Some(o) = st.v6.subnets.iter().find(|s| s.spec.overlaps(&spec)) {
                return Err(IpamError::SubnetOverlap {
                    id: spec.id,
                    other: o.spec.id.clone(),
                });
            }
            let t = self.write_ops(&mut st, &[subnet6_op(&spec.id, Some(&spec))?])?;
            st.v6.insert_subnet(Subnet6Index::new(Arc::new(spec)));
            self.refresh_specs(&st);
            self.note_change(&st);
            t
        };
        self.durable(Some(ticket)).await
    }

    /// Deletes a v6 subnet with its bindings and offers (as `delete_subnet`
    /// a v4 one with its leases); durable on return. Cancel-safe as
    /// [`Ipam::add_subnet6`].
    pub async fn delete_subnet6(&self, id: &str) -> Result<(), IpamError> {
        let ticket = {
            let mut st = self.lock();
            let s = st
                .v6
                .subnet_ix(id)
                .ok_or_else(|| IpamError::UnknownSubnet(id.to_owned()))?;
            let sub = &st.v6.subnets[s];
            let keys: Vec<_> = st
                .v6
                .slots
                .keys()
                .copied()
                .filter(|k| sub.owns(*k))
                .collect();
            let view: &State = &st;
            let mut changes = Vec::new();
            for k in keys
                .iter()
                .filter(|k| view.v6.slot(**k).is_some_and(|s| s.code != 0))
            {
                let old = self.read6(view, *k)?.map(|r| r.ia);
                changes.push(Change6 {
                    key: *k,
                    old,
                    new: None,
                });
            }
            let mut ops = State::ops6(&changes);
            ops.push(subnet6_op(id, None)?);
            let t = self.write_ops(&mut st, &ops)?;
            keys.iter().for_each(|k| st.v6.drop_offer(*k));
            st.apply6(&changes);
            st.v6.subnets.remove(s);
            self.refresh_specs(&st);
            self.note_change(&st);
            t
        };
        self.durable(Some(ticket)).await
    }

    /// What `ia` holds bound in subnet `id` and still valid at `now`.
    pub fn held6(&self, id: &str, ia: &Ia6Key, now: SystemTime) -> Option<Ipv6Net> {
        let st = self.lock();
        let k = st.binding6(st.v6.subnet_ix(id)?, ia)?;
        let ends = st.v6.slot(k)?.time;
        (ends > secs(now)).then(|| k.net())
    }
}

/// The store write of subnet `id`: `spec`, or none (deleted).
fn subnet6_op(id: &str, spec: Option<&Subnet6Spec>) -> Result<Op, IpamError> {
    Ok(Op {
        tree: TreeId::Subnets6,
        key: id.as_bytes().to_vec(),
        value: spec.map(to_json).transpose()?,
    })
}
