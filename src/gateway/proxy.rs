//! Upstream routes: a reverse proxy by path prefix to `http://` (HTTP/1.1)
//! or `h2c://` upstreams, using the clients in [`super::upstream`]. Memory
//! per proxied stream is bounded on every leg (windows, one body frame at a
//! time, a capped response head, capped socket buffers); the pending slot,
//! stream count and body budget live in guards owned by the bodies, so an
//! upstream that resets, closes or times out releases them when hyper drops
//! those.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use futures::future::Either;
use futures::FutureExt;

use super::body::{GwBody, Held, Hold};
use super::error::{pending_cap_body, GatewayError};
use super::limiters::BodyPermit;
use super::refusal::Refusal;
use super::upstream::{
    strip_hop_by_hop, BodyError, H1Upstream, H2cUpstream, ProxyBody, UpstreamBody,
};
use crate::config::{GatewayConfig, RouteConfig};
use crate::stats::{RouteStats, Stats};

/// Idle upstream connections kept per upstream host. An HTTP/1.1 upstream
/// needs one connection per request in flight, so a pool smaller than the
/// usual concurrency reconnects on every burst; an idle one holds little.
const MAX_IDLE_PER_HOST: usize = 512;

/// How long an idle upstream connection is kept: short enough that memory
/// is back near idle within seconds after a burst, long enough that steady
/// traffic reuses connections.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(1);

pub(crate) struct Route {
    /// The answer past the pending cap, built once.
    cap_body: bytes::Bytes,
    prefix: String,
    upstream: Upstream,
    authority: Authority,
    /// `Host` for HTTP/1.1 upstreams, built once.
    host: HeaderValue,
    /// Upstream base path without a trailing `/`.
    base: String,
    strip: bool,
    timeout: Duration,
    slots: Arc<Semaphore>,
    pub stats: Arc<RouteStats>,
}

enum Upstream {
    /// `http://`: HTTP/1.1, a pool of connections.
    Http1(Arc<H1Upstream>),
    /// `h2c://`: one multiplexed HTTP/2 connection.
    H2c(Arc<H2cUpstream>),
}

/// One in-flight request on a route; `pending` is exact because it only
/// moves here and in `Drop`.
pub(crate) struct PendingGuard {
    _permit: OwnedSemaphorePermit,
    stats: Arc<RouteStats>,
}

/// A response body's hold: the request's own and its pending slot.
struct WithPending {
    hold: Hold,
    _pending: PendingGuard,
}

impl Held for WithPending {
    fn timed_out(&self) {
        self.hold.timed_out();
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.stats.pending.fetch_sub(1, Relaxed);
    }
}

impl Route {
    fn new(rc: &RouteConfig, cfg: &GatewayConfig, stats: &Stats) -> Result<Self, GatewayError> {
        let bad = |reason: &str| GatewayError::Route {
            route: rc.name.clone(),
            reason: format!("upstream '{}' {reason}", rc.upstream),
        };
        let scheme = rc
            .upstream
            .scheme()
            .cloned()
            .ok_or_else(|| bad("has no scheme"))?;
        let authority = rc
            .upstream
            .authority()
            .cloned()
            .ok_or_else(|| bad("has no host"))?;
        let upstream = match scheme.as_str() {
            "http" => Upstream::Http1(Arc::new(H1Upstream::new(
                authority.clone(),
                cfg,
                super::limits::http1_buf(cfg),
                POOL_IDLE,
                MAX_IDLE_PER_HOST,
            ))),
            "h2c" => Upstream::H2c(Arc::new(H2cUpstream::new(
                authority.clone(),
                cfg,
                POOL_IDLE,
            ))),
            _ => {
                return Err(bad(
                    "must be http:// or h2c:// (TLS upstreams are not supported)",
                ))
            }
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("has a bad host"))?;
        let base = rc.upstream.path().trim_end_matches('/').to_owned();
        let max = u64::try_from(rc.max_pending).unwrap_or(u64::MAX);
        Ok(Self {
            cap_body: pending_cap_body(&rc.name),
            prefix: rc.prefix.clone(),
            upstream,
            authority,
            host,
            base,
            strip: rc.strip_prefix,
            timeout: rc.timeout,
            slots: Arc::new(Semaphore::new(rc.max_pending.min(Semaphore::MAX_PERMITS))),
            stats: stats.gateway.route(&rc.name, max),
        })
    }

