//! Rebuilding the v6 index from the store (with the v4 one, in `ipam/load.rs`).

use std::sync::Arc;

use super::index::{Subnet6Index, V6State};
use super::record::{Key6, Record6};
use super::spec::Subnet6Spec;
use crate::ipam::error::IpamError;
use crate::ipam::record::{from_json, state_code, BOUND};
use crate::ipam::store::{Store, TreeId};

pub fn load6(store: &dyn Store, v6: &mut V6State) -> Result<(), IpamError> {
    for kv in store.scan(TreeId::Subnets6, &[], None) {
        let spec: Subnet6Spec = from_json(&kv?.1)?;
        v6.insert_subnet(Subnet6Index::new(Arc::new(spec)));
    }
    let mut skipped = 0u64;
    for kv in store.scan(TreeId::Leases6, &[], None) {
        let (k, v) = kv?;
        match (Key6::from_bytes(&k), Record6::decode(&v)) {
            (Some(key), Ok(r)) if v6.subnet_of(key).is_some() => {
                let code = state_code(r.state);
                v6.set(key, Some((code, r.expires)));
                if code == BOUND {
                    let port = r.port.as_deref().map(|p| v6.ports.hash(p));
                    v6.ports.set(key, port);
                    v6.bind_ia(&r.ia, key);
                }
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "ignored unreadable v6 bindings, or bindings outside every subnet6"
        );
    }
    Ok(())
}
