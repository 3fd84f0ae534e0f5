//! One `http://` upstream: HTTP/1.1 connections opened here, one per
//! request in flight, and a small pool of the idle ones between requests.
//!
//! hyper's connection API (`hyper::client::conn::http1`) speaks the
//! protocol; this only connects and keeps the idle `SendRequest`s. It is
//! lighter than hyper-util's pooled client, which it replaced: a request on
//! a pooled connection is hyper's response future plus the connection, 352
//! bytes (no boxed 3.4 KiB checkout future, no task spawned per request to
//! watch the connection go idle but in a rare race, see [`Lease`]), and a
//! held request holds nothing else. What a connection costs is hyper's:
//! see "Buffers" below and `bench/RESULTS-gateway.md`.
//!
//! The pool is a LIFO stack: the most recently used connection goes out
//! first, so after a burst the surplus sits unused at the bottom and is
//! closed after [`super::proxy::POOL_IDLE`]. A connection is out of the
//! pool while a request uses it and goes back when that response's body has
//! ended ([`Lease`]'s drop) — unless hyper is done with it (upstream closed,
//! error, `Connection: close`), the body was cut short, or the pool already
//! holds `max_idle`; then it is dropped, which closes it. A request that
//! finds a pooled connection closed under it before the request went out
//! (the upstream's keep-alive ran out) is sent once more on a new one.
//!
//! Buffers, per connection: hyper's header write buffer (8 KiB, fixed), its
//! request channel to the connection task (a 12 KiB block of 32 request
//! slots) and a read buffer that starts at 8 KiB and grows to `max_buf`
//! ([`super::limits::http1_buf`], 24 KiB with the shipped limits). A smaller
//! start is only `read_buf_exact_size`, which would also be the most a
//! response head may take. Response heads must fit in `max_buf`: longer ones
//! fail the request (502) and close that connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::{self, Either};
use futures::FutureExt;
use http::uri::Authority;
use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use super::body::ProxyBody;
use crate::config::GatewayConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = http1::SendRequest<ProxyBody>;

pub(crate) struct H1Upstream {
    authority: Authority,
    host: String,
    port: u16,
    builder: http1::Builder,
    socket_buffer: u32,
    /// Idle connections, oldest first, each with when it went idle. std
    /// `Mutex`: held only to push, pop or trim, never across an await.
    idle: Mutex<Idle>,
    /// How long a connection may stay idle.
    idle_timeout: Duration,
    /// Most idle connections kept.
    max_idle: usize,
}

#[derive(Default)]
struct Idle {
    conns: Vec<(Instant, Sender)>,
    /// A sweep task is running (it stops when the pool is empty).
    sweeping: bool,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("connecting to {0}: {1}")]
    Connect(Authority, String),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The connection a request was sent on, out of the pool until its
/// response is done; dropped, it goes back if hyper can send on it again.
/// Lives in the response body's hold (see [`super::body::GwBody`]), which
/// is dropped when the body ends, fails, times out or is dropped.
pub(crate) struct Lease {
    up: Arc<H1Upstream>,
    send: Option<Sender>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(send) = self.send.take() else { return };
        // Ready: hyper's connection task has finished the response and
        // waits for the next request. Closed: dropped here.
        if send.is_ready() {
            self.up.put(send);
            return;
        }
        if send.is_closed() {
            return;
        }
        // Neither, usually because the body's reader saw the last chunk
        // a moment before the connection task (on another worker thread)
        // went idle; or the body was cut short, and hyper is closing it.
        // Wait for either off this path, at most the idle time.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let up = self.up.clone();
        rt.spawn(async move {
            let mut send = send;
            if let Ok(Ok(())) = tokio::time::timeout(up.idle_timeout, send.ready()).await {
                up.put(send);
            }
        });
    }
}

