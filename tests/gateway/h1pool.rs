//! The HTTP/1.1 upstream pool: connections reused one request at a time,
//! closed when the upstream says so or goes away, closed after idling, and
//! response headers bounded by the connection's read buffer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

/// What a raw HTTP/1.1 test upstream does after each request head.
#[derive(Clone, Copy)]
enum Raw {
    /// Answers `ok` and keeps the connection for the next request.
    KeepAlive,
    /// Answers with `Connection: close`, then closes.
    Close,
    /// Answers (no `Connection: close`), then closes at once.
    SilentClose,
    /// Answers with an `x-big` header of this many bytes, keeps the
    /// connection.
    BigHeader(usize),
    /// Answers the first request and keeps the connection, then closes it
    /// on the second one without answering: an upstream whose keep-alive
    /// timeout ran out as that request reached it.
    DropSecond,
}

/// A raw HTTP/1.1 upstream on 127.0.0.1:0 (bodiless requests only).
async fn raw_upstream(kind: Raw) -> (SocketAddr, Counts) {
    counted_upstream(move |s| serve_raw(s, kind)).await
}

async fn serve_raw(mut s: tokio::net::TcpStream, kind: Raw) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        // One request head (no bodies in these tests).
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.clear();
        served += 1;
        if matches!(kind, Raw::DropSecond) && served == 2 {
            return;
        }
        let resp = match kind {
            Raw::KeepAlive | Raw::SilentClose | Raw::DropSecond => {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()
            }
            Raw::Close => {
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_owned()
            }
            Raw::BigHeader(n) => format!(
                "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
                "b".repeat(n)
            ),
        };
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        if matches!(kind, Raw::Close | Raw::SilentClose) {
            return;
        }
    }
}

/// No per-client quota: these tests send hundreds of requests from one IP.
const UNLIMITED: &str = "per_client_rate = \"100000/s\"\nper_client_burst = 100000";

async fn ok_get(c: &TestClient, url: &str) {
    let (code, _, body) = get(c, url).await;
    assert_eq!((code, &body[..]), (200, &b"ok"[..]), "{url}");
}

/// Runs `n` GETs, `conc` at a time; all must answer 200.
async fn concurrent_gets(c: &TestClient, url: &str, n: usize, conc: usize) {
    use futures::StreamExt;
    let codes: Vec<u16> = futures::stream::iter(0..n)
        .map(|_| {
            let (c, url) = (c.clone(), url.to_owned());
            async move { get(&c, &url).await.0 }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_connections_are_reused() {
    let _s = serial().await;
    let (up, n) = raw_upstream(Raw::KeepAlive).await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "5s"))).await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for _ in 0..20 {
            ok_get(&c, &gw.url("/up/x")).await;
        }
    }
    assert_eq!(
        n.accepted.load(Relaxed),
        1,
        "40 requests in turn, one connection"
    );
    // 8 at a time need 8 connections; a lease can come back a moment
    // after its client has its answer (the connection task finishing on
    // the other worker), so allow one or two more — not one per request.
    let c = client("127.0.0.1", true);
    for _ in 0..2 {
        concurrent_gets(&c, &gw.url("/up/x"), 200, 8).await;
    }
    let opened = n.accepted.load(Relaxed);
    assert!(
        opened <= 10,
        "400 requests, 8 at a time: {opened} connections"
    );
    assert_released(&gw, "up").await;
}

/// An upstream that answers `Connection: close`, or closes after answering
/// without saying so, costs a connection per request but never a failed
/// request: a closed connection is not reused, and one found closed before
/// the request went out is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_closing_connections_are_not_reused() {
    let _s = serial().await;
    let (close, closed) = raw_upstream(Raw::Close).await;
    let (silent, silently) = raw_upstream(Raw::SilentClose).await;
    let routes = route("/close/", close, 64, "5s") + &route("/silent/", silent, 64, "5s");
    let gw = TestGateway::start(config(UNLIMITED, &routes)).await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for _ in 0..10 {
            ok_get(&c, &gw.url("/close/x")).await;
            ok_get(&c, &gw.url("/silent/x")).await;
        }
    }
    assert_eq!(closed.accepted.load(Relaxed), 20);
    assert_eq!(silently.accepted.load(Relaxed), 20);
    assert!(
        eventually(Duration::from_secs(2), || closed.open.load(Relaxed) == 0
            && silently.open.load(Relaxed) == 0)
        .await
    );
    assert_released(&gw, "close").await;
    assert_released(&gw, "silent").await;
}

