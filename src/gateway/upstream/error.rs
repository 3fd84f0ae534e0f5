//! Why an upstream exchange failed: the HTTP/1.1 client's errors, the
//! request body's, and the response body's as hyper sees them.

use http::uri::Authority;

use super::h1wire::WireError;

/// Why an HTTP/1.1 request or its response failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("connecting to {0}: {1}")]
    Connect(Authority, String),
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream sent {0}")]
    Wire(#[from] WireError),
    #[error("upstream closed the connection before the response ended")]
    Closed,
    #[error("request body: {0}")]
    Body(#[source] BodyError),
    #[error("request body does not match its content-length")]
    BodyLength,
}

/// Why a streamed request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

/// Why a response body stopped early. hyper answers either by resetting
/// the stream (h2: RST_STREAM) or closing the connection (HTTP/1.1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResponseError {
    #[error("upstream body: {0}")]
    Upstream(#[from] hyper::Error),
    #[error("upstream body: {0}")]
    H1(#[from] H1Error),
    #[error("upstream body not finished within the route timeout")]
    Timeout,
}
