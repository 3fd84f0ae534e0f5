//! `GET /v1/leases/{ip}` for DHCPv6: the binding on exactly one address
//! or delegated prefix, read from the IPAM as `/v1/leases` lists it.

use std::net::Ipv6Addr;
use std::sync::Arc;

use ipnet::Ipv6Net;

use super::error::ApiError;
use crate::ipam::{Binding6, Ipam, LeaseFilter};

/// An IPv6 address (a /128) or a prefix without host bits.
pub(super) fn parse_net6(s: &str) -> Result<Ipv6Net, ApiError> {
    let invalid = || {
        ApiError::Invalid(format!(
            "ip: '{s}' is not an ipv4 address, an ipv6 address or an ipv6 prefix"
        ))
    };
    let net = match s.parse::<Ipv6Addr>() {
        Ok(a) => Ipv6Net::from(a),
        Err(_) => s.parse::<Ipv6Net>().map_err(|_| invalid())?,
    };
    if net.trunc() != net {
        return Err(ApiError::Invalid(format!(
            "ip: '{s}' has host bits set (the prefix is {})",
            net.trunc()
        )));
    }
    Ok(net)
}

/// v6 lookups reading the store at once; each holds a blocking thread.
static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The v6 binding or live offer stored on exactly `net`: the first
/// binding at or after its key, read (one record at most) on a blocking
/// thread, never on the gateway's.
pub(super) async fn binding6_on(
    ipam: &Arc<Ipam>,
    net: Ipv6Net,
) -> Result<Option<Binding6>, ApiError> {
    let len = net.prefix_len();
    // `bindings6` resumes just past `after`: the same address, one bit shorter.
    let after = len.checked_sub(1).map(|l| {
        let mut key = [0u8; 17];
        key[..16].copy_from_slice(&net.addr().octets());
        key[16] = l;
        key
    });
    let text = Ipam::key6_text(net);
    let permit = LOOKUPS
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("lease lookup: {e}")))?;
    let ipam = ipam.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        ipam.bindings6(&LeaseFilter::default(), after, 1, 1)
            .bindings
            .into_iter()
            .find(|b| b.ip == text)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("lease lookup failed: {e}")))
}
