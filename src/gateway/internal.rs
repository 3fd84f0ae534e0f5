//! Stand-in for the internal API (branch `api` replaces it with
//! `gateway::api`, same signature): `/healthz`, `/readyz`, and a JSON 404
//! for everything else.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use crate::stats::Stats;

/// What the internal API handlers need.
#[derive(Clone)]
pub struct ApiContext {
    pub ready: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Answers one internal request (body already collected under the budget).
/// Cancel-safe: no side effects.
pub async fn handle(
    ctx: &ApiContext,
    req: Request<Bytes>,
    _client: IpAddr,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        "/readyz" if ctx.ready.load(Relaxed) => {
            json(StatusCode::OK, serde_json::json!({ "status": "ready" }))
        }
        "/readyz" => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": { "code": "not_ready", "message": "starting" } }),
        ),
        path => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": { "code": "not_found", "message": format!("no resource at '{path}' ({} body bytes)", req.body().len()) } }),
        ),
    }
}
