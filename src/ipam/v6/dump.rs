//! The v6 part of `vpcbox db export|import`: subnets and stored bindings,
//! checked whole before anything is written.

use std::collections::HashSet;

use ipnet::Ipv6Net;

use super::admin::Binding6;
use super::record::{Key6, Record6};
use super::spec::Subnet6Spec;
use super::types::{Ia6Key, Ia6Kind};
use crate::ipam::model::{secs, LeaseState};
use crate::ipam::record::to_json;
use crate::ipam::store::{Op, TreeId};

/// The store writes restoring `subnets` and `bindings`, or what is wrong
/// with them (naming the record). `v4_ids`: the dump's v4 subnet ids.
pub fn restore6(
    subnets: &[Subnet6Spec],
    bindings: &[Binding6],
    v4_ids: &[&str],
) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for (i, s) in subnets.iter().enumerate() {
        if v4_ids.contains(&s.id.as_str()) || subnets[..i].iter().any(|o| o.id == s.id) {
            return Err(format!("subnet6 '{}': the id is used twice", s.id));
        }
        if let Some(o) = subnets[..i].iter().find(|o| o.overlaps(s)) {
            return Err(format!("subnet6 '{}' overlaps subnet6 '{}'", s.id, o.id));
        }
        ops.push(Op {
            tree: TreeId::Subnets6,
            key: s.id.as_bytes().to_vec(),
            value: Some(to_json(s).map_err(|e| e.to_string())?),
        });
    }
    let mut keys = HashSet::new();
    let mut bound = HashSet::new();
    for b in bindings {
        let name = || format!("v6 lease {} of {}", b.ip, b.client);
        let (key, record) = record_of(b).map_err(|e| format!("{}: {e}", name()))?;
        match subnets.iter().find(|s| s.id == b.subnet) {
            None => return Err(format!("{}: names unknown subnet6 '{}'", name(), b.subnet)),
            Some(s) if !s.owns(key.net()) => {
                return Err(format!("{}: not in subnet6 '{}'", name(), s.id))
            }
            Some(_) => {}
        }
        if !keys.insert(key) {
            return Err(format!("{}: a second lease of {}", name(), b.ip));
        }
        if record.state == LeaseState::Bound && !bound.insert(record.ia.clone()) {
            return Err(format!(
                "{}: the IA {} is also bound elsewhere",
                name(),
                record.ia
            ));
        }
        ops.push(Op {
            tree: TreeId::Leases6,
            key: key.bytes().to_vec(),
            value: Some(record.encode()),
        });
    }
    Ok(ops)
}

/// A listed binding as its stored key and record.
fn record_of(b: &Binding6) -> Result<(Key6, Record6), String> {
    let net = match b.kind {
        Ia6Kind::Na => b.ip.parse::<std::net::Ipv6Addr>().map(Ipv6Net::from).ok(),
        Ia6Kind::Pd => b.ip.parse::<Ipv6Net>().ok().filter(|n| n.trunc() == *n),
    };
    let net = net.ok_or("the ip is not an address (na) or a prefix (pd)")?;
    if b.kind == Ia6Kind::Pd && net.prefix_len() == 128 {
        return Err("a delegated prefix is not an address".into());
    }
    if !matches!(b.state, LeaseState::Bound | LeaseState::Declined) {
        return Err(format!("state {} is not stored", b.state.as_str()));
    }
    Ok((
        Key6::of(net),
        Record6 {
            state: b.state,
            ia: Ia6Key {
                client: b.client.clone(),
                kind: b.kind,
                iaid: b.iaid,
            },
            expires: secs(b.expires_at),
            updated: secs(b.updated_at),
            // Dumps carry no relay port: restored bindings count against none.
            port: None,
        },
    ))
}

/// A server DUID from its hex text: a type code and 1 to 128 octets (RFC 9915).
pub fn duid_of(text: &str) -> Result<Vec<u8>, String> {
    let d = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
    match d.len() {
        3..=130 => Ok(d),
        n => Err(format!("{n} bytes (a DUID is 3 to 130)")),
    }
}
