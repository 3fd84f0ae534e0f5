//! One `http://` upstream: HTTP/1.1 connections, one per request in
//! flight, and a LIFO pool of the idle ones (the surplus after a burst sits
//! at the bottom and is closed after `POOL_IDLE`). Connections are pooled
//! per runtime: a socket is driven by the runtime it was opened on. A
//! connection goes back to the pool only after a response read to its end
//! that allows reuse; the exchange and its retry rules are in [`super::h1io`].
//! Why our own client rather than hyper's: memory per held stream, see
//! `bench/RESULTS-gateway.md`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Id};

use super::connect::{Target, CONNECT_TIMEOUT};
use super::error::H1Error;
use crate::config::GatewayConfig;

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
    pub(super) fn checkout(&self) -> Option<Conn> {
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

    /// `has_idle` peeks: it sees a pooled connection of this runtime
    /// without taking it, and none of another runtime's.
    #[tokio::test]
    async fn has_idle_sees_this_runtimes_pooled_connections_without_taking_them() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = crate::config::Config::embedded().unwrap().gateway;
        let authority = Authority::try_from(l.local_addr().unwrap().to_string()).unwrap();
        let up = Arc::new(H1Upstream::new(
            authority,
            &cfg,
            16 * 1024,
            Duration::from_secs(5),
            4,
        ));
        assert!(!up.has_idle());
        let conn = up.connecting().await.unwrap();
        let _accepted = l.accept().await.unwrap();
        up.put(conn);
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
}
