//! The gateway's errors: why it could not start ([`GatewayError`]), and
//! the JSON shape of every refusal it answers:
//! `{"error": {"code": "...", "message": "..."}}`. 429 carries
//! `Retry-After`; 503s name the limit that tripped.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::GwBody;
use super::refusal::Refusal;

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen address is unavailable (in use, privileged, not local).
    #[error("binding {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    /// The TLS certificate or key cannot be loaded.
    #[error("tls {path}: {reason}")]
    Tls { path: String, reason: String },
    /// An upstream URI in `[[route]]` cannot be used.
    #[error("route {route}: {reason}")]
    Route { route: String, reason: String },
}

/// A JSON error response.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<GwBody> {
    with_body(status, json_body(code, message))
}

/// The body of a [`json_error`].
fn json_body(code: &str, message: &str) -> Bytes {
    let mut body = Vec::with_capacity(40 + code.len() + message.len());
    body.extend_from_slice(b"{\"error\":{\"code\":");
    json_str(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    json_str(&mut body, message);
    body.extend_from_slice(b"}}");
    Bytes::from(body)
}

/// The body of route `route`'s 503 `pending_cap`, built once per route: a
/// burst over the cap then costs no formatting, only a reference count.
pub(crate) fn pending_cap_body(route: &str) -> Bytes {
    let mut message = String::with_capacity(48 + route.len());
    message.push_str("route '");
    message.push_str(route);
    message.push_str("' has its maximum of requests in flight");
    json_body("pending_cap", &message)
}

/// `s` as a JSON string literal (quoted, escaped).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// The body of a [`json_error`] whose code and message are literals without
/// quotes or backslashes, built at compile time: a burst of refusals then
/// costs no formatting (the `shapes` test checks each against `json_error`).
macro_rules! fixed_body {
    ($code:literal, $message:literal) => {
        concat!(
            "{\"error\":{\"code\":\"",
            $code,
            "\",\"message\":\"",
            $message,
            "\"}}"
        )
    };
}

/// A [`json_error`] with a body from [`fixed_body!`].
fn fixed(status: StatusCode, body: &'static str) -> Response<GwBody> {
    with_body(status, Bytes::from_static(body.as_bytes()))
}

fn with_body(status: StatusCode, body: Bytes) -> Response<GwBody> {
    let mut resp = Response::new(GwBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

const ISOLATED: &str = fixed_body!("isolated", "this client is isolated by the operator");
const OVERLOAD: &str = fixed_body!("overload", "memory governor is shedding load; retry later");
const BODY_BUDGET: &str = fixed_body!("body_budget", "request body budget exhausted; retry later");
const TIMEOUT: &str = fixed_body!("timeout", "no answer within the request timeout");
const UPSTREAM: &str = fixed_body!("upstream", "the upstream failed");
const BAD_BODY: &str = fixed_body!("bad_body", "the request body could not be read");
const STREAM_CAP: &str = fixed_body!(
    "stream_cap",
    "every event-stream slot is taken; retry later"
);

/// The answer to a refusal.
pub(crate) fn refusal(r: &Refusal) -> Response<GwBody> {
    use StatusCode as S;
    match r {
        Refusal::Isolated => fixed(S::FORBIDDEN, ISOLATED),
        Refusal::Overload => fixed(S::SERVICE_UNAVAILABLE, OVERLOAD),
        Refusal::RateLimited { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = json_error(
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("over the per-client quota; retry in {secs} s"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
        Refusal::PendingCap { body } => with_body(S::SERVICE_UNAVAILABLE, body.clone()),
        Refusal::BodyBudget => fixed(S::SERVICE_UNAVAILABLE, BODY_BUDGET),
        Refusal::TooLarge { max } => json_error(
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request body over {max} bytes"),
        ),
        Refusal::Timeout => fixed(S::GATEWAY_TIMEOUT, TIMEOUT),
        Refusal::Upstream => fixed(S::BAD_GATEWAY, UPSTREAM),
        Refusal::BadBody => fixed(S::BAD_REQUEST, BAD_BODY),
        Refusal::StreamCap => fixed(S::SERVICE_UNAVAILABLE, STREAM_CAP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn shapes() {
        let r = refusal(&Refusal::RateLimited {
            retry_after: std::time::Duration::from_millis(1200),
        });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        let r = refusal(&Refusal::PendingCap {
            body: pending_cap_body("up\"x"),
        });
        assert_eq!(r.status(), 503);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "pending_cap");
        assert_eq!(
            v["error"]["message"],
            "route 'up\"x' has its maximum of requests in flight"
        );
    }

    /// Each compile-time body is exactly what `json_error` would write.
    #[tokio::test]
    async fn fixed_bodies_match_json_error() {
        for (body, code) in [
            (ISOLATED, "isolated"),
            (OVERLOAD, "overload"),
            (BODY_BUDGET, "body_budget"),
            (TIMEOUT, "timeout"),
            (UPSTREAM, "upstream"),
            (BAD_BODY, "bad_body"),
            (STREAM_CAP, "stream_cap"),
        ] {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["code"], code);
            let message = v["error"]["message"].as_str().unwrap();
            let built = json_error(StatusCode::OK, code, message);
            let built = built.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(built, body.as_bytes(), "{code}");
        }
    }
}