/// Idle connections are closed after the pool's idle time (1 s, swept
/// every second); the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_idle_connections_are_closed() {
    let _s = serial().await;
    let (up, n) = raw_upstream(Raw::KeepAlive).await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "5s"))).await;
    let c = client("127.0.0.1", true);
    concurrent_gets(&c, &gw.url("/up/x"), 100, 10).await;
    assert!(n.open.load(Relaxed) >= 1);
    assert!(
        eventually(Duration::from_secs(4), || n.open.load(Relaxed) == 0).await,
        "{} idle upstream connections still open",
        n.open.load(Relaxed)
    );
    let before = n.accepted.load(Relaxed);
    ok_get(&c, &gw.url("/up/x")).await;
    assert_eq!(n.accepted.load(Relaxed), before + 1);
}

/// Response headers up to the connection's buffer cap (24 KiB with the
/// shipped `max_header_list_size`) pass; larger ones are a 502, and the
/// route keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_oversized_response_headers_get_502() {
    let _s = serial().await;
    let (big, _) = raw_upstream(Raw::BigHeader(12 * 1024)).await;
    let (huge, huge_n) = raw_upstream(Raw::BigHeader(30 * 1024)).await;
    let routes = route("/big/", big, 8, "5s") + &route("/huge/", huge, 8, "5s");
    let gw = TestGateway::start(config(UNLIMITED, &routes)).await;
    for h2 in [false, true] {
        let c = client("127.0.0.1", h2);
        let (code, headers, body) = get(&c, &gw.url("/big/x")).await;
        assert_eq!((code, &body[..]), (200, &b"ok"[..]), "h2={h2}");
        assert_eq!(headers["x-big"].len(), 12 * 1024);
        for _ in 0..3 {
            let (code, _, body) = get(&c, &gw.url("/huge/x")).await;
            assert_eq!(code, 502, "h2={h2}");
            assert_eq!(error_code(&body), "upstream", "h2={h2}");
        }
    }
    assert_eq!(
        huge_n.accepted.load(Relaxed),
        6,
        "a failed connection is not reused"
    );
    assert!(eventually(Duration::from_secs(2), || huge_n.open.load(Relaxed) == 0).await);
    assert_released(&gw, "huge").await;
}

/// A pooled connection the upstream closes as a request reaches it (its
/// keep-alive timeout), before any byte of an answer: an idempotent
/// request without a body is sent once more on a new connection and
/// answered; a POST is not sent twice (502, the upstream may have acted on
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_upstream_closed_under_an_idempotent_request_is_retried_once() {
    let _s = serial().await;
    let (up, n) = raw_upstream(Raw::DropSecond).await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "5s"))).await;
    let c = client("127.0.0.1", true);
    let url = gw.url("/up/x");
    for method in ["GET", "PUT", "DELETE"] {
        let before = n.accepted.load(Relaxed);
        // The first request opens a connection and leaves it pooled; the
        // second finds it, and the upstream closes it unanswered.
        for i in 0..2 {
            let (code, _, _) = send(&c, method, &url, Bytes::new()).await.expect("request");
            assert_eq!(code, 200, "{method} #{i}");
        }
        assert_eq!(
            n.accepted.load(Relaxed),
            before + 2,
            "{method}: the second request went out once more, on a new connection"
        );
        // Let the upstream's copy of the retried connection serve its one
        // request, so the next round starts from a connection it answers.
        assert!(eventually(Duration::from_secs(2), || n.open.load(Relaxed) <= 1).await);
    }
    // Fresh state for the POST: only new connections from here.
    let (up, n) = raw_upstream(Raw::DropSecond).await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "5s"))).await;
    let url = gw.url("/up/x");
    let (code, _, _) = send(&c, "POST", &url, Bytes::new()).await.expect("request");
    assert_eq!(code, 200);
    let (code, _, body) = send(&c, "POST", &url, Bytes::new()).await.expect("request");
    assert_eq!((code, error_code(&body).as_str()), (502, "upstream"));
    assert_eq!(n.accepted.load(Relaxed), 1, "a POST is not sent twice");
    assert_released(&gw, "up").await;
}
