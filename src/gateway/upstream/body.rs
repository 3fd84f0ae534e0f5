//! The bodies that cross the upstream boundary: the request body streamed
//! to an upstream (budgeted, size-capped) and the response body as an
//! upstream sends it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::{BodyError, ResponseError};
use super::h1io::H1Body;
use crate::gateway::limiters::BodyPermit;

/// A response body as an upstream sends it: hyper's for h2c, our own
/// client's for HTTP/1.1. An enum, not a box: nothing allocated per request.
pub(crate) enum UpstreamBody {
    H2c(Incoming),
    H1(H1Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ResponseError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseError>>> {
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

/// A request body streamed to an upstream. Its budget (at most one
/// window's worth plus the upstream write buffer: all a streamed body can
/// occupy here) is held until the body is done or dropped; a body longer
/// than `max_body` fails, which aborts the upstream request.
pub(crate) struct ProxyBody {
    inner: Incoming,
    permit: Option<BodyPermit>,
    seen: u64,
    max: u64,
}

impl ProxyBody {
    pub(crate) fn new(inner: Incoming, permit: Option<BodyPermit>, max: u64) -> Self {
        Self {
            inner,
            permit,
            seen: 0,
            max,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let out = match frame {
            Some(Ok(f)) => {
                this.seen += f.data_ref().map_or(0, |d| d.len() as u64);
                if this.seen > this.max {
                    Some(Err(BodyError::TooLarge(this.max)))
                } else {
                    return Poll::Ready(Some(Ok(f)));
                }
            }
            Some(Err(e)) => Some(Err(e.into())),
            None => None,
        };
        this.permit.take();
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
