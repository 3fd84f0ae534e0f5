//! One request: admission, then the internal API or an upstream route.
//! Every refusal is counted by reason and attributed to the client.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{ready, Either, Ready};
use futures::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;

use super::activity::ActivityGuard;
use super::admission::{admit_api_body, admit_event_stream, admit_request, admit_route, identify};
use super::body::{collect, GwBody};
use super::events::{EventBody, STREAM_PATH};
use super::inner::Inner;
use super::refusal::Refusal;
use super::{api, error};
use crate::client::ClientKey;
use crate::stats::{DropReason, RouteStats, Stats};

/// Counts one stream in flight (overall and for its client) until dropped.
struct StreamGuard {
    stats: Arc<Stats>,
    key: ClientKey,
}

impl StreamGuard {
    fn new(stats: &Arc<Stats>, key: ClientKey) -> Self {
        stats.gateway.streams.fetch_add(1, Relaxed);
        stats.clients.pending(&key, 1);
        Self {
            stats: stats.clone(),
            key,
        }
    }
}

/// What a proxied response body holds for this request: its stream count
/// and its connection's activity mark.
struct Held {
    stream: StreamGuard,
    _activity: ActivityGuard,
}

impl super::body::Held for Held {
    fn timed_out(&self) {
        let s = &self.stream;
        s.stats
            .drop_for(&s.key, DropReason::Timeout, Instant::now());
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.stats.gateway.streams.fetch_sub(1, Relaxed);
        self.stats.clients.pending(&self.key, -1);
    }
}

/// The hyper service body. Never fails: every problem is a JSON answer.
///
/// Admission (every refusal) and routing happen here, synchronously; the
/// returned future builds and sends a proxied request's upstream request
/// (see [`refusals_first`]) and waits (for the upstream, or for the API
/// handler, boxed). Its size is memory per held stream: it lives in hyper's
/// per-stream future for as long as the stream, so nothing large may live
/// in it (the request, for one, is moved out before the wait). Only an
/// admitted request counts as a stream in flight (`gateway.streams`, the
/// client's pending work); a refused one is answered at its first poll.
/// Cancel-safe: a reset stream drops this future and with it every guard.
pub(crate) fn handle(
    inner: &Arc<Inner>,
    ip: IpAddr,
    activity: ActivityGuard,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<GwBody>, Infallible>> + Send + 'static {
    let (key, isolated) = identify(inner, ip, &req);
    inner.stats.clients.request(&key, Instant::now());
    // The prefix lookup only picks the metrics label; a refusal below does
    // no routing work (no upstream URI, pending slot or body budget).
    let routes = inner.routes.load();
    let route = routes.find(req.uri().path());
    let route_stats = route.map_or_else(|| inner.api_stats.clone(), |r| r.stats.clone());
    // What the request waits for, and the guards that wait with it (a
    // proxied request's guards move into its response body instead).
    let (work, guards) = match (admit_request(inner, isolated, ip), route) {
        (Err(r), _) => (Either::Left(refuse(r)), Some((None, activity))),
        (Ok(()), Some(route)) => match admit_route(&routes, route, &inner.admission, req) {
            Ok(admitted) => {
                let hold = Box::new(Held {
                    stream: StreamGuard::new(&inner.stats, key.clone()),
                    _activity: activity,
                });
                let connects = admitted.connects();
                let sent = refusals_first(move || admitted.forward(ip, hold), connects, refused());
                (Either::Right(Either::Left(sent)), None)
            }
            Err(r) => (Either::Left(refuse(r)), Some((None, activity))),
        },
        // A long-lived stream: no pending work once its head is out; its
        // connection's activity mark lives in its body.
        (Ok(()), None) if is_event_stream(&req) => {
            let authorized = api::authorized(req.headers(), &inner.api.admin_token);
            match admit_event_stream(&inner.events, key.clone(), ip, authorized) {
                Ok(reader) => {
                    let body = GwBody::Events(EventBody::new(reader, activity));
                    (Either::Left(ready(Ok(event_stream(body)))), None)
                }
                Err(r) => (Either::Left(refuse(r)), Some((None, activity))),
            }
        }
        // Boxed: the API handlers' futures are large.
        (Ok(()), None) => {
            let stream = StreamGuard::new(&inner.stats, key.clone());
            let api = Box::pin(internal(inner.clone(), req, ip));
            (
                Either::Right(Either::Right(api)),
                Some((Some(stream), activity)),
            )
        }
    };
    let stats = inner.stats.clone();
    work.map(move |result| {
        let resp = finish(&stats, &route_stats, &key, result);
        drop(guards);
        Ok(resp)
    })
}

fn is_event_stream(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET && req.uri().path() == STREAM_PATH
}

