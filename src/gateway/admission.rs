//! The admission chain: every check a connection or a request meets, in
//! the order it runs, cheapest first. Adding a limit is adding one step
//! here; the mechanisms the steps consult live in [`super::limiters`] and
//! [`super::proxy`]. A refused request is a [`Refusal`] that the caller
//! counts (by reason, against the client) and answers; nothing queues.
//!
//! - connection, at accept: isolated IP → shedding → connection slots
//!   (overall, per IP);
//! - request: identity and isolation → shedding → the client IP's quota;
//!   then, to a route: pending slot → body size → body budget share; to the
//!   internal API: body size → body budget; to the event stream: a stream
//!   slot (no pending slot: see [`super::events`] for how streams count).

use std::net::IpAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::api;
use super::events::{EventHub, Reader};
use super::inner::Inner;
use super::limiters::{Admission, BodyPermit, ConnGuard};
use super::proxy::{Admitted, PendingGuard, Route, Routes};
use super::refusal::Refusal;
use crate::client::ClientKey;
use crate::stats::{DropReason, Stats};

/// The connection chain: a refused connection costs no TLS or HTTP work.
pub(crate) fn admit_connection(inner: &Inner, ip: IpAddr) -> Result<ConnGuard, DropReason> {
    let isolated = inner.isolation.is_isolated(&ClientKey::Ip(ip));
    not_isolated(isolated).map_err(|r| r.reason())?;
    not_shedding(&inner.stats).map_err(|r| r.reason())?;
    connection_slot(inner, ip)
}

/// The request chain's steps that need no route: isolation (decided by
/// [`identify`]), shedding, then the quota of the IP the request came from.
pub(crate) fn admit_request(inner: &Inner, isolated: bool, ip: IpAddr) -> Result<(), Refusal> {
    not_isolated(isolated)?;
    not_shedding(&inner.stats)?;
    quota(&inner.admission, ip)
}

/// Admits `req` to `route`: takes its pending slot and, for a body,
/// its share of the body budget. Both refusals are decided here,
/// synchronously and in arrival order (a refusal costs no future);
/// building and sending the upstream request is left to
/// [`Admitted::forward`], which the caller may run later.
pub(crate) fn admit_route(
    routes: &Routes,
    route: &Arc<Route>,
    admission: &Admission,
    req: Request<Incoming>,
) -> Result<Admitted, Refusal> {
    let pending = pending_slot(route)?;
    let permit = if http_body::Body::is_end_stream(req.body()) {
        None
    } else {
        let declared = http_body::Body::size_hint(req.body()).exact();
        body_size(declared, routes.max_body)?;
        // A streamed body holds at most what a stream can buffer here.
        let share = declared
            .unwrap_or(routes.stream_share)
            .min(routes.stream_share);
        Some(body_budget(admission, share)?)
    };
    Ok(Admitted::new(
        route.clone(),
        pending,
        permit,
        req,
        routes.max_body,
    ))
}

/// An internal API body: its declared length within `max`, then reserved
/// from the budget (collecting grows the permit as bytes arrive).
pub(crate) fn admit_api_body(
    admission: &Admission,
    max: u64,
    req: &Request<Incoming>,
) -> Result<BodyPermit, Refusal> {
    let declared = http_body::Body::size_hint(req.body()).exact().unwrap_or(0);
    body_size(Some(declared), max)?;
    body_budget(admission, declared)
}

/// A `/v1/events/stream` reader: one of the hub's stream slots.
pub(crate) fn admit_event_stream(
    hub: &Arc<EventHub>,
    key: ClientKey,
    ip: IpAddr,
    authorized: bool,
) -> Result<Arc<Reader>, Refusal> {
    stream_slot(hub, key, ip, authorized)
}

// The steps, in the order the chains above run them.

/// The client a request is attributed to, and whether it is isolated.
///
/// An isolated IP is refused (and its drops counted) as that IP, whatever
/// token it presents. A bearer token is only a claim: it becomes the client
/// once verified, i.e. when it is the admin token (compared in constant
/// time). Any other token leaves the request its IP's, unless the operator
/// isolated that token's `token:` key, which refuses it as that key (the
/// set is the operator's, so this creates no identity a client chose). The
/// quota is the IP's in every case ([`admit_request`]).
pub(crate) fn identify(inner: &Inner, ip: IpAddr, req: &Request<Incoming>) -> (ClientKey, bool) {
    let ip_key = ClientKey::Ip(ip);
    if inner.isolation.is_isolated(&ip_key) {
        return (ip_key, true);
    }
    let Some(auth) = req.headers().get(http::header::AUTHORIZATION) else {
        return (ip_key, false);
    };
    if api::authorized(req.headers(), &inner.api.admin_token) {
        let admin = inner.admin_key.clone();
        let isolated = inner.isolation.is_isolated(&admin);
        return (admin, isolated);
    }
    if inner.isolation.is_empty() {
        return (ip_key, false);
    }
    match ClientKey::bearer(auth.as_bytes()) {
        Some(token) if inner.isolation.is_isolated(&token) => (token, true),
        _ => (ip_key, false),
    }
}

/// The operator isolated the client (its IP, or the identity it proved).
fn not_isolated(isolated: bool) -> Result<(), Refusal> {
    match isolated {
        true => Err(Refusal::Isolated),
        false => Ok(()),
    }
}

/// The memory governor sheds new work.
fn not_shedding(stats: &Stats) -> Result<(), Refusal> {
    match stats.shedding() {
        true => Err(Refusal::Overload),
        false => Ok(()),
    }
}

/// A slot among `max_connections` and the IP's `max_connections_per_client`.
fn connection_slot(inner: &Inner, ip: IpAddr) -> Result<ConnGuard, DropReason> {
    inner
        .conns
        .try_acquire(ip, &inner.stats)
        .ok_or(DropReason::ConnLimit)
}

/// The client IP's request quota, whatever identity the request claims.
fn quota(admission: &Admission, ip: IpAddr) -> Result<(), Refusal> {
    admission.check_rate(ip)
}

/// The route's pending cap: a slot now, or a refusal now, never a queue.
fn pending_slot(route: &Route) -> Result<PendingGuard, Refusal> {
    route.try_pending()
}

/// The declared body length within `max_body`.
fn body_size(declared: Option<u64>, max: u64) -> Result<(), Refusal> {
    match declared {
        Some(n) if n > max => Err(Refusal::TooLarge { max }),
        _ => Ok(()),
    }
}

/// `n` bytes of the global request-body budget.
fn body_budget(admission: &Admission, n: u64) -> Result<BodyPermit, Refusal> {
    admission.reserve(n).ok_or(Refusal::BodyBudget)
}

/// One of `max_event_streams` slots (token-less readers: half of them).
fn stream_slot(
    hub: &Arc<EventHub>,
    key: ClientKey,
    ip: IpAddr,
    authorized: bool,
) -> Result<Arc<Reader>, Refusal> {
    hub.subscribe(key, ip, authorized)
}
