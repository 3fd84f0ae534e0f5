//! One `h2c://` upstream: a single HTTP/2 prior-knowledge connection that
//! every request multiplexes over, reopened when it closes (GOAWAY, reset,
//! keep-alive timeout). A connection with no new request for a whole idle
//! period is retired (hyper closes it once its streams finish), so the
//! stream tables a burst grew do not stay resident. Only the current
//! `SendRequest` is kept: a request is hyper's small response future, not
//! a boxed pool checkout. Requests in flight when the connection fails get
//! a 502 and are not retried.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::Either;
use futures::TryFutureExt;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::ProxyBody;
use super::connect::{Target, CONNECT_TIMEOUT};
use crate::config::GatewayConfig;

pub(crate) struct H2cUpstream {
    authority: Authority,
    target: Target,
    builder: http2::Builder<TokioExecutor>,
    socket_buffer: u32,
    /// The live connection's sender and its number (which connection an
    /// idle watch may retire). std `Mutex`: held only to clone, replace or
    /// take it, never across an await.
    current: Mutex<Option<(u64, http2::SendRequest<ProxyBody>)>>,
    /// Connections opened so far (numbers them).
    opened: AtomicU64,
    /// Requests sent so far; a connection's idle watch retires it after a
    /// period in which this did not move.
    sent: AtomicU64,
    /// How long a connection may go without a new request.
    idle: Duration,
    /// Serialises reconnects so a burst opens one connection, not one per
    /// request. tokio `Mutex`: held across the connect.
    connecting: tokio::sync::Mutex<()>,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H2cError {
    #[error("connecting to {0}: {1}")]
    Connect(Authority, String),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl H2cUpstream {
    /// The same bounded windows, frame and header limits and keep-alive as
    /// the downstream side; no adaptive window growth.
    pub(crate) fn new(authority: Authority, cfg: &GatewayConfig, idle: Duration) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(cfg.initial_stream_window)
            .initial_connection_window_size(cfg.initial_connection_window)
            .adaptive_window(false)
            .max_frame_size(cfg.max_frame_size)
            .max_header_list_size(cfg.max_header_list_size)
            .max_send_buf_size(cfg.max_send_buffer)
            .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(cfg.max_local_error_reset_streams)
            .keep_alive_interval(cfg.keepalive_interval)
            .keep_alive_timeout(cfg.keepalive_timeout);
        Self {
            target: Target::of(&authority),
            authority,
            builder,
            socket_buffer: cfg.socket_buffer,
            current: Mutex::new(None),
            opened: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            idle,
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.as_ref()
            .map(|(_, s)| s)
            .filter(|s| !s.is_closed())
            .cloned()
    }

    /// Forgets connection `id` if it is still the current one. Dropping
    /// the last `SendRequest` lets hyper shut the connection down once the
    /// streams in flight on it are done; new requests open another.
    fn retire(&self, id: u64) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let retired = match cur.as_ref() {
            Some((n, _)) if *n == id => cur.take(),
            _ => None,
        };
        drop(cur);
        drop(retired);
    }

    async fn connect(this: &Arc<Self>) -> Result<http2::SendRequest<ProxyBody>, H2cError> {
        let _one = this.connecting.lock().await;
        if let Some(s) = this.live() {
            return Ok(s);
        }
        let fail = |e: String| H2cError::Connect(this.authority.clone(), e);
        // Port 80 when the URL gives none; buffers capped before the SYN.
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, this.target.connect(this.socket_buffer))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let (send, conn) = this.builder.handshake(TokioIo::new(tcp)).await?;
        let id = this.opened.fetch_add(1, Relaxed);
        tokio::spawn(drive(
            conn,
            Arc::downgrade(this),
            id,
            this.authority.clone(),
        ));
        *this.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, send.clone()));
        Ok(send)
    }

    /// Sends one request on the live connection (the usual case: hyper's
    /// own future, nothing boxed), or connects first (boxed: the connect
    /// and handshake futures are large and rare). Cancel-safe: dropping it resets the stream.
    pub(crate) fn request(
        this: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, H2cError>> + Send + 'static {
        this.sent.fetch_add(1, Relaxed);
        match this.live() {
            Some(mut send) => Either::Left(send.send_request(req).map_err(H2cError::from)),
            None => {
                let this = this.clone();
                Either::Right(Box::pin(async move {
                    let mut send = Self::connect(&this).await?;
                    Ok(send.send_request(req).await?)
                }))
            }
        }
    }
}

/// Drives connection `id` to its end, retiring it from `up` after an idle
/// period without a new request (see the module docs). Holds only a weak
/// reference, so replaced routes (SIGHUP) drop their upstream and with it
/// the connection. Cancel-safe: dropping it drops the connection.
async fn drive(
    conn: http2::Connection<TokioIo<tokio::net::TcpStream>, ProxyBody, TokioExecutor>,
    up: Weak<H2cUpstream>,
    id: u64,
    authority: Authority,
) {
    let ended = |r: Result<(), hyper::Error>| {
        if let Err(e) = r {
            tracing::debug!(upstream = %authority, error = %e, "h2c upstream connection ended");
        }
    };
    tokio::pin!(conn);
    let Some(idle) = up.upgrade().map(|u| u.idle) else {
        return ended(conn.await);
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    // Late ticks must not come back to back: two looks a moment apart
    // would see no request between them and retire a busy connection.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => return ended(r),
            _ = tick.tick() => {
                let Some(up) = up.upgrade() else { break };
                let sent = up.sent.load(Relaxed);
                if seen == Some(sent) {
                    up.retire(id);
                    break;
                }
                seen = Some(sent);
            }
        }
    }
    // Retired: the streams in flight finish, then hyper closes it.
    ended(conn.await);
}