impl H1Upstream {
    /// `max_buf`: hyper's read buffer cap, which response headers must fit.
    pub(crate) fn new(
        authority: Authority,
        cfg: &GatewayConfig,
        max_buf: usize,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let mut builder = http1::Builder::new();
        builder.max_buf_size(max_buf);
        let host = authority.host();
        let host = host.strip_prefix('[').unwrap_or(host);
        let host = host.strip_suffix(']').unwrap_or(host).to_owned();
        Self {
            port: authority.port_u16().unwrap_or(80),
            host,
            authority,
            builder,
            socket_buffer: cfg.socket_buffer,
            idle: Mutex::new(Idle::default()),
            idle_timeout,
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently idle connection that can take a request; closed
    /// ones met on the way are dropped.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.lock();
        let mut dead = Vec::new();
        let found = loop {
            match idle.conns.pop() {
                Some((_, s)) if s.is_ready() => break Some(s),
                Some((_, s)) => dead.push(s),
                None => break None,
            }
        };
        drop(idle);
        drop(dead);
        found
    }

    /// Back into the pool, or dropped when it is full (or when no sweep
    /// task runs and none can be started). Starts a sweep task if none runs.
    fn put(self: &Arc<Self>, send: Sender) {
        let mut idle = self.lock();
        if idle.conns.len() >= self.max_idle {
            drop(idle);
            drop(send);
            return;
        }
        if !idle.sweeping {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                drop(idle);
                drop(send);
                return;
            };
            idle.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
        idle.conns.push((Instant::now(), send));
    }

    /// Sends one request on a pooled connection (the usual case: the
    /// returned future is hyper's response future and the connection,
    /// nothing boxed), or connects first (boxed: the connect future is
    /// large and rare). The response comes with the connection's [`Lease`].
    /// Cancel-safe: dropping it drops the request, and hyper then closes
    /// that connection (an HTTP/1.1 request cannot be abandoned otherwise).
    pub(crate) fn request(
        this: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<(Response<Incoming>, Lease), H1Error>> + Send + 'static {
        let up = this.clone();
        match this.checkout() {
            Some(mut send) => {
                // Handed to the connection task now; the future only waits.
                // Combinators, not an async block: that would keep hyper's
                // ~300-byte future twice (captured, then awaited).
                let sent = send.try_send_request(req);
                Either::Left(sent.then(move |r| match r {
                    Ok(resp) => Either::Left(future::ready(Ok(up.lease(send, resp)))),
                    // It closed before the request went out: not sent, so
                    // safe to send once more, on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(req) => Either::Right(Box::pin(Self::connect_and_send(up, req))),
                        None => Either::Left(future::ready(Err(e.into_error().into()))),
                    },
                }))
            }
            None => Either::Right(Box::pin(Self::connect_and_send(up, req))),
        }
    }

    async fn connect_and_send(
        up: Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lease), H1Error> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, up.connect())
            .await
            .map_err(|_| H1Error::Connect(up.authority.clone(), "timed out".into()))?
            .map_err(|e| H1Error::Connect(up.authority.clone(), e.to_string()))?;
        let (mut send, conn) = up.builder.handshake(TokioIo::new(tcp)).await?;
        let authority = up.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %authority, error = %e, "upstream connection ended");
            }
        });
        let resp = send.send_request(req).await?;
        Ok(up.lease(send, resp))
    }

    /// The upstream's addresses tried in turn. Socket buffers are set
    /// before the connect, so the window scale offered in the SYN already
    /// follows the capped receive buffer.
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match connect_one(addr, self.socket_buffer).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    }

    /// A response and its connection; one the upstream will close
    /// (`Connection: close`) is not kept.
    fn lease(
        self: Arc<Self>,
        send: Sender,
        resp: Response<Incoming>,
    ) -> (Response<Incoming>, Lease) {
        let closing = resp
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let send = (!closing).then_some(send);
        (resp, Lease { up: self, send })
    }
}

/// A socket whose buffers cannot be capped is not used: the caps are what
/// bounds the kernel memory behind each upstream connection.
async fn connect_one(addr: SocketAddr, buf: u32) -> std::io::Result<TcpStream> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_send_buffer_size(buf)?;
    sock.set_recv_buffer_size(buf)?;
    sock.set_nodelay(true)?;
    sock.connect(addr).await
}

/// Closes connections idle longer than `timeout`, checking every
/// `timeout` (so they go within twice that), until the pool is empty or
/// the upstream is gone (routes replaced). Idle connections are in the
/// order they went idle, so the expired ones are a prefix.
async fn sweep(up: Weak<H1Upstream>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout).await;
        let Some(up) = up.upgrade() else { return };
        let mut idle = up.lock();
        let now = Instant::now();
        let n = idle
            .conns
            .partition_point(|(t, _)| now.duration_since(*t) >= timeout);
        let expired: Vec<_> = idle.conns.drain(..n).collect();
        let empty = idle.conns.is_empty();
        if empty {
            idle.sweeping = false;
        }
        drop(idle);
        drop(expired);
        if empty {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn ret_size<F, R>(_: &F) -> usize
    where
        F: Fn(&Arc<H1Upstream>, Request<ProxyBody>) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// A request waiting on a pooled connection lives in its stream's
    /// task for as long as the upstream takes: it must stay hyper's
    /// response future (which holds the request until sent, ~300 bytes)
    /// plus the connection, not grow by whole futures.
    #[test]
    fn pooled_request_future_stays_small() {
        let request = ret_size(&|u: &Arc<H1Upstream>, r| H1Upstream::request(u, r));
        let req = std::mem::size_of::<Request<ProxyBody>>();
        eprintln!("request future {request} B, Request<ProxyBody> {req} B");
        assert!(request <= req + 64, "{request} B");
    }

    /// `socket_buffer` caps both buffers of an upstream socket (Linux
    /// reports twice the value set, for its bookkeeping).
    #[tokio::test]
    async fn upstream_sockets_get_the_configured_buffers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tcp = connect_one(addr, 8192).await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert_eq!(sock.recv_buffer_size().unwrap(), 2 * 8192);
        assert_eq!(sock.send_buffer_size().unwrap(), 2 * 8192);
        assert!(sock.tcp_nodelay().unwrap());
    }
}
