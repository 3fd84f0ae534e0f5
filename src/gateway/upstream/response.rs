//! The response body as an upstream sends it.

use std::pin::Pin;
use std::task::Context;

use bytes::Bytes;
use http_body::{Body, SizeHint};
use hyper::body::Incoming;

use super::body::PollFrame;
use super::error::ResponseError;
use super::h1io::H1Body;

/// A response body as an upstream sends it: hyper's for h2c, our own
/// client's for HTTP/1.1. An enum, not a box: nothing allocated per request.
pub(crate) enum UpstreamBody {
    H2c(Incoming),
    H1(H1Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ResponseError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame<ResponseError> {
        match self.get_mut() {
            Self::H2c(b) => Pin::new(b).poll_frame(cx).map_err(ResponseError::from),
            Self::H1(b) => Pin::new(b).poll_frame(cx).map_err(ResponseError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H2c(b) => b.is_end_stream(),
            Self::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H2c(b) => b.size_hint(),
            Self::H1(b) => b.size_hint(),
        }
    }
}
