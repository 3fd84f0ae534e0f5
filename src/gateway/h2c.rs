//! One `h2c://` upstream: a single HTTP/2 prior-knowledge connection that
//! every request to it multiplexes over, reopened when it closes (GOAWAY,
//! reset, keep-alive timeout).
//!
//! hyper's connection API (`hyper::client::conn::http2`) speaks the
//! protocol; this only keeps the current `SendRequest`. It is lighter than
//! hyper-util's pooled client: a request here is hyper's ~100-byte response
//! future, not a boxed 3.4 KiB pool-checkout future, which matters when
//! thousands of streams wait on a slow upstream. Requests in flight when
//! the connection fails get an error (502), and are not retried.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::Either;
use futures::TryFutureExt;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::ProxyBody;
use crate::config::GatewayConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct H2cUpstream {
    authority: Authority,
    builder: http2::Builder<TokioExecutor>,
    socket_buffer: usize,
    /// The live connection's sender. std `Mutex`: held only to clone or
    /// replace it, never across an await.
    current: Mutex<Option<http2::SendRequest<ProxyBody>>>,
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
    pub(crate) fn new(authority: Authority, cfg: &GatewayConfig) -> Self {
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
            authority,
            builder,
            socket_buffer: usize::try_from(cfg.socket_buffer).unwrap_or(usize::MAX),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn live(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect(&self) -> Result<http2::SendRequest<ProxyBody>, H2cError> {
        let _one = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let fail = |e: String| H2cError::Connect(self.authority.clone(), e);
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_send_buffer_size(self.socket_buffer);
        let _ = sock.set_recv_buffer_size(self.socket_buffer);
        let (send, conn) = self.builder.handshake(TokioIo::new(tcp)).await?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %authority, error = %e, "h2c upstream connection ended");
            }
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(send.clone());
        Ok(send)
    }

    /// Sends one request on the live connection (the usual case: the
    /// returned future is hyper's own, ~300 bytes, nothing boxed), or
    /// connects first (boxed: the connect and handshake futures are large
    /// and rare). Cancel-safe: dropping it resets the stream.
    pub(crate) fn request(
        this: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, H2cError>> + Send + 'static {
        match this.live() {
            Some(mut send) => Either::Left(send.send_request(req).map_err(H2cError::from)),
            None => {
                let this = this.clone();
                Either::Right(Box::pin(async move {
                    let mut send = this.connect().await?;
                    Ok(send.send_request(req).await?)
                }))
            }
        }
    }
}