/// The head of an event stream; updates follow in `body`.
fn event_stream(body: GwBody) -> Response<GwBody> {
    use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

thread_local! {
    /// Streams refused on this thread so far, for [`refusals_first`]. A
    /// thread-local: the gateway's threads are current-thread runtimes. On
    /// the shared multi-thread runtime a stream may be polled on another
    /// worker than the one that admitted it; comparing two threads' counts
    /// then only costs or saves two yields.
    static REFUSED: Cell<u64> = const { Cell::new(0) };
}

fn refused() -> u64 {
    REFUSED.with(Cell::get)
}

/// A refusal decided in `handle`; its 503 is ready at the first poll.
fn refuse(r: Refusal) -> Ready<Result<Response<GwBody>, Refusal>> {
    REFUSED.with(|n| n.set(n.get() + 1));
    ready(Err(r))
}

/// An admitted stream's upstream request, built and sent by `send`; if it
/// `connects` (no pooled HTTP/1.1 connection was idle) or streams were
/// refused on this thread since it was admitted (`refused_before`), only
/// after two yields. On a gateway thread all connection tasks share one
/// FIFO queue, and a refused stream's 503 is ready at its first poll: the
/// yields let the 503s queued meanwhile go out before the slower work of
/// building and connecting (two, because tokio re-queues a yielded task
/// only at its next driver poll; see `bench/RESULTS-gateway.md`). A warm
/// pool and no refusal since: no yield. Cancel-safe: dropping it drops
/// `send` or what it sent.
///
/// `then`, not an `async fn` awaiting the sent request: rustc would keep
/// the future and its awaited copy in separate slots, and this one lives as
/// long as the stream is held.
fn refusals_first<S, F, T, E>(
    send: S,
    connects: bool,
    refused_before: u64,
) -> impl Future<Output = Result<T, E>>
where
    S: FnOnce() -> Result<F, E>,
    F: Future<Output = Result<T, E>>,
{
    let yields = async move {
        if connects || refused() != refused_before {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
    };
    yields.then(move |()| match send() {
        Ok(sent) => Either::Left(sent),
        Err(e) => Either::Right(ready(Err(e))),
    })
}

/// Counts the outcome and turns a refusal into its answer.
fn finish(
    stats: &Stats,
    route: &RouteStats,
    key: &ClientKey,
    result: Result<Response<GwBody>, Refusal>,
) -> Response<GwBody> {
    let resp = match result {
        Ok(resp) => {
            stats.clients.served(key, Instant::now());
            resp
        }
        Err(r) => {
            stats.drop_for(key, r.reason(), Instant::now());
            error::refusal(&r)
        }
    };
    route.response(resp.status().as_u16());
    resp
}

/// An internal API request: body collected under `max_body` and the
/// budget, then [`api::handle`], all within `request_timeout`.
/// Cancel-safe: dropping it drops the partial body and returns its budget.
async fn internal(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<GwBody>, Refusal> {
    let max = inner.cfg.max_body;
    let mut permit = admit_api_body(&inner.admission, max, &req)?;
    // A GET without a body has nothing to wait for: its handlers are
    // synchronous reads, so a timer could not cut them anyway (and arming
    // one is a measurable share of an IPAM read).
    let bodiless_get =
        req.method() == http::Method::GET && http_body::Body::is_end_stream(req.body());
    let work = async {
        let (parts, body) = req.into_parts();
        let bytes = collect(body, &mut permit, max).await?;
        let resp = api::handle(&inner.api, Request::from_parts(parts, bytes), ip).await;
        Ok(resp.map(GwBody::Full))
    };
    if bodiless_get {
        return work.await;
    }
    tokio::time::timeout(inner.cfg.request_timeout, work)
        .await
        .unwrap_or(Err(Refusal::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_first_stores_the_request_future_once() {
        let big = async {
            let x = [7u8; 512];
            tokio::task::yield_now().await;
            Ok::<u8, ()>(x[3])
        };
        let inner = std::mem::size_of_val(&big);
        let outer = std::mem::size_of_val(&refusals_first(move || Ok(big), false, 0));
        assert!(outer <= inner + 64, "{inner} B became {outer} B");
    }

    /// The order in which two streams on two connections (each its own
    /// task) do their work on a gateway thread: an admitted one first (its
    /// work behind [`refusals_first`]), then one whose work is ready at
    /// once (a 503).
    async fn order(connects: bool, refusal_between: bool) -> Vec<&'static str> {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, b) = (log.clone(), log.clone());
        let before = refused();
        let admitted = tokio::spawn(refusals_first(
            move || {
                a.lock().unwrap().push("upstream request built");
                Ok::<_, ()>(ready(Ok(())))
            },
            connects,
            before,
        ));
        if refusal_between {
            drop(refuse(Refusal::Overload));
        }
        let refused = tokio::spawn(async move { b.lock().unwrap().push("503") });
        admitted.await.unwrap().unwrap();
        refused.await.unwrap();
        let order = log.lock().unwrap().clone();
        order
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_that_must_connect_lets_the_503s_queued_behind_it_go_first() {
        assert_eq!(order(true, false).await, ["503", "upstream request built"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refusal_since_admission_lets_the_503s_go_first() {
        assert_eq!(order(false, true).await, ["503", "upstream request built"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pooled_stream_with_no_refusal_since_goes_at_once() {
        assert_eq!(order(false, false).await, ["upstream request built", "503"]);
    }
}
