//! The IPAM API: subnets, allocations, leases, reservations. Handlers
//! validate everything before the one IPAM call that writes, so a refused
//! request leaves the store as it was.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::context::{ApiContext, Req};
use super::error::ApiError;
use super::response::Resp;
use super::wire::{created, json_body, no_content, ok, Query};
use crate::client::ClientKey;
use crate::ipam::{
    dns_name, IpamError, LeaseFilter, LeaseState, PoolUsage, ReservationSpec, SubnetSpec,
};

/// Leases returned when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most leases one request may ask for (bounds the response size).
pub const MAX_LIMIT: usize = 10_000;

#[derive(Serialize)]
struct SubnetView<'a> {
    #[serde(flatten)]
    spec: &'a SubnetSpec,
    usage: UsageView,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct UsageView {
    size: u64,
    used: u64,
    free: u64,
    by_state: StateCounts,
}

#[derive(Debug, Default, Serialize)]
struct StateCounts {
    offered: u64,
    bound: u64,
    released: u64,
    expired: u64,
    declined: u64,
}

impl From<&PoolUsage> for UsageView {
    fn from(u: &PoolUsage) -> Self {
        let mut c = StateCounts::default();
        for (state, n) in &u.by_state {
            *match state {
                LeaseState::Offered => &mut c.offered,
                LeaseState::Bound => &mut c.bound,
                LeaseState::Released => &mut c.released,
                LeaseState::Expired => &mut c.expired,
                LeaseState::Declined => &mut c.declined,
            } += n;
        }
        Self {
            size: u.size,
            used: u.used,
            free: u.size.saturating_sub(u.used),
            by_state: c,
        }
    }
}

fn usage_of(ctx: &ApiContext, id: &str) -> UsageView {
    ctx.ipam
        .utilisation()
        .iter()
        .find(|u| u.subnet == id)
        .map(UsageView::from)
        .unwrap_or_default()
}

fn subnet_or_404(ctx: &ApiContext, id: &str) -> Result<std::sync::Arc<SubnetSpec>, ApiError> {
    ctx.ipam
        .subnet(id)
        .ok_or_else(|| IpamError::UnknownSubnet(id.to_owned()).into())
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, ApiError> {
    s.parse()
        .map_err(|_| ApiError::Invalid(format!("ip: '{s}' is not an ipv4 address")))
}

pub fn list_subnets(ctx: &ApiContext) -> Result<Resp, ApiError> {
    let usage = ctx.ipam.utilisation();
    let specs = ctx.ipam.subnets();
    let views: Vec<SubnetView> = specs
        .iter()
        .map(|s| SubnetView {
            spec: s,
            usage: usage
                .iter()
                .find(|u| u.subnet == s.id)
                .map(UsageView::from)
                .unwrap_or_default(),
        })
        .collect();
    ok(&serde_json::json!({ "subnets": views }))
}

pub fn get_subnet(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    let spec = subnet_or_404(ctx, id)?;
    ok(&SubnetView {
        spec: &spec,
        usage: usage_of(ctx, id),
    })
}

pub fn subnet_usage(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    subnet_or_404(ctx, id)?;
    ok(&usage_of(ctx, id))
}

pub async fn create_subnet(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let spec: SubnetSpec = json_body(&req.body)?;
    let id = spec.id.clone();
    ctx.ipam.add_subnet(spec).await?;
    let spec = subnet_or_404(ctx, &id)?;
    created(&SubnetView {
        spec: &spec,
        usage: usage_of(ctx, &id),
    })
}

pub async fn delete_subnet(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    ctx.ipam.delete_subnet(id).await?;
    no_content()
}

#[derive(Deserialize)]
struct AllocateBody {
    client: ClientKey,
}

/// 201 with a new lease; 200 with the same lease when the client already
/// holds a bound one in the subnet (idempotent per client).
pub async fn allocate(ctx: &ApiContext, id: &str, req: &Req) -> Result<Resp, ApiError> {
    let body: AllocateBody = json_body(&req.body)?;
    let now = SystemTime::now();
    let held = ctx
        .ipam
        .lease_of(&body.client)
        .filter(|l| l.subnet == id && l.state == LeaseState::Bound && l.expires_at > now);
    let lease = ctx.ipam.allocate(id, &body.client, now).await?;
    if held.is_some_and(|h| h.ip == lease.ip) {
        ok(&lease)
    } else {
        created(&lease)
    }
}

pub async fn deallocate(ctx: &ApiContext, id: &str, ip: &str) -> Result<Resp, ApiError> {
    let ip = parse_ip(ip)?;
    subnet_or_404(ctx, id)?;
    let lease = ctx
        .ipam
        .lookup(ip)
        .filter(|l| l.subnet == id && matches!(l.state, LeaseState::Bound | LeaseState::Offered))
        .ok_or_else(|| ApiError::NoLeaseOn(ip.to_string()))?;
    ctx.ipam
        .release(&lease.client, ip, SystemTime::now())
        .await?;
    no_content()
}

fn parse_state(s: &str) -> Result<LeaseState, ApiError> {
    LeaseState::ALL
        .into_iter()
        .find(|x| x.as_str() == s)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "state: '{s}' is not one of offered, bound, released, expired, declined"
            ))
        })
}

