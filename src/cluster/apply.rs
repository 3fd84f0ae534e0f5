//! Storing the config's subnets, reservations and v6 subnets (and the
//! cluster's one DHCPv6 server DUID) when several nodes start together
//! against an empty cluster: all but one lose the compare, read what won,
//! and if it equals their own config (the usual case) have nothing left to
//! write; a different value is a config error.

use std::time::SystemTime;

use super::handle::Cluster;
use crate::ipam::{Ipam, IpamError, ReservationSpec, Subnet6Spec, SubnetSpec};

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
        subnets6: &[Subnet6Spec],
    ) -> Result<(), ApplyError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match store_config(ipam, subnets, reservations, subnets6) {
                Err(IpamError::Conflict(why)) if tries < TRIES => why,
                res => return Ok(res?),
            };
            tracing::info!(%why, "another node stored the config first; reading what it stored");
            self.reread()?;
            ipam.reload()?;
            let differs = ipam.config_differs(subnets, reservations);
            if let Some(what) = differs.or_else(|| ipam.config_differs6(subnets6)) {
                return Err(ApplyError::Differs(what));
            }
        }
    }
}

/// One try at storing the config. The server DUID is shared by every node:
/// a client's Renew names the DUID it got its binding from, and after that
/// node dies a survivor must recognise it as its own.
fn store_config(
    ipam: &Ipam,
    subnets: &[SubnetSpec],
    reservations: &[ReservationSpec],
    subnets6: &[Subnet6Spec],
) -> Result<(), IpamError> {
    ipam.apply_config(subnets, reservations, SystemTime::now())?;
    ipam.apply_config6(subnets6)?;
    if !subnets6.is_empty() {
        ipam.server_duid()?;
    }
    Ok(())
}
