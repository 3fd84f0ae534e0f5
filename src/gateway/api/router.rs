//! The gateway's internal services: the IPAM API, the admin API, and the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.yaml`). `assets/openapi.yaml` is the contract.
//!
//! The gateway core has already done admission (isolation, quotas, body
//! budget, max body) and hands [`handle`] the whole body. Here a request is
//! routed by path, then method (405 with `Allow`), then authorised (admin
//! endpoints and every IPAM write need the bearer token; IPAM reads are
//! open), then validated and served. Every outcome is one complete
//! response; a failed request changes nothing (each IPAM write is one
//! transaction, and validation runs before it).

mod admin;
mod error;
mod ipam;
mod ops;
mod response;
mod wire;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;

pub use error::ApiError;
pub(crate) use wire::authorized;
pub use wire::constant_time_eq;

use crate::ipam::Ipam;
use crate::isolation::IsolationSet;
use crate::stats::{Snapshot, Stats};

/// The OpenAPI 3.0 description of everything served here.
pub const OPENAPI: &str = include_str!("../../../assets/openapi.yaml");

/// What the API handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub ipam: Arc<Ipam>,
    pub isolation: Arc<IsolationSet>,
    pub snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pub admin_token: Arc<str>,
    pub ready: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// `[gateway] public_client_metrics`: per-client series on `/metrics`
    /// without the token. Swapped by SIGHUP.
    pub public_client_metrics: Arc<AtomicBool>,
}

impl ApiContext {
    /// The context for `shared`'s process; `ready` starts false and the
    /// composition root sets it once every listener is bound.
    pub fn new(
        shared: &crate::shared::Shared,
        ipam: Arc<Ipam>,
        snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
        admin_token: Arc<str>,
    ) -> Self {
        Self {
            ipam,
            isolation: shared.isolation.clone(),
            snapshots,
            admin_token,
            ready: Arc::new(AtomicBool::new(false)),
            stats: shared.stats.clone(),
            public_client_metrics: Arc::new(AtomicBool::new(
                shared.config.gateway.public_client_metrics,
            )),
        }
    }
}

/// A request as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub headers: http::HeaderMap,
    pub query: Option<String>,
    pub body: Bytes,
    pub client: IpAddr,
}

/// Every path the API serves; segments are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Subnets,
    Subnet(String),
    SubnetUsage(String),
    Allocations(String),
    Allocation(String, String),
    Leases,
    Lease(String),
    Reservations,
    Clients,
    Isolations,
    Isolation(String),
}

impl Route {
    /// `None` for an unknown path (or one with a bad escape).
    pub fn parse(path: &str) -> Option<Self> {
        let segs = path
            .strip_prefix('/')?
            .split('/')
            .map(|s| wire::percent_decode(s, false))
            .collect::<Option<Vec<String>>>()?;
        if segs.iter().any(String::is_empty) {
            return None;
        }
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let own = |x: &str| x.to_owned();
        Some(match s.as_slice() {
            ["healthz"] => Self::Healthz,
            ["readyz"] => Self::Readyz,
            ["metrics"] => Self::Metrics,
            ["openapi.yaml"] => Self::OpenApi,
            ["v1", "subnets"] => Self::Subnets,
            ["v1", "subnets", id] => Self::Subnet(own(id)),
            ["v1", "subnets", id, "usage"] => Self::SubnetUsage(own(id)),
            ["v1", "subnets", id, "allocations"] => Self::Allocations(own(id)),
            ["v1", "subnets", id, "allocations", ip] => Self::Allocation(own(id), own(ip)),
            ["v1", "leases"] => Self::Leases,
            ["v1", "leases", ip] => Self::Lease(own(ip)),
            ["v1", "reservations"] => Self::Reservations,
            ["v1", "clients"] => Self::Clients,
            ["v1", "isolations"] => Self::Isolations,
            ["v1", "isolations", c] => Self::Isolation(own(c)),
            _ => return None,
        })
    }

