//! The request body streamed to an upstream: budgeted and size-capped.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::BodyError;
use crate::gateway::limiters::BodyPermit;

/// What `Body::poll_frame` returns, for a body of `Bytes`.
pub(crate) type PollFrame<E> = Poll<Option<Result<Frame<Bytes>, E>>>;

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

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame<BodyError> {
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
