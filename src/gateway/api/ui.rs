//! `GET /ui`: the web status page, its script and its style sheet, compiled
//! in from `assets/ui/` (no build step, nothing fetched from elsewhere).
//! The page draws what `/v1/events/stream` sends. A strict
//! Content-Security-Policy allows only these files and that stream: no
//! inline script, no other origin, no framing.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, StatusCode};

use super::error::ApiError;
use super::response::{response, Resp};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One compiled-in file and its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        h.write(body.as_bytes());
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        Self {
            body,
            content_type,
            etag,
        }
    }
}

static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../../../assets/ui/index.html"),
        "text/html; charset=utf-8",
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../../../assets/ui/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../../../assets/ui/style.css"),
        "text/css; charset=utf-8",
    )
});

/// The page itself.
pub fn page(headers: &HeaderMap) -> Result<Resp, ApiError> {
    Ok(serve(&PAGE, headers))
}

/// `/ui/{name}`: the script or the style sheet.
pub fn asset(name: &str, headers: &HeaderMap) -> Result<Resp, ApiError> {
    match name {
        "app.js" => Ok(serve(&SCRIPT, headers)),
        "style.css" => Ok(serve(&STYLE, headers)),
        _ => Err(ApiError::NotFound(format!("/ui/{name}"))),
    }
}

/// 200 with the file, or 304 when the browser's copy is current. Browsers
/// revalidate every time (`no-cache`): a new binary may serve new files
/// under the same names, and a revalidation costs one small request.
fn serve(a: &Asset, headers: &HeaderMap) -> Resp {
    let fresh = headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == a.etag.as_bytes());
    let mut res = match fresh {
        true => response(StatusCode::NOT_MODIFIED, a.content_type, Bytes::new()),
        false => response(
            StatusCode::OK,
            a.content_type,
            Bytes::from_static(a.body.as_bytes()),
        ),
    };
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ETAG, a.etag.clone());
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_policy_and_revalidation() {
        let res = page(&HeaderMap::new()).unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self';"));
        let etag = h[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag);
        assert_eq!(
            asset("app.js", &again).unwrap().status(),
            200,
            "another file"
        );
        assert_eq!(page(&again).unwrap().status(), 304);
        let js = asset("app.js", &HeaderMap::new()).unwrap();
        assert_eq!(
            js.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        assert!(asset("../Cargo.toml", &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = PAGE.body;
        assert!(!html.contains("<script>") && !html.contains(" style="));
        assert!(!html.contains("onclick") && !html.contains("http"));
        assert!(html.contains("<script src=\"/ui/app.js\""));
    }
}
