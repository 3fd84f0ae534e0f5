//! One `/v1/events/stream` response body: the preamble, then each update
//! the hub publishes, as the transport takes them. It holds a reference to
//! the latest update, never a queue: an update the reader was too slow for
//! is skipped, and the hub drops a reader that keeps falling behind.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::hub::{EventHub, Reader};
use crate::gateway::activity::ActivityGuard;
use crate::gateway::respbudget;

pub(crate) struct EventBody {
    reader: Arc<Reader>,
    started: bool,
    /// The first update goes out with the rate history before it.
    history_sent: bool,
    /// An open stream is activity: the idle watchdog leaves its connection be.
    _activity: ActivityGuard,
}

impl EventBody {
    pub(crate) fn new(reader: Arc<Reader>, activity: ActivityGuard) -> Self {
        Self {
            reader,
            started: false,
            history_sent: false,
            _activity: activity,
        }
    }

    /// The next bytes to send; `None` ends the stream: on shutdown, when
    /// the reader was dropped for falling behind, or once it is isolated.
    pub(crate) fn poll_chunk(&mut self, cx: &Context<'_>) -> Poll<Option<Bytes>> {
        let r = self.reader.clone();
        let hub: &EventHub = r.hub();
        if r.dropped.load(Relaxed)
            || hub.cancel.is_cancelled()
            || hub.api.isolation.is_isolated(&r.key)
            || hub.api.isolation.is_isolated(&r.ip)
        {
            return Poll::Ready(None);
        }
        if let Some(b) = self.next_bytes() {
            return Poll::Ready(Some(b));
        }
        r.waker.register(cx.waker());
        // An update published, or a drop, since the first look.
        match self.next_bytes() {
            Some(b) => Poll::Ready(Some(b)),
            None if r.dropped.load(Relaxed) || hub.cancel.is_cancelled() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn next_bytes(&mut self) -> Option<Bytes> {
        let r = &self.reader;
        let frame = r.hub().current.load_full();
        // A new reader starts from a recent update only, never a stale one.
        let usable = frame.seq != 0 && (self.history_sent || frame.is_recent());
        let fresh = usable && frame.seq != r.sent.load(Relaxed);
        if self.started && !fresh && (self.history_sent || !usable) {
            return None;
        }
        let mut out = BytesMut::new();
        if !self.started {
            self.started = true;
            out.extend_from_slice(&EventHub::preamble());
        }
        if usable && (fresh || !self.history_sent) {
            if !self.history_sent {
                self.history_sent = true;
                out.extend_from_slice(&frame.history);
            }
            out.extend_from_slice(match r.private {
                true => &frame.private,
                false => &frame.public,
            });
            r.sent.store(frame.seq, Relaxed);
        }
        Some(out.freeze())
    }

    /// Remembers the stream's share of the response budget (call it after
    /// a chunk was charged), through which the hub can cut it off.
    pub(crate) fn note_stream(&self) {
        let mut ctl = self
            .reader
            .ctl
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ctl.is_none() {
            *ctl = respbudget::current_stream();
        }
    }
}
