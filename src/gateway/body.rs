//! The response body the gateway serves (a small in-memory answer, an
//! upstream body that holds its request's admission guards until it ends,
//! or an event stream), and the budgeted collection of internal API
//! request bodies.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::events::EventBody;
use super::limiters::BodyPermit;
use super::refusal::Refusal;
use super::respbudget::{self, Reservation};
use super::upstream::{PollFrame, ResponseError, UpstreamBody};

/// Whatever must live exactly as long as a response body: pending slot,
/// stream count, connection activity. Told when the route's deadline cut
/// the body off, so the timeout is counted against the client.
pub(crate) trait Held: Send + Sync {
    fn timed_out(&self);
}

pub(crate) type Hold = Box<dyn Held>;

/// The gateway's response body.
pub(crate) enum GwBody {
    Full(Full<Bytes>),
    /// `hold` is dropped as soon as the body ends, fails, times out or is
    /// dropped. `deadline` is the route timeout, counted from the request:
    /// it covers the whole response, not only its headers.
    /// `reserved`: the response budget's room for the next chunk, taken
    /// before `inner` is polled.
    Upstream {
        inner: UpstreamBody,
        hold: Option<Hold>,
        deadline: Pin<Box<Sleep>>,
        reserved: Option<Reservation>,
    },
    /// `/v1/events/stream`: charged like `Full`, chunk by chunk.
    Events(EventBody),
}

impl GwBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(b.into()))
    }
}

impl Body for GwBody {
    type Data = Bytes;
    type Error = ResponseError;

    /// The deadline is checked whenever hyper polls for more (it does not
    /// while the client's window is closed: that case is bounded by the
    /// windows and the send buffer, not by time).
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame<ResponseError> {
        match self.get_mut() {
            // Already in memory: charged (never refused) so that upstream
            // bodies pause while it waits for the client.
            Self::Full(f) => {
                let frame = ready!(Pin::new(f).poll_frame(cx)).map(|r| {
                    r.map_err(|never| match never {}).map(|fr| {
                        fr.map_data(|d| match respbudget::current() {
                            Some(b) if !d.is_empty() => b.charge(d, None),
                            _ => d,
                        })
                    })
                });
                Poll::Ready(frame)
            }
            Self::Upstream {
                inner,
                hold,
                deadline,
                reserved,
            } => {
                let budget = respbudget::current();
                if let (Some(b), None, Some(_)) = (&budget, &reserved, &hold) {
                    match b.poll_reserve(cx) {
                        Poll::Ready(r) => *reserved = Some(r),
                        // Not polled for more until bytes are written; the
                        // route deadline still runs.
                        Poll::Pending => return timed_out(hold, deadline, cx),
                    }
                }
                if let Poll::Ready(frame) = Pin::new(&mut *inner).poll_frame(cx) {
                    let frame = match (frame, &budget) {
                        (Some(Ok(f)), Some(b)) => Some(Ok(f.map_data(|d| {
                            if d.is_empty() {
                                d
                            } else {
                                b.charge(d, reserved.take())
                            }
                        }))),
                        (frame, _) => frame,
                    };
                    // Released with the last frame, not when hyper gets
                    // round to dropping the body: a client that has the
                    // whole answer sees the slot free.
                    if !matches!(frame, Some(Ok(_))) || inner.is_end_stream() {
                        hold.take();
                    }
                    if hold.is_none() {
                        reserved.take();
                    }
                    return Poll::Ready(frame);
                }
                timed_out(hold, deadline, cx)
            }
            Self::Events(e) => {
                let Some(d) = ready!(e.poll_chunk(cx)) else {
                    return Poll::Ready(None);
                };
                let d = match respbudget::current() {
                    Some(b) if !d.is_empty() => b.charge(d, None),
                    _ => d,
                };
                e.note_stream();
                Poll::Ready(Some(Ok(http_body::Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(f) => f.is_end_stream(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(f) => f.size_hint(),
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Events(_) => SizeHint::default(),
        }
    }
}

/// `Pending`, or the route timeout's error once `deadline` passed.
fn timed_out(
    hold: &mut Option<Hold>,
    deadline: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
) -> PollFrame<ResponseError> {
    if hold.is_none() || deadline.as_mut().poll(cx).is_pending() {
        return Poll::Pending;
    }
    if let Some(h) = hold.take() {
        h.timed_out();
    }
    Poll::Ready(Some(Err(ResponseError::Timeout)))
}

/// The most [`collect`] allocates before the bytes arrive.
const INITIAL_COLLECT: u64 = 16 * 1024;

/// Collects an internal API request body, growing `permit` chunk by chunk
/// (it may already hold the declared length). Cancel-safe: dropping it
/// drops the partial body, and the permit returns with its owner.
pub(crate) async fn collect(
    mut body: Incoming,
    permit: &mut BodyPermit,
    max: u64,
) -> Result<Bytes, Refusal> {
    // Capacity follows the bytes that arrived, never the declared length: a
    // client declaring 1 MiB and dribbling must not make us commit 1 MiB.
    let hint = body.size_hint().exact().unwrap_or(0).min(INITIAL_COLLECT);
    let mut buf = BytesMut::with_capacity(usize::try_from(hint).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::BadBody)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = (buf.len() + data.len()) as u64;
        if total > max {
            return Err(Refusal::TooLarge { max });
        }
        if total > permit.held() && !permit.grow(total - permit.held()) {
            return Err(Refusal::BodyBudget);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}
