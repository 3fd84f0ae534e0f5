//! The event hub: builds each update of `/v1/events/stream` once for every
//! reader (at most [`INTERVAL`] apart), and keeps the readers in check.
//!
//! How a stream counts: admitted like any API request (isolation, shedding,
//! the IP's quota), it then takes one of `[gateway] max_event_streams`
//! slots (token-less readers at most half, so anonymous readers cannot
//! lock the operator out) and no pending slot: it is not work waiting for
//! an answer. Its memory is its send buffer (hyper's and h2's, charged to
//! the response budget); nothing queues here: a reader is handed only the
//! latest update, and one that falls [`MAX_LAG`] updates behind (its
//! transport stopped taking bytes) is dropped, counted as `slow_reader`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

use crate::client::ClientKey;
use crate::events::EventLog;
use crate::gateway::api::live::{self, SubnetUsage};
use crate::gateway::api::ApiContext;
use crate::gateway::refusal::Refusal;
use crate::gateway::respbudget::{Ctl, ResponseBudget};
use crate::stats::{DropReason, History, Stats};

/// The path of the stream.
pub(crate) const STREAM_PATH: &str = "/v1/events/stream";
/// Updates are at least this far apart: 4 a second at most.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);
/// A reader this many updates behind is dropped: 4 s of updates.
pub(crate) const MAX_LAG: u64 = 16;
/// Seconds of rate history the charts start from.
const HISTORY_POINTS: usize = 300;
/// How often the subnets' usage is read from the IPAM.
const SUBNETS_EVERY: Duration = Duration::from_secs(1);
/// How long a browser waits before reconnecting (the SSE `retry` field).
const RETRY: &[u8] = b"retry: 2000\n\n";

/// One update, framed as server-sent events for both kinds of reader.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    /// 0: nothing built yet.
    pub seq: u64,
    /// `event: update` with client identities.
    pub private: Bytes,
    /// `event: update` without them.
    pub public: Bytes,
    /// `event: history`: what a new reader's charts start from.
    pub history: Bytes,
    pub built_at: Option<Instant>,
}

impl Frame {
    /// Built in the last two updates' time: one a new reader may start
    /// from (the hub builds none while nobody reads).
    pub(crate) fn is_recent(&self) -> bool {
        self.seq != 0 && self.built_at.is_some_and(|t| t.elapsed() <= 2 * INTERVAL)
    }
}

/// One open stream, as the hub sees it.
pub(crate) struct Reader {
    hub: Arc<EventHub>,
    /// The identity it was admitted as, and its IP (the two things an
    /// operator may isolate to end the stream).
    pub key: ClientKey,
    pub ip: ClientKey,
    pub private: bool,
    anonymous: bool,
    /// The last update handed to the transport.
    pub sent: AtomicU64,
    pub dropped: AtomicBool,
    pub waker: AtomicWaker,
    /// The stream's share of the response budget (its HTTP/1.1
    /// connection's), through which a dropped reader is cut off.
    pub ctl: Mutex<Option<Arc<Ctl>>>,
}

impl Reader {
    pub(crate) fn hub(&self) -> &EventHub {
        &self.hub
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Relaxed);
        if self.anonymous {
            self.hub.anonymous.fetch_sub(1, Relaxed);
        }
    }
}

pub(crate) struct EventHub {
    pub api: ApiContext,
    events: Arc<EventLog>,
    stats: Arc<Stats>,
    budget: Arc<ResponseBudget>,
    cap: usize,
    open: AtomicUsize,
    anonymous: AtomicUsize,
    // std Mutex: pushes and sweeps are short and never cross an await.
    readers: Mutex<Vec<Weak<Reader>>>,
    pub current: ArcSwap<Frame>,
    pub cancel: CancellationToken,
}

