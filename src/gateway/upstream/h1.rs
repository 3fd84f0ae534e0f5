//! One `http://` upstream: HTTP/1.1 connections opened here, one per
//! request in flight, and a small pool of the idle ones between requests.
//!
//! The protocol is our own small client ([`super::h1wire`] for the bytes,
//! [`super::h1io`] for the I/O): a request's exchange runs inside its
//! stream's own future and its response body's polls — no task per
//! connection or per request, no channel. hyper's `conn::http1`, which it
//! replaced, cost ~30 KiB per connection that no setting controlled (an
//! 8 KiB header write buffer, an 8 KiB read buffer, a 12 KiB request
//! channel block, a connection task).
//!
//! The pool is a LIFO stack: the most recently used connection goes out
//! first, so after a burst the surplus sits unused at the bottom and is
//! closed after [`super::proxy::POOL_IDLE`]. A connection is out of the
//! pool while a request uses it and goes back when that response's body
//! has been read to its end — unless the upstream said `Connection: close`,
//! the body was delimited by the close, the framing was doubtful, an error
//! happened, the body was cut short (dropped early: closed), or the pool
//! already holds `max_idle`. A pooled connection found closed (or with
//! unexpected bytes) at checkout is dropped; a request whose first write
//! on a pooled connection fails (nothing went out) is sent once more, on a
//! new connection; so is one that went out on a pooled connection the
//! upstream then closed before answering (its keep-alive timeout ran out
//! meanwhile), if its method is idempotent and it has no body — its head is
//! kept until the answer starts. Connections are pooled per runtime (the gateway threads
//! each run their own): a socket is driven by the runtime it was opened on.
//!
//! Buffers: none while a connection idles or a request waits for its
//! answer. The request head is one allocation of its exact size, freed once
//! written (or, for a request that may be sent again, until its answer
//! starts); a request body is sent one frame at a time (the frame the
//! client sent, no copy), chunked when its length is unknown. Reads go
//! into a 16 KiB stack buffer and only what arrived is copied out: the
//! response head's bytes (kept until they are parsed; heads over `max_buf`,
//! [`super::limits::http1_buf`], 24 KiB with the shipped limits, fail the
//! request with a 502 and close the connection), then each body read as
//! one frame. What a held stream costs here is its socket and the
//! exchange future in its task (280 bytes; a size test below keeps it
//! small): 8,000 streams held against a 5 s upstream took 2.9 KiB of RSS
//! each in all, downstream side included (haproxy 7.5, hyper's client
//! 19–22; `bench/RESULTS-gateway.md`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{header, Request};
use http_body::Body;
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::{Handle, Id};

use super::body::{BodyError, ProxyBody};
use super::h1io::Exchange;
use super::h1wire::{encode_head, ReqFraming, WireError};
use crate::config::GatewayConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct H1Upstream {
    authority: Authority,
    target: Target,
    socket_buffer: u32,
    /// The longest response head accepted.
    pub(super) max_head: usize,
    /// Idle connections, oldest first, each with when it went idle. std
    /// `Mutex`: held only to push, pop or trim, never across an await.
    idle: Mutex<Idle>,
    /// How long a connection may stay idle.
    idle_timeout: Duration,
    /// Most idle connections kept.
    max_idle: usize,
}

/// An upstream connection and the runtime whose I/O driver it is
/// registered with.
pub(crate) struct Conn {
    pub(super) tcp: TcpStream,
    rt: Id,
}

#[derive(Default)]
struct Idle {
    conns: Vec<(Instant, Conn)>,
    /// A sweep task is running (it stops when the pool is empty).
    sweeping: bool,
}

/// Why a request or its response failed.
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

/// A boxed connect: large and rare, so it is not kept inline in every
/// exchange.
pub(super) type Connecting = Pin<Box<dyn Future<Output = Result<Conn, H1Error>> + Send>>;