    /// The methods this path answers, as the `Allow` header lists them.
    pub fn allow(&self) -> &'static str {
        match self {
            Self::Subnets | Self::Isolations => "GET, POST",
            Self::Subnet(_) => "GET, DELETE",
            Self::Allocations(_) => "POST",
            Self::Allocation(..) | Self::Isolation(_) => "DELETE",
            Self::Reservations => "GET, POST, DELETE",
            _ => "GET",
        }
    }

    fn allows(&self, m: &Method) -> bool {
        self.allow().split(", ").any(|a| a == m.as_str())
    }

    /// Admin endpoints always need the token; IPAM endpoints for writes.
    fn needs_token(&self, m: &Method) -> bool {
        match self {
            Self::Clients | Self::Isolations | Self::Isolation(_) => true,
            Self::Healthz | Self::Readyz | Self::Metrics | Self::OpenApi => false,
            _ => *m != Method::GET,
        }
    }
}

/// Serves one API request. Never panics on input; always answers in full.
/// Cancel-safe: an IPAM write dropped mid-way either happened as a whole or
/// not at all (the IPAM's own guarantee), and nothing else here awaits.
pub async fn handle(
    ctx: &ApiContext,
    req: Request<Bytes>,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Some(route) = Route::parse(parts.uri.path()) else {
        return ApiError::NotFound(parts.uri.path().to_owned()).into_response();
    };
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        body,
        client,
    };
    match serve(ctx, route, &req).await {
        Ok(res) => res,
        Err(e) => {
            if e.status_code().0.is_server_error() {
                tracing::warn!(client = %req.client, error = %e, "api request failed");
            }
            e.into_response()
        }
    }
}

async fn serve(ctx: &ApiContext, route: Route, req: &Req) -> Result<response::Resp, ApiError> {
    if !route.allows(&req.method) {
        return Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    if route.needs_token(&req.method) && !wire::authorized(&req.headers, &ctx.admin_token) {
        return Err(ApiError::Unauthorized);
    }
    let m = &req.method;
    match route {
        Route::Healthz => ops::healthz(),
        Route::Readyz => ops::readyz(ctx),
        Route::Metrics => ops::metrics(ctx, wire::authorized(&req.headers, &ctx.admin_token)),
        Route::OpenApi => ops::openapi(),
        Route::Subnets if m == Method::GET => ipam::list_subnets(ctx),
        Route::Subnets => ipam::create_subnet(ctx, req).await,
        Route::Subnet(id) if m == Method::GET => ipam::get_subnet(ctx, &id),
        Route::Subnet(id) => ipam::delete_subnet(ctx, &id).await,
        Route::SubnetUsage(id) => ipam::subnet_usage(ctx, &id),
        Route::Allocations(id) => ipam::allocate(ctx, &id, req).await,
        Route::Allocation(id, ip) => ipam::deallocate(ctx, &id, &ip).await,
        Route::Leases => ipam::list_leases(ctx, req).await,
        Route::Lease(ip) => ipam::get_lease(ctx, &ip),
        Route::Reservations if m == Method::GET => ipam::list_reservations(ctx, req),
        Route::Reservations if m == Method::POST => ipam::add_reservation(ctx, req).await,
        Route::Reservations => ipam::delete_reservation(ctx, req).await,
        Route::Clients => admin::clients(ctx, req),
        Route::Isolations if m == Method::GET => admin::isolations(ctx),
        Route::Isolations => admin::isolate(ctx, req).await,
        Route::Isolation(c) => admin::release(ctx, &c).await,
    }
}

#[cfg(test)]
mod tests {
    use crate::gateway::api::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/healthz"), Some(Route::Healthz));
        assert_eq!(
            Route::parse("/v1/isolations/mac%3A02:00:00:00:00:01"),
            Some(Route::Isolation("mac:02:00:00:00:00:01".into()))
        );
        assert_eq!(
            Route::parse("/v1/subnets/lab/allocations/10.0.0.5"),
            Some(Route::Allocation("lab".into(), "10.0.0.5".into()))
        );
        for bad in [
            "",
            "/",
            "/v1",
            "/v1/subnets/",
            "//healthz",
            "/v1/x",
            "/v1/leases/%zz",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn auth_policy() {
        let r = Route::Subnets;
        assert!(!r.needs_token(&Method::GET));
        assert!(r.needs_token(&Method::POST));
        assert!(Route::Clients.needs_token(&Method::GET));
        assert!(!Route::Metrics.needs_token(&Method::GET));
        assert!(Route::Reservations.allows(&Method::DELETE));
        assert!(!Route::Leases.allows(&Method::POST));
    }
}
