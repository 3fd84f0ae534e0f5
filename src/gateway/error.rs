//! The JSON error shape every gateway answer uses:
//! `{"error": {"code": "...", "message": "..."}}`. 429 carries
//! `Retry-After`; 503s name the limit that tripped.

use http::{header, HeaderValue, Response, StatusCode};

use super::admission::Refusal;
use super::body::GwBody;

/// A JSON error response.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<GwBody> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut resp = Response::new(GwBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer to a refusal.
pub(crate) fn refusal(r: &Refusal) -> Response<GwBody> {
    use StatusCode as S;
    match r {
        Refusal::Isolated => json_error(
            S::FORBIDDEN,
            "isolated",
            "this client is isolated by the operator",
        ),
        Refusal::Overload => json_error(
            S::SERVICE_UNAVAILABLE,
            "overload",
            "memory governor is shedding load; retry later",
        ),
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
        Refusal::PendingCap { route } => json_error(
            S::SERVICE_UNAVAILABLE,
            "pending_cap",
            &format!("route '{route}' has its maximum of requests in flight"),
        ),
        Refusal::BodyBudget => json_error(
            S::SERVICE_UNAVAILABLE,
            "body_budget",
            "request body budget exhausted; retry later",
        ),
        Refusal::TooLarge { max } => json_error(
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request body over {max} bytes"),
        ),
        Refusal::Timeout => json_error(
            S::GATEWAY_TIMEOUT,
            "timeout",
            "no answer within the request timeout",
        ),
        Refusal::Upstream => json_error(S::BAD_GATEWAY, "upstream", "the upstream failed"),
        Refusal::BadBody => json_error(
            S::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        ),
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
        let r = refusal(&Refusal::PendingCap { route: "up".into() });
        assert_eq!(r.status(), 503);
    }
}
