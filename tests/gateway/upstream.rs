//! h2c upstreams (`upstream = "h2c://…"`) against real HTTP/2 servers
//! written here (hyper for a well-behaved one, the `h2` crate for one that
//! resets streams or sends GOAWAY), and the route timeout covering the
//! whole response (a body that stalls is cut off, counted, released).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vpcbox::stats::DropReason;

use super::support::*;

/// What a test HTTP/2 upstream does with each stream.
#[derive(Clone, Copy)]
enum H2Up {
    /// hyper: answers `{path} v={version}` after the delay.
    Echo(Duration),
    /// hyper: sends headers and one chunk, then never finishes the body.
    StallBody,
    /// h2: resets every stream (INTERNAL_ERROR) without answering.
    Reset,
    /// h2: on the first stream of a connection, GOAWAY and close.
    GoAway,
}

/// An HTTP/2 prior-knowledge upstream on 127.0.0.1:0 and the number of
/// connections it has accepted.
async fn h2_upstream(kind: H2Up) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, accepted, _) = h2_upstream_counted(kind).await;
    (addr, accepted)
}

/// [`h2_upstream`], also counting the connections open now.
async fn h2_upstream_counted(kind: H2Up) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (addr, c) = counted_upstream(move |s| serve_h2(s, kind)).await;
    (addr, c.accepted, c.open)
}

async fn serve_h2(s: tokio::net::TcpStream, kind: H2Up) {
    match kind {
        H2Up::Echo(_) | H2Up::StallBody => {
            let svc = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let echo = format!("{} v={:?}", req.uri().path(), req.version());
                    let _ = req.into_body().collect().await;
                    let body = match kind {
                        H2Up::Echo(d) => {
                            tokio::time::sleep(d).await;
                            http_body_util::Either::Left(Full::new(Bytes::from(echo)))
                        }
                        _ => http_body_util::Either::Right(http_body_util::StreamBody::new(
                            futures::stream::iter([Ok::<_, std::convert::Infallible>(
                                hyper::body::Frame::data(Bytes::from_static(b"first")),
                            )])
                            .chain(futures::stream::pending()),
                        )),
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                },
            );
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(10_000)
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
        H2Up::Reset | H2Up::GoAway => {
            let Ok(mut conn) = h2::server::handshake(s).await else {
                return;
            };
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                match kind {
                    H2Up::Reset => respond.send_reset(h2::Reason::INTERNAL_ERROR),
                    _ => {
                        conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                        break;
                    }
                }
            }
            let _ = std::future::poll_fn(|cx| conn.poll_closed(cx)).await;
        }
    }
}

fn h2c_route(prefix: &str, addr: SocketAddr, max_pending: usize, timeout: &str) -> String {
    route(prefix, addr, max_pending, timeout).replace("http://", "h2c://")
}

use futures::StreamExt;