impl H1Upstream {
    /// `max_buf`: the longest response head accepted.
    pub(crate) fn new(
        authority: Authority,
        cfg: &GatewayConfig,
        max_buf: usize,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            target: Target::of(&authority),
            authority,
            socket_buffer: cfg.socket_buffer,
            max_head: max_buf,
            idle: Mutex::new(Idle::default()),
            idle_timeout,
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled connection of this thread's runtime is idle (it may still
    /// turn out closed when taken).
    pub(crate) fn has_idle(&self) -> bool {
        let Ok(rt) = Handle::try_current().map(|h| h.id()) else {
            return false;
        };
        self.lock().conns.iter().any(|(_, c)| c.rt == rt)
    }

    /// The most recently idle connection of this runtime that is still
    /// open; closed ones met on the way are dropped.
    fn checkout(&self) -> Option<Conn> {
        let rt = Handle::try_current().ok()?.id();
        loop {
            let mut idle = self.lock();
            let at = idle.conns.iter().rposition(|(_, c)| c.rt == rt)?;
            let (_, conn) = idle.conns.remove(at);
            drop(idle);
            if open(&conn.tcp) {
                return Some(conn);
            }
        }
    }

    /// Back into the pool, or dropped when it is full (or when no sweep
    /// task runs and none can be started). Starts a sweep task if none runs.
    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        let mut idle = self.lock();
        if idle.conns.len() >= self.max_idle {
            drop(idle);
            drop(conn);
            return;
        }
        if !idle.sweeping {
            let Ok(rt) = Handle::try_current() else {
                drop(idle);
                drop(conn);
                return;
            };
            idle.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
        idle.conns.push((Instant::now(), conn));
    }

    /// Starts one request: its head is encoded and a pooled connection
    /// taken here, synchronously; the returned future sends it (connecting
    /// first if none was idle) and waits for the response head. The
    /// response body reads the rest and puts the connection back.
    /// Cancel-safe: dropping it (or the body before its end) closes the
    /// connection, the only way to abandon an HTTP/1.1 request.
    pub(crate) fn request(this: &Arc<Self>, req: Request<ProxyBody>) -> Exchange {
        let (parts, body) = req.into_parts();
        let empty = body.is_end_stream();
        let framing = ReqFraming::of(
            &parts.method,
            empty,
            body.size_hint().exact(),
            parts.headers.contains_key(header::CONTENT_LENGTH),
        );
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let head = encode_head(&parts.method, target, &parts.headers, framing);
        let body = (!empty).then_some(body);
        Exchange::new(
            this.clone(),
            this.checkout(),
            head,
            body,
            framing,
            &parts.method,
        )
    }

    /// A new connection, boxed (see [`Connecting`]).
    pub(super) fn connecting(self: &Arc<Self>) -> Connecting {
        let up = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, up.connect())
                .await
                .map_err(|_| H1Error::Connect(up.authority.clone(), "timed out".into()))?
                .map_err(|e| H1Error::Connect(up.authority.clone(), e.to_string()))?;
            let rt = Handle::current().id();
            Ok(Conn { tcp, rt })
        })
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        self.target.connect(self.socket_buffer).await
    }
}

/// An idle connection is usable if reading it would block: not closed by
/// the upstream, no error, no stray bytes. A read is only tried when the
/// runtime has seen the socket readable, so this usually costs no syscall.
fn open(tcp: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Where an upstream is: its host (an IPv6 literal without brackets) and
/// port, 80 when the URL gives none.
#[derive(Debug, Clone)]
pub(super) struct Target {
    host: String,
    port: u16,
}

impl Target {
    pub(super) fn of(authority: &Authority) -> Self {
        let host = authority.host();
        let host = host.strip_prefix('[').unwrap_or(host);
        let host = host.strip_suffix(']').unwrap_or(host);
        Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
        }
    }

    /// The target's addresses tried in turn. Socket buffers are set before
    /// the connect, so the window scale offered in the SYN already follows
    /// the capped receive buffer.
    pub(super) async fn connect(&self, buf: u32) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match connect_one(addr, buf).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
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

    /// An exchange lives in its stream's task for as long as the upstream
    /// takes to answer: it must stay no larger than the request it sends
    /// (whose parts are encoded and dropped before it starts; 280 bytes
    /// against 304 when written), not grow by whole futures or buffers.
    #[test]
    fn exchange_future_stays_small() {
        let exchange = std::mem::size_of::<Exchange>();
        let req = std::mem::size_of::<Request<ProxyBody>>();
        eprintln!("exchange future {exchange} B, Request<ProxyBody> {req} B");
        assert!(exchange <= req, "{exchange} B");
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

    /// `has_idle` peeks: it sees a pooled connection of this runtime
    /// without taking it, and none of another runtime's.
    #[tokio::test]
    async fn has_idle_sees_this_runtimes_pooled_connections_without_taking_them() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = crate::config::Config::embedded().unwrap().gateway;
        let authority = Authority::try_from(addr.to_string()).unwrap();
        let up = Arc::new(H1Upstream::new(
            authority,
            &cfg,
            16 * 1024,
            Duration::from_secs(5),
            4,
        ));
        assert!(!up.has_idle());
        let tcp = connect_one(addr, 8192).await.unwrap();
        let _accepted = l.accept().await.unwrap();
        up.put(Conn {
            tcp,
            rt: Handle::current().id(),
        });
        assert!(up.has_idle());
        assert!(up.has_idle(), "the peek took the connection");
        let other = std::thread::spawn({
            let up = up.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async move { up.has_idle() })
            }
        });
        assert!(!other.join().unwrap(), "another runtime's connection");
        assert!(up.checkout().is_some());
        assert!(!up.has_idle());
    }

    /// An upstream URL without a port means port 80 (`h2c://backend` as
    /// well as `http://backend`); an IPv6 literal loses its brackets, and a
    /// name is resolved when connecting.
    #[tokio::test]
    async fn a_target_without_a_port_is_port_80() {
        let t = Target::of(&Authority::from_static("backend.example"));
        assert_eq!((t.host.as_str(), t.port), ("backend.example", 80));
        let t = Target::of(&Authority::from_static("[::1]:8080"));
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::of(&Authority::try_from(format!("localhost:{port}")).unwrap());
        let tcp = t.connect(8192).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap().port(), port);
    }
}