impl EventHub {
    pub(crate) fn new(
        api: ApiContext,
        events: Arc<EventLog>,
        budget: Arc<ResponseBudget>,
        cap: usize,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            stats: api.stats.clone(),
            api,
            events,
            budget,
            cap,
            open: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            current: ArcSwap::from_pointee(Frame::default()),
            cancel,
        }
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// A slot for a new reader, or [`Refusal::StreamCap`]. `authorized`:
    /// it presented the admin token.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        key: ClientKey,
        ip: std::net::IpAddr,
        authorized: bool,
    ) -> Result<Arc<Reader>, Refusal> {
        let take = |n: &AtomicUsize, cap: usize| {
            n.fetch_update(Relaxed, Relaxed, |v| (v < cap).then_some(v + 1))
                .is_ok()
        };
        let anonymous = !authorized;
        if anonymous && !take(&self.anonymous, self.cap.div_ceil(2)) {
            return Err(Refusal::StreamCap);
        }
        if !take(&self.open, self.cap) {
            if anonymous {
                self.anonymous.fetch_sub(1, Relaxed);
            }
            return Err(Refusal::StreamCap);
        }
        let private = authorized || self.api.public_client_metrics.load(Relaxed);
        let reader = Arc::new(Reader {
            hub: self.clone(),
            key,
            ip: ClientKey::Ip(ip),
            private,
            anonymous,
            sent: AtomicU64::new(self.current.load().seq),
            dropped: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            ctl: Mutex::new(None),
        });
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&reader));
        Ok(reader)
    }

    /// The bytes a reader's stream starts with.
    pub(crate) fn preamble() -> Bytes {
        Bytes::from_static(RETRY)
    }

    /// Builds an update every [`INTERVAL`] while anyone reads, drops the
    /// readers that fell behind, and ends every stream on shutdown.
    /// Cancel-safe: it only waits between synchronous steps.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut history = History::with_points(HISTORY_POINTS);
        let mut subnets: Arc<Vec<SubnetUsage>> = Arc::default();
        let mut subnets_at: Option<Instant> = None;
        let mut built = (0u64, u64::MAX);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return self.close(),
                _ = tick.tick() => {}
            }
            let snap = self.api.snapshots.borrow().clone();
            history.observe(&snap);
            self.sweep();
            if self.open() == 0 {
                // The next reader gets a fresh build, even of the same snapshot.
                built = (0, u64::MAX);
                continue;
            }
            if subnets_at.is_none_or(|t| t.elapsed() >= SUBNETS_EVERY) {
                let api = self.api.clone();
                let read = tokio::task::spawn_blocking(move || live::subnets(&api));
                subnets = Arc::new(read.await.unwrap_or_default());
                subnets_at = Some(Instant::now());
            }
            let version = (snap.seq, self.events.version());
            if version == built {
                continue;
            }
            built = version;
            let events = self.events.recent(live::EVENTS);
            let src = live::Sources {
                ctx: &self.api,
                snap: &snap,
                history: &history,
                subnets: &subnets,
                events: &events,
                event_streams: self.open(),
            };
            let seq = self.current.load().seq + 1;
            let frame = Frame {
                seq,
                private: sse("update", &live::update(&src, seq, true)),
                public: sse("update", &live::update(&src, seq, false)),
                history: sse("history", &live::history(&history)),
                built_at: Some(Instant::now()),
            };
            self.current.store(Arc::new(frame));
            self.wake_all();
        }
    }

    /// Drops every reader more than [`MAX_LAG`] updates behind, and
    /// forgets the streams that ended.
    fn sweep(&self) {
        let now = self.current.load().seq;
        let mut slow = Vec::new();
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|w| match w.upgrade() {
                Some(r) if now.saturating_sub(r.sent.load(Relaxed)) > MAX_LAG => {
                    slow.push(r);
                    false
                }
                Some(r) => !r.dropped.load(Relaxed),
                None => false,
            });
        for r in slow {
            tracing::debug!(client = %r.key, "event stream reader fell behind; dropped");
            r.dropped.store(true, Relaxed);
            self.stats
                .drop_for(&r.key, DropReason::SlowReader, std::time::Instant::now());
            if let Some(ctl) = r
                .ctl
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                self.budget.reset(ctl);
            }
            r.waker.wake();
        }
    }

    fn wake_all(&self) {
        let readers: Vec<Arc<Reader>> = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        readers.iter().for_each(|r| r.waker.wake());
    }

    /// Shutdown: every stream ends (its body sees the token).
    fn close(&self) {
        self.wake_all();
    }
}

/// One server-sent event; `data` is one line of JSON (no newlines).
fn sse(event: &str, data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(event.len() + data.len() + 16);
    b.extend_from_slice(b"event: ");
    b.extend_from_slice(event.as_bytes());
    b.extend_from_slice(b"\ndata: ");
    b.extend_from_slice(data);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(cap: usize, dir: &std::path::Path) -> Arc<EventHub> {
        let api = crate::gateway::api::test_context(dir);
        let cfg = crate::config::Config::embedded().unwrap().gateway;
        let budget = Arc::new(ResponseBudget::new(&cfg, api.stats.clone()));
        Arc::new(EventHub::new(
            api,
            Arc::default(),
            budget,
            cap,
            CancellationToken::new(),
        ))
    }

    const ADDR: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(n: u8) -> ClientKey {
        ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn the_cap_holds_and_token_less_readers_get_half() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(4, dir.path());
        let anon: Vec<_> = (0..2)
            .map(|i| hub.subscribe(ip(i), ADDR, false).unwrap())
            .collect();
        assert_eq!(
            hub.subscribe(ip(9), ADDR, false).err(),
            Some(Refusal::StreamCap)
        );
        let a = hub.subscribe(ip(5), ADDR, true).unwrap();
        let b = hub.subscribe(ip(6), ADDR, true).unwrap();
        assert_eq!(
            hub.subscribe(ip(7), ADDR, true).err(),
            Some(Refusal::StreamCap)
        );
        assert_eq!(hub.open(), 4);
        assert!(!anon[0].private && a.private);
        drop(a);
        assert!(
            hub.subscribe(ip(7), ADDR, true).is_ok(),
            "a slot comes back"
        );
        drop((anon, b));
        assert_eq!(hub.open(), 0);
        assert_eq!(hub.anonymous.load(Relaxed), 0);
    }

    #[test]
    fn a_reader_too_far_behind_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(4, dir.path());
        let slow = hub.subscribe(ip(1), ADDR, true).unwrap();
        let keeping_up = hub.subscribe(ip(2), ADDR, true).unwrap();
        let seq = MAX_LAG + 1;
        hub.current.store(Arc::new(Frame {
            seq,
            ..Frame::default()
        }));
        keeping_up.sent.store(seq - 1, Relaxed);
        hub.sweep();
        assert!(slow.dropped.load(Relaxed));
        assert!(!keeping_up.dropped.load(Relaxed));
        assert_eq!(hub.stats.drops(DropReason::SlowReader), 1);
        let row = hub
            .stats
            .clients
            .get(&ip(1), std::time::Instant::now())
            .unwrap();
        assert_eq!(row.drops_by_reason, vec![(DropReason::SlowReader, 1)]);
    }
}