/// Runs `n` requests, `conc` at a time, and returns their status codes.
async fn burst(c: &TestClient, url: &str, n: usize, conc: usize, body: Bytes) -> Vec<u16> {
    futures::stream::iter(0..n)
        .map(|i| {
            let (c, url, body) = (c.clone(), url.to_owned(), body.clone());
            async move {
                let method = if i % 2 == 0 { "GET" } else { "POST" };
                let body = if i % 2 == 0 { Bytes::new() } else { body };
                tokio::time::timeout(Duration::from_secs(10), send(&c, method, &url, body))
                    .await
                    .map_or(0, |r| {
                        r.map_or_else(
                            |e| {
                                eprintln!("request failed: {e}");
                                1
                            },
                            |r| r.0,
                        )
                    })
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_multiplexes_streams_on_one_connection() {
    let _s = serial().await;
    let (up, conns) = h2_upstream(H2Up::Echo(Duration::from_millis(300))).await;
    let gw = TestGateway::start(config("", &h2c_route("/h2/", up, 256, "5s"))).await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        let codes = burst(&c, &gw.url("/h2/x"), 100, 100, Bytes::from_static(b"body")).await;
        assert!(codes.iter().all(|c| *c == 200), "h2={h2}: {codes:?}");
        let (_, _, body) = get(&c, &gw.url("/h2/a/b")).await;
        assert_eq!(body, "/a/b v=HTTP/2.0");
    }
    assert_eq!(
        conns.load(Relaxed),
        1,
        "200 requests (100 concurrent) on one upstream connection"
    );
    assert_released(&gw, "h2").await;
}

/// An upstream connection that went idle is closed — it keeps the stream
/// tables its busiest moment grew — but only after the streams still in
/// flight on it have finished; the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_connection_is_closed_once_idle() {
    let _s = serial().await;
    // Each answer takes longer than the idle period (1 s) plus a check.
    let (up, accepted, open) = h2_upstream_counted(H2Up::Echo(Duration::from_millis(2500))).await;
    let gw = TestGateway::start(config("", &h2c_route("/h2/", up, 256, "10s"))).await;
    let c = client("127.0.0.1", true);
    let codes = burst(&c, &gw.url("/h2/x"), 50, 50, Bytes::from_static(b"body")).await;
    assert!(
        codes.iter().all(|c| *c == 200),
        "retired mid-stream: {codes:?}"
    );
    assert_eq!(accepted.load(Relaxed), 1, "one connection for the burst");
    assert!(
        eventually(Duration::from_secs(3), || open.load(Relaxed) == 0).await,
        "the idle upstream connection is still open"
    );
    let (code, _, body) = get(&c, &gw.url("/h2/again")).await;
    assert_eq!(code, 200);
    assert_eq!(body, "/again v=HTTP/2.0");
    assert_eq!(accepted.load(Relaxed), 2, "the next request reconnected");
    assert_released(&gw, "h2").await;
}

/// 502 for a reset stream or a refused one; a request racing a GOAWAY can
/// also wait out the route timeout (504, rare) — bounded either way.
fn failed(route: &str, code: u16) -> bool {
    code == 502 || (route == "goaway" && code == 504)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_resets_and_goaways_do_not_leak() {
    let _s = serial().await;
    let (reset, _) = h2_upstream(H2Up::Reset).await;
    let (goaway, goaway_conns) = h2_upstream(H2Up::GoAway).await;
    let routes = h2c_route("/reset/", reset, 64, "2s") + &h2c_route("/goaway/", goaway, 64, "2s");
    // A POST body that has not arrived whole when its 502 goes out is cut
    // short: the gateway resets that stream, and on a busy machine enough
    // of those trip its MadeYouReset guard (GOAWAY "too_many_internal_resets"
    // to this client; tested in h2attack). Raised here: this test is about
    // the upstream side.
    let gw = TestGateway::start(config(
        "per_client_rate = \"100000/s\"\nper_client_burst = 100000\n\
         max_local_error_reset_streams = 100000",
        &routes,
    ))
    .await;
    let c = client("127.0.0.1", true);
    // Small, so that it mostly arrives whole before the 502.
    let body = Bytes::from(vec![7u8; 1000]);
    for name in ["reset", "goaway"] {
        let url = gw.url(&format!("/{name}/x"));
        // Warm-up (connections, pools, tables), then the measured round.
        let codes = burst(&c, &url, 200, 32, body.clone()).await;
        let other: Vec<_> = codes.iter().filter(|c| !failed(name, **c)).collect();
        assert!(other.is_empty(), "{name} warm-up: {other:?}");
        assert_released(&gw, name).await;
        let base = heap_allocated();
        let codes = burst(&c, &url, 1000, 32, body.clone()).await;
        let other: Vec<_> = codes.iter().filter(|c| !failed(name, **c)).collect();
        assert!(other.is_empty(), "{name}: {other:?}");
        assert_released(&gw, name).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let grown = heap_allocated().saturating_sub(base);
        eprintln!(
            "{name}: heap growth over 1000 requests {} KiB",
            grown / 1024
        );
        assert!(grown < MIB, "{name}: heap grew {} KiB", grown / 1024);
    }
    assert!(goaway_conns.load(Relaxed) >= 2, "GOAWAY made it reconnect");
    assert!(gw.stats().drops(DropReason::Upstream) >= 2400);
}

/// An HTTP/1.1 upstream that sends headers and 10 of 1000 body bytes.
async fn stalling_body_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_cuts_off_a_stalled_response_body() {
    let _s = serial().await;
    let h1 = stalling_body_upstream().await;
    let (h2, _) = h2_upstream(H2Up::StallBody).await;
    let routes = route("/h1/", h1, 8, "400ms") + &h2c_route("/h2/", h2, 8, "400ms");
    let gw = TestGateway::start(config("", &routes)).await;
    let mut cut = 0;
    for down_h2 in [true, false] {
        let c = client("127.0.0.1", down_h2);
        for path in ["/h1/x", "/h2/x"] {
            let started = Instant::now();
            let req = http::Request::get(gw.url(path))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "{path}: headers came in time");
            let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
                .await
                .expect("cut off, not left hanging");
            assert!(body.is_err(), "{path} h2={down_h2}: a cut body must fail");
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(350) && took < Duration::from_secs(3),
                "{path} h2={down_h2}: {took:?}"
            );
            cut += 1;
        }
    }
    assert!(
        eventually(Duration::from_secs(1), || gw
            .stats()
            .drops(DropReason::Timeout)
            >= cut)
        .await
    );
    let me = vpcbox::client::ClientKey::Ip("127.0.0.1".parse().unwrap());
    let row = gw.stats().clients.get(&me, Instant::now()).unwrap();
    assert!(
        row.drops_by_reason
            .iter()
            .any(|(r, n)| *r == DropReason::Timeout && *n >= cut),
        "{row:?}"
    );
    assert_released(&gw, "h1").await;
    assert_released(&gw, "h2").await;
}