/// `?limit=`: 1 to [`MAX_LIMIT`], `default` when absent.
pub fn limit(q: &Query, default: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(format!("limit: '{v}' must be between 1 and {MAX_LIMIT}"))
            }),
    }
}

/// Stored lease records one listing page may read: bounds the work of a
/// request whose filter matches little (it then answers a short page and a
/// `next_cursor`).
pub const SCAN_BUDGET: usize = MAX_LIMIT;

/// Lease pages read at once; each holds a blocking thread while it reads.
static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// One page of leases in address order; `next_cursor` resumes after it.
/// The store is read on a blocking thread, never on the gateway's.
pub async fn list_leases(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let q = Query::parse(req.query.as_deref())?;
    let subnet = q.get("subnet").map(str::to_owned);
    if let Some(id) = &subnet {
        subnet_or_404(ctx, id)?;
    }
    let state = q.get("state").map(parse_state).transpose()?;
    let client = q.parse_opt::<ClientKey>("client")?;
    let limit = limit(&q, DEFAULT_LIMIT)?;
    let cursor = q
        .get("cursor")
        .map(|c| {
            c.parse::<Ipv4Addr>().map_err(|_| {
                ApiError::Invalid(format!("cursor: '{c}' is not a next_cursor from this API"))
            })
        })
        .transpose()?;
    let filter = LeaseFilter {
        subnet,
        state,
        client,
        limit: None,
    };
    let permit = LISTINGS
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("lease listing: {e}")))?;
    let ipam = ctx.ipam.clone();
    let page = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        ipam.lease_page(&filter, cursor, limit, SCAN_BUDGET)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("lease listing failed: {e}")))?;
    ok(&serde_json::json!({
        "leases": page.leases,
        "truncated": page.next.is_some(),
        "next_cursor": page.next.map(|ip| ip.to_string()),
    }))
}

pub fn get_lease(ctx: &ApiContext, ip: &str) -> Result<Resp, ApiError> {
    let ip = parse_ip(ip)?;
    let lease = ctx
        .ipam
        .lookup(ip)
        .ok_or_else(|| ApiError::NoLeaseOn(ip.to_string()))?;
    ok(&lease)
}

pub fn list_reservations(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let q = Query::parse(req.query.as_deref())?;
    let subnet = q.get("subnet");
    if let Some(id) = subnet {
        subnet_or_404(ctx, id)?;
    }
    let mut all: Vec<ReservationSpec> = ctx
        .ipam
        .reservations()
        .into_iter()
        .filter(|r| subnet.is_none_or(|s| r.subnet == s))
        .collect();
    all.sort_by(|a, b| (&a.subnet, a.ip).cmp(&(&b.subnet, b.ip)));
    ok(&serde_json::json!({ "reservations": all }))
}

/// 201 for a new or moved reservation, 200 when the same one existed.
pub async fn add_reservation(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let r: ReservationSpec = json_body(&req.body)?;
    if let Some(h) = r.hostname.as_deref().filter(|h| !dns_name(h)) {
        return Err(ApiError::Invalid(format!(
            "hostname: '{h}' must be 1 to 253 letters, digits, '.' or '-'"
        )));
    }
    let existed = ctx.ipam.reservations().contains(&r);
    ctx.ipam.add_reservation(r.clone()).await?;
    if existed {
        ok(&r)
    } else {
        created(&r)
    }
}

#[derive(Deserialize)]
struct ReservationKey {
    subnet: String,
    client: ClientKey,
}

/// The reservation to delete: from `?subnet=&client=`, else a JSON body.
pub async fn delete_reservation(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    let q = Query::parse(req.query.as_deref())?;
    let key = match (q.get("subnet"), q.get("client")) {
        (None, None) if !req.body.is_empty() => json_body::<ReservationKey>(&req.body)?,
        (Some(subnet), Some(_)) => ReservationKey {
            subnet: subnet.to_owned(),
            client: q
                .parse_opt("client")?
                .ok_or_else(|| ApiError::Invalid("client: required".into()))?,
        },
        _ => {
            return Err(ApiError::Invalid(
                "subnet and client are required (query or json body)".into(),
            ))
        }
    };
    subnet_or_404(ctx, &key.subnet)?;
    ctx.ipam
        .delete_reservation(&key.subnet, &key.client)
        .await?;
    no_content()
}
