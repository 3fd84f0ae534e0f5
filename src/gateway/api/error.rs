//! The one error enum of the HTTP API boundary. Every failure a handler can
//! meet becomes an [`ApiError`], which knows its status and its stable
//! machine-readable code; the body is always
//! `{"error": {"code": "...", "message": "..."}}`.

use http::header::{HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;

use super::response::{json_response, Resp};
use crate::ipam::IpamError;
use crate::isolation::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all (syntax error, truncated, empty).
    #[error("{0}")]
    BadJson(String),
    /// Well-formed input with a wrong type, a missing field or a bad value.
    #[error("{0}")]
    Invalid(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method not allowed (allowed: {allow})")]
    MethodNotAllowed { allow: &'static str },
    #[error("'{0}' is not isolated")]
    NotIsolated(String),
    #[error("no lease on {0}")]
    NoLeaseOn(String),
    #[error("not ready")]
    NotReady,
    #[error("this cluster node is fenced: {0}")]
    Fenced(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Isolation(#[from] StoreError),
    #[error("response encoding failed: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and the stable error code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::BadJson(_) => (S::BAD_REQUEST, "bad_json"),
            Self::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "invalid"),
            Self::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (S::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::NotIsolated(_) => (S::NOT_FOUND, "not_isolated"),
            Self::NoLeaseOn(_) => (S::NOT_FOUND, "no_lease"),
            Self::NotReady => (S::SERVICE_UNAVAILABLE, "not_ready"),
            Self::Fenced(_) => (S::SERVICE_UNAVAILABLE, "cluster"),
            Self::Ipam(e) => ipam_status(e),
            Self::Isolation(e) => match e.unavailable {
                Some(code) => (S::SERVICE_UNAVAILABLE, code),
                None => (S::INTERNAL_SERVER_ERROR, "storage"),
            },
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn into_response(self) -> Resp {
        let (status, code) = self.status_code();
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        let mut res = json_response(status, &body);
        // Every 503 is temporary (not ready yet, store or etcd refusing,
        // a cluster race): the same call may succeed a moment later.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        match self {
            Self::Unauthorized => {
                res.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"vpcbox\""),
                );
            }
            Self::MethodNotAllowed { allow } => {
                res.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        res
    }
}

/// Every IPAM error has a fitting status; no wildcard, so a new variant
/// must be placed here deliberately.
fn ipam_status(e: &IpamError) -> (StatusCode, &'static str) {
    use IpamError as E;
    use StatusCode as S;
    match e {
        E::UnknownSubnet(_) => (S::NOT_FOUND, "unknown_subnet"),
        E::SubnetExists(_) => (S::CONFLICT, "subnet_exists"),
        E::SubnetOverlap { .. } => (S::CONFLICT, "subnet_overlap"),
        E::InvalidSubnet(_) => (S::UNPROCESSABLE_ENTITY, "invalid"),
        E::PoolExhausted { .. } => (S::CONFLICT, "pool_exhausted"),
        // The API allocates through no relay port; kept apart all the same.
        E::PortFull { .. } => (S::CONFLICT, "port_full"),
        E::NotInSubnet { .. } => (S::UNPROCESSABLE_ENTITY, "not_in_subnet"),
        E::AddressTaken { .. } => (S::CONFLICT, "address_taken"),
        E::NotOwner { .. } => (S::CONFLICT, "not_owner"),
        E::NoLease => (S::NOT_FOUND, "no_lease"),
        E::Reserved { .. } => (S::CONFLICT, "reserved"),
        E::ReservationConflict(_) => (S::CONFLICT, "reservation_conflict"),
        E::UnknownReservation => (S::NOT_FOUND, "unknown_reservation"),
        E::Degraded(_) => (S::SERVICE_UNAVAILABLE, "degraded"),
        // etcd unreachable: nothing written; retry once it is back.
        E::Cluster(_) => (S::SERVICE_UNAVAILABLE, "cluster"),
        // Another node wrote a compared key first: nothing written, and a
        // retry is safe (allocations are idempotent per client), so 503 +
        // Retry-After rather than a 409 the caller would have to resolve.
        E::Conflict(_) => (S::SERVICE_UNAVAILABLE, "cluster_conflict"),
        E::Storage(_) | E::Locked { .. } | E::Corrupt { .. } | E::NewerSchema { .. } => {
            (S::INTERNAL_SERVER_ERROR, "storage")
        }
        E::NotEmpty | E::InvalidDump(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (ApiError::BadJson("x".into()), 400, "bad_json"),
            (ApiError::Invalid("x".into()), 422, "invalid"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::NotReady, 503, "not_ready"),
            (ApiError::Fenced("x".into()), 503, "cluster"),
            (
                ApiError::Ipam(IpamError::PoolExhausted { subnet: "a".into() }),
                409,
                "pool_exhausted",
            ),
            (
                ApiError::Ipam(IpamError::UnknownSubnet("a".into())),
                404,
                "unknown_subnet",
            ),
            (
                ApiError::Ipam(IpamError::Storage("disk".into())),
                500,
                "storage",
            ),
            (ApiError::Isolation(StoreError::new("disk")), 500, "storage"),
            (
                ApiError::Isolation(StoreError {
                    message: "cluster: etcd: timed out".into(),
                    unavailable: Some("cluster"),
                }),
                503,
                "cluster",
            ),
            (
                ApiError::Ipam(IpamError::Cluster("etcd: timed out".into())),
                503,
                "cluster",
            ),
            (
                ApiError::Ipam(IpamError::Conflict("etcd: a compare failed".into())),
                503,
                "cluster_conflict",
            ),
        ];
        for (e, status, code) in cases {
            let want = (StatusCode::from_u16(status).unwrap(), code);
            assert_eq!(e.status_code(), want);
            let res = e.into_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()["content-type"], "application/json");
            assert_eq!(res.headers().contains_key("retry-after"), status == 503);
        }
    }
}