    /// A pending slot now, or a refusal now: never a queue.
    pub(crate) fn try_pending(&self) -> Result<PendingGuard, Refusal> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::PendingCap {
                body: self.cap_body.clone(),
            })?;
        self.stats.pending.fetch_add(1, Relaxed);
        Ok(PendingGuard {
            _permit: permit,
            stats: self.stats.clone(),
        })
    }

    /// The upstream URI for a request path (and query): origin-form
    /// (`/path?q`) for HTTP/1.1, whose connection sends it as it is;
    /// absolute for h2c, where it gives `:scheme` and `:authority`.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, Refusal> {
        let pq = if !self.strip && self.base.is_empty() {
            // The path goes upstream as it came: share it, no copy.
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
            let rest = match self.strip {
                true => pq
                    .strip_prefix(self.prefix.trim_end_matches('/'))
                    .unwrap_or(pq),
                false => pq,
            };
            let sep = if rest.starts_with('/') { "" } else { "/" };
            PathAndQuery::try_from(format!("{}{sep}{rest}", self.base))
                .map_err(|_| Refusal::BadBody)?
        };
        let mut parts = http::uri::Parts::default();
        if let Upstream::H2c(_) = self.upstream {
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map_err(|_| Refusal::BadBody)
    }
}

pub(crate) struct Routes {
    /// Longest prefix first.
    list: Vec<Arc<Route>>,
    pub(crate) max_body: u64,
    /// Budget a streamed body can occupy here: window + client buffer.
    pub(crate) stream_share: u64,
}

impl Routes {
    pub(crate) fn new(
        routes: &[RouteConfig],
        cfg: &GatewayConfig,
        stats: &Stats,
    ) -> Result<Self, GatewayError> {
        let mut list = routes
            .iter()
            .map(|r| Route::new(r, cfg, stats).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        list.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let buf = super::limits::http1_buf(cfg);
        Ok(Self {
            list,
            max_body: cfg.max_body,
            stream_share: u64::from(cfg.initial_stream_window) + buf as u64,
        })
    }

    pub(crate) fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.list
            .iter()
            .find(|r| path.starts_with(r.prefix.as_str()))
    }
}

/// A request admitted to a route, its pending slot and body budget held,
/// not yet sent. Dropping it releases both.
pub(crate) struct Admitted {
    route: Arc<Route>,
    pending: PendingGuard,
    permit: Option<BodyPermit>,
    req: Request<Incoming>,
    max_body: u64,
}

impl Admitted {
    pub(crate) fn new(
        route: Arc<Route>,
        pending: PendingGuard,
        permit: Option<BodyPermit>,
        req: Request<Incoming>,
        max_body: u64,
    ) -> Self {
        Self {
            route,
            pending,
            permit,
            req,
            max_body,
        }
    }

    /// Sending it will open a new upstream connection: no pooled HTTP/1.1
    /// connection is idle (h2c streams share one connection). The costly
    /// part of a cold start; a peek, the pool is not taken from.
    pub(crate) fn connects(&self) -> bool {
        match &self.route.upstream {
            Upstream::H2c(_) => false,
            Upstream::Http1(up) => !up.has_idle(),
        }
    }

    /// Sends it upstream; the returned future only waits for the answer.
    /// `hold` (stream and connection guards) and the pending slot move
    /// into the response body. Kept small on purpose — it lives as long
    /// as the stream waits, so its size is memory per held stream.
    /// Cancel-safe: dropping it (client reset) drops the upstream request
    /// and every guard.
    pub(crate) fn forward(
        self,
        client_ip: std::net::IpAddr,
        hold: Hold,
    ) -> Result<impl Future<Output = Result<Response<GwBody>, Refusal>> + Send + 'static, Refusal>
    {
        let Self {
            route,
            pending,
            permit,
            req,
            max_body,
        } = self;
        let upstream = upstream_request(&route, req, permit, max_body, client_ip)?;
        let sent = match &route.upstream {
            Upstream::H2c(up) => Either::Left(H2cUpstream::request(up, upstream).map(|r| {
                r.map(|resp| resp.map(UpstreamBody::H2c))
                    .map_err(|e| upstream_error(&e))
            })),
            Upstream::Http1(up) => Either::Right(H1Upstream::request(up, upstream).map(|r| {
                r.map(|resp| resp.map(UpstreamBody::H1))
                    .map_err(|e| upstream_error(&e))
            })),
        };
        // The route timeout covers the whole exchange: the head here, then
        // the body, on one timer that moves into the response body.
        // Combinators, not an async block: a block would keep `sent` twice
        // per held stream (captured, then moved into its select).
        let strip = matches!(route.upstream, Upstream::H2c(_));
        let deadline = Box::pin(tokio::time::sleep(route.timeout));
        let head = HeadWithin {
            sent,
            deadline: Some(deadline),
        };
        Ok(head.map(move |r| {
            let (resp, deadline) = r.ok_or(Refusal::Timeout)?;
            let (mut parts, inner) = resp?.into_parts();
            // Our HTTP/1.1 client leaves hop-by-hop fields out of the head
            // it builds (`h1wire::header_map`).
            if strip {
                strip_hop_by_hop(&mut parts.headers);
            }
            let hold: Hold = Box::new(WithPending {
                hold,
                _pending: pending,
            });
            Ok(Response::from_parts(
                parts,
                GwBody::Upstream {
                    inner,
                    hold: Some(hold),
                    deadline,
                    reserved: None,
                },
            ))
        }))
    }
}

