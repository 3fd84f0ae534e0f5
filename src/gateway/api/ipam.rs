//! The IPAM API: subnets, allocations, leases, reservations. Handlers
//! validate everything before the one IPAM call that writes, so a refused
//! request leaves the store as it was.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::context::{ApiContext, Req};
use super::error::ApiError;
use super::lease6::{binding6_on, parse_net6};
use super::response::Resp;
use super::subnet6;
use super::wire::{created, json_body, no_content, ok, Query};
use crate::client::ClientKey;
use crate::ipam::{
    dns_name, Ipam, IpamError, LeaseFilter, LeaseState, PoolUsage, ReservationSpec, Subnet6Spec,
    SubnetSpec, Usage6,
};

/// Leases returned when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most leases one request may ask for (bounds the response size).
pub const MAX_LIMIT: usize = 10_000;

#[derive(Serialize)]
struct SubnetView<'a> {
    /// 4 (a `[[subnet]]`) or 6 (a `[[subnet6]]`).
    family: u8,
    #[serde(flatten)]
    spec: &'a SubnetSpec,
    usage: UsageView,
}

/// A DHCPv6 subnet: its spec and use. `usage.size` counts addresses and
/// delegated prefixes together (saturating); `prefixes` the latter.
#[derive(Serialize)]
struct Subnet6View<'a> {
    family: u8,
    #[serde(flatten)]
    spec: &'a Subnet6Spec,
    usage: UsageView,
    prefixes: u64,
}

impl<'a> Subnet6View<'a> {
    fn new(spec: &'a Subnet6Spec, u: Option<&Usage6>) -> Self {
        let u = u.cloned().unwrap_or(Usage6 {
            subnet: spec.id.clone(),
            addresses: 0,
            prefixes: 0,
            bound: 0,
            declined: 0,
            offered: 0,
            delegated: 0,
        });
        let size = u.addresses.saturating_add(u.prefixes);
        let used = u.bound + u.declined + u.offered;
        Self {
            family: 6,
            spec,
            usage: UsageView {
                size,
                used,
                free: size.saturating_sub(used),
                by_state: StateCounts {
                    offered: u.offered,
                    bound: u.bound,
                    declined: u.declined,
                    ..StateCounts::default()
                },
            },
            prefixes: u.prefixes,
        }
    }
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

/// A v4 or v6 subnet's id, or 404.
fn any_subnet_or_404(ctx: &ApiContext, id: &str) -> Result<(), ApiError> {
    if subnet6(ctx, id).is_some() {
        return Ok(());
    }
    subnet_or_404(ctx, id).map(drop)
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
            family: 4,
            spec: s,
            usage: usage
                .iter()
                .find(|u| u.subnet == s.id)
                .map(UsageView::from)
                .unwrap_or_default(),
        })
        .collect();
    let usage6 = ctx.ipam.usage6();
    let specs6 = ctx.ipam.subnets6();
    let views6: Vec<Subnet6View> = specs6
        .iter()
        .map(|s| Subnet6View::new(s, usage6.iter().find(|u| u.subnet == s.id)))
        .collect();
    let mut all = serde_json::to_value(views).map_err(json_error)?;
    if let (serde_json::Value::Array(all), serde_json::Value::Array(v6)) =
        (&mut all, serde_json::to_value(views6).map_err(json_error)?)
    {
        all.extend(v6);
    }
    ok(&serde_json::json!({ "subnets": all }))
}

fn json_error(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("encoding: {e}"))
}

pub fn get_subnet(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    if let Some(spec) = subnet6(ctx, id) {
        return ok(&Subnet6View::new(&spec, usage6_of(ctx, id).as_ref()));
    }
    let spec = subnet_or_404(ctx, id)?;
    ok(&SubnetView {
        family: 4,
        spec: &spec,
        usage: usage_of(ctx, id),
    })
}

pub fn subnet_usage(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    if let Some(spec) = subnet6(ctx, id) {
        return ok(&Subnet6View::new(&spec, usage6_of(ctx, id).as_ref()).usage);
    }
    subnet_or_404(ctx, id)?;
    ok(&usage_of(ctx, id))
}

fn subnet6(ctx: &ApiContext, id: &str) -> Option<std::sync::Arc<Subnet6Spec>> {
    ctx.ipam.subnets6().into_iter().find(|s| s.id == id)
}

fn usage6_of(ctx: &ApiContext, id: &str) -> Option<Usage6> {
    ctx.ipam.usage6().into_iter().find(|u| u.subnet == id)
}

/// A v4 subnet, or a v6 one (`"family": 6`, or a `prefix` without `cidr`).
pub async fn create_subnet(ctx: &ApiContext, req: &Req) -> Result<Resp, ApiError> {
    if subnet6::is_v6(&req.body)? {
        let spec: Subnet6Spec = json_body(&req.body)?;
        let id = spec.id.clone();
        ctx.ipam.add_subnet6(spec).await?;
        let spec = subnet6(ctx, &id).ok_or_else(|| IpamError::UnknownSubnet(id.clone()))?;
        return created(&Subnet6View::new(&spec, usage6_of(ctx, &id).as_ref()));
    }
    let spec: SubnetSpec = json_body(&req.body)?;
    let id = spec.id.clone();
    ctx.ipam.add_subnet(spec).await?;
    let spec = subnet_or_404(ctx, &id)?;
    created(&SubnetView {
        family: 4,
        spec: &spec,
        usage: usage_of(ctx, &id),
    })
}

