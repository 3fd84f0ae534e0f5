//! Routing an internal API request: by path, then method (405 with
//! `Allow`), then the bearer token (admin endpoints and every IPAM write),
//! then to its handler. The gateway has already done admission and hands
//! [`handle`] the whole body. Every outcome is one complete response.

use std::net::IpAddr;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;

use super::context::{ApiContext, Req};
use super::error::ApiError;
use super::response::Resp;
use super::wire::{authorized, percent_decode};
use super::{admin, ipam, ops, status, ui};

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
    /// Served by the gateway's event hub before the router (a GET never
    /// gets here; another method gets its 405 here).
    EventStream,
    Ui,
    UiAsset(String),
    Status,
}

impl Route {
    /// `None` for an unknown path (or one with a bad escape).
    pub fn parse(path: &str) -> Option<Self> {
        let segs = path
            .strip_prefix('/')?
            .split('/')
            .map(|s| percent_decode(s, false))
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
            ["v1", "events", "stream"] => Self::EventStream,
            ["ui"] => Self::Ui,
            ["ui", name] => Self::UiAsset(own(name)),
            ["v1", "status"] => Self::Status,
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
            Self::Clients | Self::Isolations | Self::Isolation(_) | Self::Status => true,
            Self::Healthz
            | Self::Readyz
            | Self::Metrics
            | Self::OpenApi
            | Self::EventStream
            | Self::Ui
            | Self::UiAsset(_) => false,
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

async fn serve(ctx: &ApiContext, route: Route, req: &Req) -> Result<Resp, ApiError> {
    if !route.allows(&req.method) {
        return Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    if route.needs_token(&req.method) && !authorized(&req.headers, &ctx.admin_token) {
        return Err(ApiError::Unauthorized);
    }
    let m = &req.method;
    match route {
        Route::Healthz => ops::healthz(),
        Route::Readyz => ops::readyz(ctx),
        Route::Metrics => ops::metrics(ctx, authorized(&req.headers, &ctx.admin_token)),
        Route::OpenApi => ops::openapi(),
        Route::Subnets if m == Method::GET => ipam::list_subnets(ctx),
        Route::Subnets => ipam::create_subnet(ctx, req).await,
        Route::Subnet(id) if m == Method::GET => ipam::get_subnet(ctx, &id),
        Route::Subnet(id) => ipam::delete_subnet(ctx, &id).await,
        Route::SubnetUsage(id) => ipam::subnet_usage(ctx, &id),
        Route::Allocations(id) => ipam::allocate(ctx, &id, req).await,
        Route::Allocation(id, ip) => ipam::deallocate(ctx, &id, &ip).await,
        Route::Leases => ipam::list_leases(ctx, req).await,
        Route::Lease(ip) => ipam::get_lease(ctx, &ip).await,
        Route::Reservations if m == Method::GET => ipam::list_reservations(ctx, req),
        Route::Reservations if m == Method::POST => ipam::add_reservation(ctx, req).await,
        Route::Reservations => ipam::delete_reservation(ctx, req).await,
        Route::Clients => admin::clients(ctx, req),
        Route::Isolations if m == Method::GET => admin::isolations(ctx),
        Route::Isolations => admin::isolate(ctx, req).await,
        Route::Isolation(c) => admin::release(ctx, &c).await,
        // Only the gateway streams (see `gateway/events`); a server that
        // runs the router alone has no such endpoint.
        Route::EventStream => Err(ApiError::NotFound(events_path())),
        Route::Ui => ui::page(&req.headers),
        Route::UiAsset(name) => ui::asset(&name, &req.headers),
        Route::Status => status::status(ctx),
    }
}

fn events_path() -> String {
    "/v1/events/stream".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Route::Status.needs_token(&Method::GET));
        assert_eq!(Route::parse("/v1/status"), Some(Route::Status));
        assert!(!Route::Metrics.needs_token(&Method::GET));
        assert!(Route::Reservations.allows(&Method::DELETE));
        assert!(!Route::Leases.allows(&Method::POST));
    }
}