/// The request as it goes upstream: its URI, its headers without the
/// hop-by-hop fields, `Host` or `:authority`, `X-Forwarded-For`.
fn upstream_request(
    route: &Route,
    req: Request<Incoming>,
    permit: Option<BodyPermit>,
    max_body: u64,
    client_ip: std::net::IpAddr,
) -> Result<Request<ProxyBody>, Refusal> {
    let (mut parts, body) = req.into_parts();
    parts.uri = route.upstream_uri(&parts.uri)?;
    strip_hop_by_hop(&mut parts.headers);
    // A client's `Expect: 100-continue` is answered here (hyper sends
    // 100 Continue when the body is first read); the body goes upstream
    // without waiting, so the upstream is not asked to expect anything.
    parts.headers.remove(header::EXPECT);
    if matches!(route.upstream, Upstream::H2c(_)) {
        // `:authority` comes from the URI; a `Host` header would repeat it.
        parts.version = Version::HTTP_2;
        parts.headers.remove(header::HOST);
    } else {
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, route.host.clone());
        }
    }
    append_forwarded_for(&mut parts.headers, client_ip);
    Ok(Request::from_parts(
        parts,
        ProxyBody::new(body, permit, max_body),
    ))
}

/// 413 if our own body cap aborted the request, else 502.
fn upstream_error(e: &(dyn std::error::Error + 'static)) -> Refusal {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(BodyError::TooLarge(max)) = s.downcast_ref::<BodyError>() {
            return Refusal::TooLarge { max: *max };
        }
        src = s.source();
    }
    tracing::debug!(error = %e, "upstream request failed");
    Refusal::Upstream
}

pin_project_lite::pin_project! {
    /// An upstream exchange until its response head, cut off at the route
    /// deadline. When the head comes in time, its timer comes out with it,
    /// to go on bounding the body: one timer per proxied request, not one
    /// for the head and another for the body.
    struct HeadWithin<F> {
        #[pin]
        sent: F,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Future for HeadWithin<F> {
    /// `None`: the deadline passed first.
    type Output = Option<(F::Output, Pin<Box<Sleep>>)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Polled after it completed: nothing more will come.
        let Some(deadline) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        if let Poll::Ready(out) = this.sent.poll(cx) {
            return Poll::Ready(this.deadline.take().map(|d| (out, d)));
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *this.deadline = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn append_forwarded_for(h: &mut HeaderMap, ip: std::net::IpAddr) {
    use http::header::Entry;
    // One lookup (the entry) for the custom name, not a get and an insert.
    let entry = h.entry(header::HeaderName::from_static("x-forwarded-for"));
    // The usual case (no earlier hop) formats on the stack: one allocation.
    let mut buf = [0u8; 64];
    let value = match &entry {
        Entry::Occupied(e) => match e.get().to_str() {
            Ok(prev) => HeaderValue::from_str(&format!("{prev}, {ip}")).ok(),
            Err(_) => own_ip(&mut buf, ip),
        },
        Entry::Vacant(_) => own_ip(&mut buf, ip),
    };
    let Some(v) = value else { return };
    match entry {
        Entry::Occupied(mut e) => {
            e.insert(v);
        }
        Entry::Vacant(e) => {
            e.insert(v);
        }
    }
}

/// `ip` as a field value, formatted in `buf`.
fn own_ip(buf: &mut [u8; 64], ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let n = write!(cur, "{ip}")
        .ok()
        .and_then(|()| usize::try_from(cur.position()).ok())?;
    HeaderValue::from_bytes(&buf[..n]).ok()
}
