//! The slow upstream behind the replay's route: an HTTP/1.1 server that
//! waits `delay` (the finale's requests: `hold`), then reads the body and
//! answers `200 ok`. Reading late, with a small receive buffer, makes the
//! request bodies back up into the gateway as in the incident.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Receive buffer of every upstream connection (inherited from the listener).
const RECV_BUFFER: u32 = 16 << 10;

/// How long the upstream waits before reading and answering.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub delay: Duration,
    /// For the finale's requests.
    pub hold: Duration,
}

/// A running slow upstream; stops when `cancel` fires.
pub struct SlowUpstream {
    pub addr: SocketAddr,
}

impl SlowUpstream {
    /// Binds `127.0.0.1:port` (0 = any) and serves until `cancel`.
    pub async fn start(
        port: u16,
        delays: Delays,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = listen(port)
            .map_err(|e| anyhow::anyhow!("slow upstream: binding 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr()?;
        tokio::spawn(accept_loop(listener, delays, cancel));
        Ok(Self { addr })
    }
}

fn listen(port: u16) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_recv_buffer_size(RECV_BUFFER)?;
    s.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.listen(4096)
}

async fn accept_loop(listener: TcpListener, delays: Delays, cancel: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| answer(req, delays));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = conn => {}
            }
        });
    }
    tracker.close();
}

async fn answer(
    req: Request<Incoming>,
    delays: Delays,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let wait = if req.uri().path().ends_with("finale") {
        delays.hold
    } else {
        delays.delay
    };
    tokio::time::sleep(wait).await;
    let _ = req.into_body().collect().await;
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn answers_after_the_delay() {
        let cancel = CancellationToken::new();
        let delays = Delays {
            delay: Duration::from_millis(150),
            hold: Duration::from_secs(60),
        };
        let up = SlowUpstream::start(0, delays, cancel.clone())
            .await
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(up.addr).await.unwrap();
        let t0 = std::time::Instant::now();
        s.write_all(b"POST /replay-slow/x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("ok\n"));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        cancel.cancel();
    }
}
