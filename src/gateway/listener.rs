//! The listen socket, accept-time refusals and connection counting.
//!
//! Refusals at accept cost no TLS or HTTP work: an isolated client IP, the
//! memory governor shedding, or a connection limit (overall or per IP) gets
//! its socket reset (`SO_LINGER` 0, so no TIME_WAIT piles up here) and a
//! counted drop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::{GatewayError, Inner};
use crate::client::ClientKey;
use crate::config::GatewayConfig;
use crate::stats::{DropReason, Stats};

/// Binds `addr` with `SO_REUSEADDR` and the socket buffer sizes, which
/// accepted sockets inherit (the receive buffer must be set before the
/// handshake to bound the advertised TCP window).
pub(crate) fn bind(addr: SocketAddr, socket_buffer: u32) -> Result<TcpListener, GatewayError> {
    let err = |e: std::io::Error| GatewayError::Bind {
        addr,
        reason: bind_reason(addr, &e),
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    let size = usize::try_from(socket_buffer).unwrap_or(usize::MAX);
    socket.set_recv_buffer_size(size).map_err(err)?;
    socket.set_send_buffer_size(size).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

fn bind_reason(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            format!("{e} (ports below 1024 need CAP_NET_BIND_SERVICE)")
        }
        _ => e.to_string(),
    }
}

/// Counts open connections overall and per client IP.
/// std `Mutex`: held for one hash-map operation at accept and at close,
/// never across an await.
pub(crate) struct ConnLimiter {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimiter {
    pub(crate) fn new(cfg: &GatewayConfig) -> Self {
        Self {
            max_total: cfg.max_connections,
            max_per_client: cfg.max_connections_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one connection from `ip`, or `None` over either limit.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        stats: &Arc<Stats>,
    ) -> Option<ConnGuard> {
        if self.total.fetch_add(1, Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Relaxed);
            return None;
        }
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            drop(map);
            self.total.fetch_sub(1, Relaxed);
            return None;
        }
        *n += 1;
        stats.gateway.connections.fetch_add(1, Relaxed);
        Some(ConnGuard {
            limiter: self.clone(),
            stats: stats.clone(),
            ip,
        })
    }
}

/// One open connection; releases its slots on drop.
pub(crate) struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    stats: Arc<Stats>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.limiter.total.fetch_sub(1, Relaxed);
        self.stats.gateway.connections.fetch_sub(1, Relaxed);
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d` (dual-stack listeners).
pub(crate) fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Accepts until cancelled. Cancel-safe: `accept` loses no connection when
/// the select drops it.
pub(crate) async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => admit(&inner, &tracker, stream, client_ip(peer)),
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::select! {
                    _ = inner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
    }
    tracing::debug!("gateway stopped accepting");
}

fn admit(inner: &Arc<Inner>, tracker: &TaskTracker, stream: TcpStream, ip: IpAddr) {
    let key = ClientKey::Ip(ip);
    let refuse = |reason| {
        inner.stats.drop_for(&key, reason, Instant::now());
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    };
    if inner.isolation.is_isolated(&key) {
        return refuse(DropReason::Isolated);
    }
    if inner.admission.shedding() {
        return refuse(DropReason::Overload);
    }
    let Some(guard) = inner.conns.try_acquire(ip, &inner.stats) else {
        return refuse(DropReason::ConnLimit);
    };
    let _ = stream.set_nodelay(true);
    tracker.spawn(super::conn::serve(inner.clone(), stream, ip, guard));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Connections from ever new source addresses add entries only while
    /// they are open: the per-IP map never holds more than
    /// `max_connections` addresses, and is empty once they close.
    #[test]
    fn per_ip_map_is_bounded_by_open_connections() {
        let mut cfg = Config::embedded().unwrap().gateway;
        cfg.max_connections = 4;
        cfg.max_connections_per_client = 2;
        let limiter = Arc::new(ConnLimiter::new(&cfg));
        let stats = Stats::new(16);
        let guards: Vec<ConnGuard> = (0..1_000u32)
            .filter_map(|i| {
                limiter.try_acquire(IpAddr::from((127 << 24 | i).to_be_bytes()), &stats)
            })
            .collect();
        assert_eq!(guards.len(), 4);
        let entries = || limiter.per_client.lock().unwrap().len();
        assert_eq!(entries(), 4);
        drop(guards);
        assert_eq!(entries(), 0);
        let one = IpAddr::from([127, 0, 0, 1]);
        let two: Vec<_> = (0..5)
            .filter_map(|_| limiter.try_acquire(one, &stats))
            .collect();
        assert_eq!(two.len(), 2, "per-IP limit");
        assert_eq!(entries(), 1);
    }
}
