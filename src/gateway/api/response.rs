//! Building a complete API response: status, content type, body.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

pub type Resp = Response<Full<Bytes>>;

/// A response with a fixed body and content type; cannot fail.
pub fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Serialises `value` as the JSON body. The values handlers answer with
/// have string keys only, so encoding cannot fail in practice; if it ever
/// did, the client gets a complete 500, never half a body.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    match serde_json::to_vec(value) {
        Ok(mut v) => {
            v.push(b'\n');
            response(status, "application/json", Bytes::from(v))
        }
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            Bytes::from(format!(
                "{{\"error\":{{\"code\":\"internal\",\"message\":\"response encoding failed: {}\"}}}}\n",
                e.to_string().replace(['"', '\\'], "'")
            )),
        ),
    }
}