pub async fn delete_subnet(ctx: &ApiContext, id: &str) -> Result<Resp, ApiError> {
    match subnet6(ctx, id) {
        Some(_) => ctx.ipam.delete_subnet6(id).await?,
        None => ctx.ipam.delete_subnet(id).await?,
    }
    no_content()
}

#[derive(Deserialize)]
struct AllocateBody {
    client: ClientKey,
}

/// 201 with a new lease; 200 with the same lease when the client already
/// holds a bound one in the subnet (idempotent per client). In a v6
/// subnet, the client's IA_NA 0 (see `subnet6.rs`).
pub async fn allocate(ctx: &ApiContext, id: &str, req: &Req) -> Result<Resp, ApiError> {
    let body: AllocateBody = json_body(&req.body)?;
    if subnet6(ctx, id).is_some() {
        return subnet6::allocate(ctx, id, body.client).await;
    }
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
    if subnet6(ctx, id).is_some() {
        return subnet6::deallocate(ctx, id, ip).await;
    }
    let ip = parse_ip(ip).map_err(|e| subnet6::other_family(ip).unwrap_or(e))?;
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
        any_subnet_or_404(ctx, id)?;
    }
    let state = q.get("state").map(parse_state).transpose()?;
    let client = q.parse_opt::<ClientKey>("client")?;
    let limit = limit(&q, DEFAULT_LIMIT)?;
    let cursor = q.get("cursor").map(parse_cursor).transpose()?;
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
        lease_page(&ipam, &filter, cursor, limit)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("lease listing failed: {e}")))??;
    ok(&page)
}

/// Where a lease listing resumes: after a v4 address (v4 leases come
/// first), or after a v6 binding's stored key (`6:` and 34 hex digits).
#[derive(Debug, Clone, Copy)]
enum Cursor {
    V4(Ipv4Addr),
    V6([u8; 17]),
}

fn parse_cursor(c: &str) -> Result<Cursor, ApiError> {
    let v6 = || {
        let mut key = [0u8; 17];
        hex::decode_to_slice(c.strip_prefix("6:")?, &mut key).ok()?;
        Some(Cursor::V6(key))
    };
    c.parse::<Ipv4Addr>()
        .ok()
        .map(Cursor::V4)
        .or_else(v6)
        .ok_or_else(|| {
            ApiError::Invalid(format!("cursor: '{c}' is not a next_cursor from this API"))
        })
}

fn cursor6(key: [u8; 17]) -> String {
    format!("6:{}", hex::encode(key))
}

/// One page: v4 leases in address order, then v6 bindings in address
/// order (`kind` "na" or "pd"), each part bounded as [`Ipam::lease_page`].
/// Blocking.
fn lease_page(
    ipam: &Ipam,
    filter: &LeaseFilter,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let mut leases = Vec::new();
    let after6 = match cursor {
        Some(Cursor::V6(n)) => Some(n),
        v4 => {
            let after = match v4 {
                Some(Cursor::V4(ip)) => Some(ip),
                _ => None,
            };
            let page = ipam.lease_page(filter, after, limit, SCAN_BUDGET);
            for l in &page.leases {
                leases.push(serde_json::to_value(l).map_err(json_error)?);
            }
            if let Some(next) = page.next {
                return Ok(listing(leases, Some(next.to_string())));
            }
            if leases.len() >= limit {
                // Full on v4 alone: v6 bindings (if any) follow from the start.
                let more = !ipam.subnets6().is_empty();
                return Ok(listing(leases, more.then(|| cursor6([0; 17]))));
            }
            None
        }
    };
    let page = ipam.bindings6(filter, after6, limit - leases.len(), SCAN_BUDGET);
    for b in &page.bindings {
        leases.push(serde_json::to_value(b).map_err(json_error)?);
    }
    Ok(listing(leases, page.next.map(cursor6)))
}

fn listing(leases: Vec<serde_json::Value>, next: Option<String>) -> serde_json::Value {
    serde_json::json!({
        "leases": leases,
        "truncated": next.is_some(),
        "next_cursor": next,
    })
}

/// The lease on a v4 address, or the v6 binding on an address or
/// delegated prefix, as `/v1/leases` lists it.
pub async fn get_lease(ctx: &ApiContext, ip: &str) -> Result<Resp, ApiError> {
    if let Ok(v4) = ip.parse::<Ipv4Addr>() {
        let lease = ctx
            .ipam
            .lookup(v4)
            .ok_or_else(|| ApiError::NoLeaseOn(v4.to_string()))?;
        return ok(&lease);
    }
    let net = parse_net6(ip)?;
    let binding = binding6_on(&ctx.ipam, net)
        .await?
        .ok_or_else(|| ApiError::NoLeaseOn(Ipam::key6_text(net)))?;
    ok(&binding)
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
