//! The v6 side of the subnet and allocation endpoints: a `[[subnet6]]` as
//! a JSON body, and an allocation as one IA_NA (IAID 0) of the client key,
//! bound as the DHCPv6 server binds one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::context::ApiContext;
use super::error::ApiError;
use super::lease6::{binding6_on, parse_net6};
use super::response::Resp;
use super::wire::{created, no_content, ok};
use crate::client::ClientKey;
use crate::ipam::{Ia6Key, Ia6Kind, Ia6Op, Ia6Result, Ipam, IpamError, LeaseState};

/// Whether a `POST /v1/subnets` body is a v6 subnet: `"family": 6`, or a
/// `prefix` and no `cidr`. A body that is no JSON object is left to the
/// v4 path, which says what is wrong with it.
pub(super) fn is_v6(body: &[u8]) -> Result<bool, ApiError> {
    #[derive(Deserialize)]
    struct Probe {
        family: Option<serde_json::Value>,
        prefix: Option<IgnoredAny>,
        cidr: Option<IgnoredAny>,
    }
    let Ok(p) = serde_json::from_slice::<Probe>(body) else {
        return Ok(false);
    };
    match p.family {
        None => Ok(p.prefix.is_some() && p.cidr.is_none()),
        Some(f) if f == 6 => Ok(true),
        Some(f) if f == 4 => Ok(false),
        Some(f) => Err(ApiError::Invalid(format!("family: '{f}' must be 4 or 6"))),
    }
}

/// An IPv6 address or prefix where a v4 subnet's address was expected:
/// well-formed, so not `invalid`, but no lease of that subnet is on it.
pub(super) fn other_family(ip: &str) -> Option<ApiError> {
    let v6 = ip.parse::<Ipv6Addr>().is_ok() || ip.parse::<ipnet::Ipv6Net>().is_ok();
    v6.then(|| ApiError::NoLeaseOn(ip.to_owned()))
}

/// The IA an API allocation in a v6 subnet is: the client's IA_NA 0.
fn api_ia(client: ClientKey) -> Ia6Key {
    Ia6Key {
        client,
        kind: Ia6Kind::Na,
        iaid: 0,
    }
}

/// 201 with a new binding; 200 with the same one when the client's IA
/// already held it (idempotent per client). Durable before either.
pub(super) async fn allocate(
    ctx: &ApiContext,
    id: &str,
    client: ClientKey,
) -> Result<Resp, ApiError> {
    let ia = api_ia(client);
    let now = SystemTime::now();
    let held = ctx.ipam.held6(id, &ia, now);
    let got = match ctx.ipam.ia6(id, &ia, Ia6Op::Commit, &[], None, now).await? {
        Ia6Result::Held(h) => h.first().map(|h| h.prefix),
        _ => None,
    };
    let net = got.ok_or_else(|| IpamError::PoolExhausted {
        subnet: id.to_owned(),
    })?;
    let binding = binding6_on(&ctx.ipam, net)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("{net}: bound but not found")))?;
    match held == Some(net) {
        true => ok(&binding),
        false => created(&binding),
    }
}

/// Releases the binding or offer on an address (or delegated prefix) of
/// subnet `id`, whichever client's IA holds it; 404 if none does.
pub(super) async fn deallocate(ctx: &ApiContext, id: &str, ip: &str) -> Result<Resp, ApiError> {
    if ip.parse::<Ipv4Addr>().is_ok() {
        return Err(ApiError::NoLeaseOn(ip.to_owned()));
    }
    let net = parse_net6(ip)?;
    let none = || ApiError::NoLeaseOn(Ipam::key6_text(net));
    let b = binding6_on(&ctx.ipam, net)
        .await?
        .filter(|b| b.subnet == id && matches!(b.state, LeaseState::Bound | LeaseState::Offered))
        .ok_or_else(none)?;
    let ia = Ia6Key {
        client: b.client,
        kind: b.kind,
        iaid: b.iaid,
    };
    let now = SystemTime::now();
    match ctx
        .ipam
        .ia6(id, &ia, Ia6Op::Release, &[net], None, now)
        .await?
    {
        Ia6Result::Held(_) => no_content(),
        _ => Err(none()),
    }
}
