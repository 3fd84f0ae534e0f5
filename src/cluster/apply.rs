//! Storing the config's subnets and reservations when several nodes start
//! together against an empty cluster: all but one lose the compare, read
//! what won, and if it equals their own config (the usual case) have
//! nothing left to write; a different value is a config error.

use std::time::SystemTime;

use super::handle::Cluster;
use crate::ipam::{Ipam, IpamError, ReservationSpec, SubnetSpec};

/// Why the config was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// What differs (`subnet 'lab'`, `reservation 10.0.0.10 of 'mac:…'`).
    #[error("{0}: another cluster node stored a different value at the same time")]
    Differs(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

/// Compare failures retried (each after reading everything again).
const TRIES: u32 = 5;

impl Cluster {
    /// [`Ipam::apply_config`] on `ipam` (opened over this cluster's store,
    /// before [`Cluster::start`]) that survives other nodes storing the
    /// same config at the same time. Blocking.
    pub fn apply_config(
        &self,
        ipam: &Ipam,
        subnets: &[SubnetSpec],
        reservations: &[ReservationSpec],
    ) -> Result<(), ApplyError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match ipam.apply_config(subnets, reservations, SystemTime::now()) {
                Err(IpamError::Conflict(why)) if tries < TRIES => why,
                res => return Ok(res?),
            };
            tracing::info!(%why, "another node stored the config first; reading what it stored");
            self.reread()?;
            ipam.reload()?;
            if let Some(what) = ipam.config_differs(subnets, reservations) {
                return Err(ApplyError::Differs(what));
            }
        }
    }
}
