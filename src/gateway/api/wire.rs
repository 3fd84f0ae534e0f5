//! Request and response plumbing: JSON bodies in and out, query strings,
//! percent-decoding, and the bearer-token check. No I/O; every function is
//! total on arbitrary input.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::response::{json_response, Resp};

pub fn ok(value: &impl serde::Serialize) -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

pub fn created(value: &impl serde::Serialize) -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::CREATED, value))
}

pub fn no_content() -> Result<Resp, ApiError> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    Ok(res)
}

/// Decodes a JSON body: not JSON at all is `bad_json` (400); JSON of the
/// wrong shape is `invalid` (422) and names the offending field.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadJson(
            "request body is empty; expected json".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A data error can come before a syntax error further on: the
        // body is only `invalid` if it is JSON as a whole.
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
        if inner.is_data() && is_json {
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            ApiError::Invalid(format!("{at}{}", strip_position(&inner)))
        } else {
            ApiError::BadJson(format!("body is not json: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadJson(format!("body is not json: {e}")))?;
    Ok(value)
}

/// serde_json's data errors end in " at line 1 column 42", noise for a
/// one-line request body.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set). `None` for a
/// bad escape or a result that is not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    if !escapes_well_formed(s) {
        return None;
    }
    let spaced;
    let s = if plus && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

/// Every `%` starts a two-hex-digit escape (percent-encoding would pass a
/// bad one through as it is; the API refuses it).
fn escapes_well_formed(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| {
            b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        })
}

/// A parsed query string: `(name, value)` pairs in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// `form_urlencoded` decodes leniently: a part with a bad escape or
    /// invalid UTF-8 is refused first.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let raw = raw.unwrap_or("");
        if let Some(part) = raw.split('&').find(|p| percent_decode(p, true).is_none()) {
            return Err(ApiError::Invalid(format!(
                "query: '{part}' is not percent-encoded utf-8"
            )));
        }
        Ok(Self(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        ))
    }

    /// The last value of `name`, if present (`?name=` is present and empty:
    /// the handlers refuse it rather than guess).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `name` with `FromStr`; the error names the parameter.
    pub fn parse_opt<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::Invalid(format!("{name}: '{v}' is not valid")))
            })
            .transpose()
    }
}

/// Whether the request carries `Authorization: Bearer <token>` with the
/// admin token. The comparison takes time independent of the token's
/// contents; an empty configured token never matches.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let v = value.as_bytes();
    let Some(given) = v
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
        .and_then(|_| v.get(7..))
    else {
        return false;
    };
    constant_time_eq(token.as_bytes(), trim(given))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |i| i + 1);
    &b[start..end]
}

/// Equal in constant time for inputs of equal length (`subtle`); an empty
/// `expected` never matches.
pub fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    !expected.is_empty() && bool::from(expected.ct_eq(given))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secretsecret"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(!constant_time_eq(b"", b""));
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "t0k"));
        h.insert("authorization", HeaderValue::from_static("Bearer t0k"));
        assert!(authorized(&h, "t0k"));
        h.insert("authorization", HeaderValue::from_static("bearer  t0k "));
        assert!(authorized(&h, "t0k"));
        h.insert("authorization", HeaderValue::from_static("Basic t0k"));
        assert!(!authorized(&h, "t0k"));
        h.insert("authorization", HeaderValue::from_static("Bearer"));
        assert!(!authorized(&h, "t0k"));
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("mac%3A02", false).as_deref(), Some("mac:02"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%+1", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(percent_decode("%e2%8", false), None);
    }

    #[test]
    fn json_errors_are_classified() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            client: String,
        }
        let kind = |b: &[u8]| json_body::<T>(b).unwrap_err().status_code().1;
        assert_eq!(kind(b""), "bad_json");
        assert_eq!(kind(b"{"), "bad_json");
        assert_eq!(kind(b"{} x"), "bad_json");
        assert_eq!(kind(b"{}"), "invalid");
        assert_eq!(kind(b"[]"), "invalid");
        assert_eq!(kind(b"{\"client\": 5}"), "invalid");
        assert!(json_body::<T>(b" {\"client\": \"x\"} ").is_ok());
    }
}
