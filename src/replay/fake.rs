//! Test doubles of the target: a toy relay-aware DHCP server and an HTTP
//! server (HTTP/1.1 + h2c) with the endpoints the replay uses. They let the
//! whole pipeline run in unit tests without the real appliance.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable as _, Encodable as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// OFFER for DISCOVER, ACK for REQUEST, each to giaddr:<own port> as the
/// real server does; ignores anything else.
pub async fn toy_dhcp() -> (SocketAddr, CancellationToken) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = sock.recv_from(&mut buf) => r.unwrap(),
            };
            let Ok(req) = Message::from_bytes(&buf[..len]) else {
                continue;
            };
            let reply = match req.opts().msg_type() {
                Some(MessageType::Discover) => MessageType::Offer,
                Some(MessageType::Request) => MessageType::Ack,
                _ => continue,
            };
            let mut m = req.clone();
            m.set_opcode(Opcode::BootReply);
            m.set_yiaddr(Ipv4Addr::new(10, 200, 1, 7));
            m.opts_mut().clear();
            m.opts_mut().insert(DhcpOption::MessageType(reply));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 200, 0, 1)));
            let to = SocketAddr::from((req.giaddr(), addr.port()));
            let _ = sock.send_to(&m.to_vec().unwrap(), to).await;
        }
    });
    (addr, cancel)
}

/// `/healthz`, `/readyz`, `/metrics` (a fixed 50 MiB RSS and the live
/// pending count), the two IPAM calls, and `/replay-slow/*` answered after
/// 50 ms; HTTP/1.1 and h2c on one port. The counter is the request-body
/// bytes the slow route received.
pub async fn http_target() -> (SocketAddr, CancellationToken, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let pending = Arc::new(AtomicI64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let received = bytes.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a.unwrap(),
            };
            let (pending, stop, bytes) = (pending.clone(), stop.clone(), bytes.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| serve(req, pending.clone(), bytes.clone()));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    (addr, cancel, received)
}

async fn serve(
    req: Request<Incoming>,
    pending: Arc<AtomicI64>,
    bytes: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let text = if path == "/metrics" {
        format!(
            "vpcbox_memory_rss_bytes {}\nvpcbox_gateway_pending{{route=\"replay_slow\"}} {}\nvpcbox_overload_state 0\n",
            50 << 20,
            pending.load(Ordering::Relaxed)
        )
    } else if path.starts_with("/replay-slow/") {
        pending.fetch_add(1, Ordering::Relaxed);
        if let Ok(body) = req.into_body().collect().await {
            bytes.fetch_add(body.to_bytes().len() as u64, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        pending.fetch_sub(1, Ordering::Relaxed);
        "ok".into()
    } else if path.starts_with("/v1/") || path == "/healthz" || path == "/readyz" {
        "{}".into()
    } else {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = http::StatusCode::NOT_FOUND;
        return Ok(r);
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}
