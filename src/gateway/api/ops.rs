//! Operational endpoints: liveness, readiness, metrics, the API spec.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;

use super::context::ApiContext;
use super::error::ApiError;
use super::response::{response, Resp};
use super::wire::ok;
use crate::ipam::IpamError;

/// The OpenAPI 3.0 description of everything served here.
pub const OPENAPI: &str = include_str!("../../../assets/openapi.yaml");

/// 200 for as long as the process serves at all.
pub fn healthz() -> Result<Resp, ApiError> {
    ok(&serde_json::json!({"status": "ok"}))
}

/// 200 once every listener is bound and the store is open, else 503; 503
/// `degraded` with the reason while the store refuses writes, `cluster`
/// while this cluster node is fenced (it cannot write to etcd).
pub fn readyz(ctx: &ApiContext) -> Result<Resp, ApiError> {
    if !ctx.ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady);
    }
    if let Some(why) = ctx.ipam.fenced() {
        return Err(ApiError::Fenced(why));
    }
    if let Some(why) = ctx.ipam.degraded() {
        return Err(IpamError::Degraded(why).into());
    }
    ok(&serde_json::json!({"status": "ready"}))
}

/// Prometheus text exposition of the latest snapshot (never of live state).
/// Per-client series name client identities, which `/v1/clients` keeps
/// behind the token: only with the token, or when the config makes them public.
pub fn metrics(ctx: &ApiContext, authorized: bool) -> Result<Resp, ApiError> {
    let snap = ctx.snapshots.borrow().clone();
    let per_client = authorized || ctx.public_client_metrics.load(Ordering::Relaxed);
    let text = crate::stats::prometheus::render(&snap, per_client);
    Ok(response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    ))
}

pub fn openapi() -> Result<Resp, ApiError> {
    Ok(response(
        StatusCode::OK,
        "application/yaml",
        Bytes::from_static(OPENAPI.as_bytes()),
    ))
}
