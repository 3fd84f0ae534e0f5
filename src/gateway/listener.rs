//! The listen socket and the accept loop. A connection the admission
//! chain refuses gets its socket reset (`SO_LINGER` 0, so no TIME_WAIT
//! piles up here) and a counted drop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::admission::admit_connection;
use super::error::GatewayError;
use super::inner::Inner;
use crate::client::ClientKey;

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
    match admit_connection(inner, ip) {
        Ok(guard) => {
            let _ = stream.set_nodelay(true);
            tracker.spawn(super::conn::serve(inner.clone(), stream, ip, guard));
        }
        Err(reason) => {
            inner
                .stats
                .drop_for(&ClientKey::Ip(ip), reason, Instant::now());
            let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}
