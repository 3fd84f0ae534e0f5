//! One connection: optional TLS handshake, the HTTP server connection, the
//! watchdog ([`super::activity`]) for what hyper has no timer for, and
//! shutdown: GOAWAY, then a drain of at most the grace time.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::activity::{watchdog, Activity, Verdict};
use super::inner::Inner;
use super::limiters::ConnGuard;
use super::streams::Streams;
use super::{limits, service};
use crate::client::ClientKey;
use crate::stats::DropReason;

/// Serves one accepted connection to completion; `_guard` releases its
/// connection slots when this returns. Cancel-safe in the sense that
/// dropping it closes the connection.
pub(crate) async fn serve(inner: Arc<Inner>, stream: TcpStream, ip: IpAddr, _guard: ConnGuard) {
    let Some(acceptor) = inner.tls.clone() else {
        return drive(&inner, TokioIo::new(stream), ip).await;
    };
    let handshake = tokio::select! {
        _ = inner.cancel.cancelled() => return,
        r = tokio::time::timeout(inner.cfg.header_read_timeout, acceptor.accept(stream)) => r,
    };
    match handshake {
        Ok(Ok(tls)) => drive(&inner, TokioIo::new(tls), ip).await,
        Ok(Err(e)) => tracing::debug!(client = %ip, error = %e, "tls handshake failed"),
        Err(_) => inner.stats.drop_for(
            &ClientKey::Ip(ip),
            DropReason::Timeout,
            std::time::Instant::now(),
        ),
    }
}

/// Runs the HTTP connection with the watchdog and shutdown. Cancel-safe:
/// dropping it drops the connection (and, through the bodies, every
/// request's guards).
async fn drive<I>(inner: &Arc<Inner>, io: I, ip: IpAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let act = Arc::new(Activity::new());
    let svc = {
        let (inner, act) = (inner.clone(), act.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            service::handle(&inner, ip, act.begin(), req)
        })
    };
    let streams = Streams::new(inner.response.clone());
    let http = limits::http_builder(&inner.cfg, streams.spawner());
    let conn = http.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut drain_until: Option<Instant> = None;
    let cfg = &inner.cfg;
    loop {
        let drain_timer = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = streams.serve(conn.as_mut()) => {
                match r {
                    Some(Err(e)) => tracing::debug!(client = %ip, error = %e, "gateway connection ended"),
                    None => tracing::debug!(client = %ip, "gateway connection reset for its buffered response bytes"),
                    Some(Ok(())) => {}
                }
                return;
            }
            _ = inner.cancel.cancelled(), if drain_until.is_none() => {
                conn.as_mut().graceful_shutdown();
                drain_until = Some(Instant::now() + inner.grace);
            }
            v = watchdog(&act, cfg.header_read_timeout, cfg.idle_timeout), if drain_until.is_none() => {
                if let Verdict::Close = v {
                    inner.stats.drop_for(&ClientKey::Ip(ip), DropReason::Timeout, std::time::Instant::now());
                    return;
                }
                conn.as_mut().graceful_shutdown();
                drain_until = Some(Instant::now() + cfg.header_read_timeout);
            }
            _ = drain_timer => return,
        }
    }
}
