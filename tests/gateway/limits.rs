//! Gateway limits with real clients: protocols on one port, per-client
//! quota, route pending cap, body budget, isolation and connection limits
//! at accept, overload shedding, upstream failures that must not leak,
//! graceful shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpcbox::client::ClientKey;
use vpcbox::stats::DropReason;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_on_one_port_with_json_errors() {
    let _s = serial().await;
    let gw = TestGateway::start(config("", "")).await;
    for h2 in [false, true] {
        let c = client("127.0.0.1", h2);
        let (code, _, body) = get(&c, &gw.url("/healthz")).await;
        assert_eq!(code, 200, "h2={h2}: {body:?}");
        let (code, headers, body) = get(&c, &gw.url("/v1/nothing")).await;
        assert_eq!((code, error_code(&body).as_str()), (404, "not_found"));
        assert_eq!(headers["content-type"], "application/json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_limits_one_client_and_not_another() {
    let _s = serial().await;
    let gw = TestGateway::start(config(
        "per_client_rate = \"5/s\"\nper_client_burst = 5",
        "",
    ))
    .await;
    let a = client("127.0.0.1", true);
    let mut limited = None;
    for _ in 0..20 {
        let (code, headers, body) = get(&a, &gw.url("/healthz")).await;
        if code == 429 {
            assert_eq!(error_code(&body), "rate_limited");
            limited = Some(
                headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
    }
    assert!(
        matches!(limited, Some(1..=2)),
        "no 429 with Retry-After: {limited:?}"
    );
    let b = client("127.0.0.2", true);
    for _ in 0..5 {
        assert_eq!(
            get(&b, &gw.url("/healthz")).await.0,
            200,
            "the other client is unaffected"
        );
    }
    assert!(gw.stats().drops(DropReason::RateLimited) >= 10);
    let rows = gw.stats().clients.rows(Instant::now());
    let a_row = rows
        .iter()
        .find(|r| r.client == Some(ClientKey::Ip("127.0.0.1".parse().unwrap())))
        .unwrap();
    assert!(
        a_row.drops >= 10,
        "drops attributed to the client: {a_row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_cap_answers_503_at_once_and_admitted_requests_finish() {
    let _s = serial().await;
    let up = upstream(Upstream::Sleep(Duration::from_millis(800))).await;
    let gw = TestGateway::start(config("", &route("/slow/", up, 4, "5s"))).await;
    let c = client("127.0.0.1", true);
    let admitted: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/slow/x"));
            tokio::spawn(async move { get(&c, &url).await.0 })
        })
        .collect();
    let route = gw.stats().gateway.route("slow", 4);
    assert!(eventually(Duration::from_secs(2), || route.pending.load(Relaxed) == 4).await);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let (code, _, body) = get(&c, &gw.url("/slow/y")).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!((code, error_code(&body).as_str()), (503, "pending_cap"));
    }
    assert!(
        slowest < Duration::from_millis(100),
        "excess answered at once, not queued: {slowest:?}"
    );
    for h in admitted {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(route.pending.load(Relaxed), 0, "pending is exact");
    assert_eq!(gw.stats().drops(DropReason::PendingCap), 20);
}

/// An HTTP/1.1 upload over a raw socket: half the body, a pause, the rest.
async fn slow_upload(addr: std::net::SocketAddr, len: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/upload HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let body = vec![b'a'; len];
    let _ = s.write_all(&body[..len / 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = s.write_all(&body[len / 2..]).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_budget_holds_under_concurrent_uploads() {
    let _s = serial().await;
    let gw = TestGateway::start(config("body_budget = \"4MiB\"\nmax_body = \"1MiB\"", "")).await;
    let stats = gw.shared.stats.clone();
    let watch = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..300 {
            peak = peak.max(stats.gateway.body_bytes_in_use.load(Relaxed));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        peak
    });
    let uploads: Vec<_> = (0..20)
        .map(|_| tokio::spawn(slow_upload(gw.addr, 1 << 20)))
        .collect();
    let (mut served, mut refused) = (0, 0);
    for u in uploads {
        let out = u.await.unwrap();
        if out.starts_with("HTTP/1.1 404") {
            served += 1;
        } else if out.starts_with("HTTP/1.1 503") && out.contains("body_budget") {
            refused += 1;
        }
    }
    let peak = watch.await.unwrap();
    assert!(peak <= 4 << 20, "budget exceeded: {peak}");
    assert!(
        served >= 4 && refused >= 1,
        "served {served}, refused {refused}"
    );
    assert_eq!(served + refused, 20);
    assert_eq!(gw.stats().gateway.body_bytes_in_use.load(Relaxed), 0);
    let out = slow_upload(gw.addr, (1 << 20) + 1).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_ip_is_refused_at_accept() {
    let _s = serial().await;
    let gw = TestGateway::start(config("", "")).await;
    gw.shared
        .isolation
        .isolate(&ClientKey::Ip("127.0.0.2".parse().unwrap()), "test")
        .unwrap();
    let bad = client("127.0.0.2", false);
    let err = send(&bad, "GET", &gw.url("/healthz"), Bytes::new()).await;
    assert!(err.is_err(), "isolated client got an answer: {err:?}");
    assert_eq!(
        get(&client("127.0.0.1", false), &gw.url("/healthz"))
            .await
            .0,
        200
    );
    assert!(gw.stats().drops(DropReason::Isolated) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_connection_limit() {
    let _s = serial().await;
    let gw = TestGateway::start(config("max_connections_per_client = 2", "")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        held.push(s.connect(gw.addr).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(1), || gw
            .stats()
            .gateway
            .connections
            .load(Relaxed)
            == 2)
        .await
    );
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    // Refused at accept with a reset: the connect itself or the first read fails.
    if let Ok(mut third) = s.connect(gw.addr).await {
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "third connection was served");
    }
    assert!(
        eventually(Duration::from_secs(1), || gw
            .stats()
            .drops(DropReason::ConnLimit)
            == 1)
        .await
    );
    assert_eq!(
        get(&client("127.0.0.1", false), &gw.url("/healthz"))
            .await
            .0,
        200,
        "others unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_state_sheds_streams_and_connections() {
    let _s = serial().await;
    let gw = TestGateway::start(config("", "")).await;
    let c = client("127.0.0.1", true);
    assert_eq!(get(&c, &gw.url("/healthz")).await.0, 200);
    gw.stats().memory.overload_state.store(2, Relaxed);
    let (code, _, body) = get(&c, &gw.url("/healthz")).await;
    assert_eq!((code, error_code(&body).as_str()), (503, "overload"));
    assert!(send(
        &client("127.0.0.1", false),
        "GET",
        &gw.url("/healthz"),
        Bytes::new()
    )
    .await
    .is_err());
    gw.stats().memory.overload_state.store(0, Relaxed);
    assert_eq!(
        get(&client("127.0.0.1", false), &gw.url("/healthz"))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_with_strip_prefix_and_forwarded_for() {
    let _s = serial().await;
    let up = upstream(Upstream::Echo).await;
    let gw = TestGateway::start(config("", &route("/echo/", up, 8, "2s"))).await;
    for h2 in [false, true] {
        let (code, _, body) = get(&client("127.0.0.2", h2), &gw.url("/echo/a/b?q=1")).await;
        assert_eq!(code, 200);
        assert_eq!(body, "/a/b?q=1 xff=127.0.0.2");
    }
}

/// `Expect: 100-continue` is answered by the gateway (100 Continue once
/// the body is wanted) and not forwarded: the upstream gets the body
/// without being asked to expect anything (an HTTP/1.0 or picky upstream
/// would answer 417).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_here_not_forwarded() {
    let _s = serial().await;
    let up = upstream(Upstream::Echo).await;
    let gw = TestGateway::start(config("", &route("/echo/", up, 8, "2s"))).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /echo/up HTTP/1.1\r\nhost: gw\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an interim answer before the body")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(b"hello").await.unwrap();
    let mut rest = String::new();
    while !rest.ends_with("xff=127.0.0.1") && !rest.contains("expect=") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the answer")
            .unwrap();
        assert!(n > 0, "closed: {rest}");
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\n/up xff=127.0.0.1"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_upstreams_do_not_leak_pending_or_budget() {
    let _s = serial().await;
    let closer = upstream(Upstream::Close).await;
    let staller = upstream(Upstream::Stall).await;
    let routes = route("/close/", closer, 8, "2s") + &route("/stall/", staller, 8, "300ms");
    let gw = TestGateway::start(config("", &routes)).await;
    let c = client("127.0.0.1", true);
    let body = Bytes::from(vec![7u8; 200_000]);
    for (path, want) in [("/close/x", 502), ("/stall/x", 504)] {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (c, url, body) = (c.clone(), gw.url(path), body.clone());
                tokio::spawn(async move { send(&c, "POST", &url, body).await.map(|r| r.0) })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(want), "{path}");
        }
    }
    let truncating = TestGateway::start(config(
        "",
        &route("/trunc/", upstream(Upstream::Truncate).await, 8, "2s"),
    ))
    .await;
    for _ in 0..4 {
        let r = send(&c, "GET", &truncating.url("/trunc/x"), Bytes::new()).await;
        assert!(
            r.is_err(),
            "a truncated body must fail, not look complete: {r:?}"
        );
    }
    assert_released(&truncating, "trunc").await;
    for name in ["close", "stall"] {
        assert_released(&gw, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests() {
    let _s = serial().await;
    let up = upstream(Upstream::Sleep(Duration::from_millis(500))).await;
    let gw = TestGateway::start(config("", &route("/slow/", up, 8, "5s"))).await;
    let c = client("127.0.0.1", true);
    let url = gw.url("/slow/x");
    let call = tokio::spawn(async move { get(&c, &url).await.0 });
    let route = gw.stats().gateway.route("slow", 8);
    assert!(eventually(Duration::from_secs(1), || route.pending.load(Relaxed) == 1).await);
    gw.shared.cancel.cancel();
    gw.shared.tracker.close();
    assert_eq!(call.await.unwrap(), 200, "in-flight request finished");
    let drained = tokio::time::timeout(Duration::from_secs(3), gw.shared.tracker.wait()).await;
    assert!(drained.is_ok(), "connections drained");
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_bodies_over_max_body_get_413() {
    use http_body_util::StreamBody;
    let _s = serial().await;
    let up = upstream(Upstream::Echo).await;
    let gw = TestGateway::start(config(
        "max_body = \"64KiB\"",
        &route("/echo/", up, 8, "2s"),
    ))
    .await;
    // Declared too long: refused before any byte goes upstream.
    let c = client("127.0.0.1", true);
    let (code, _, body) = send(
        &c,
        "POST",
        &gw.url("/echo/x"),
        Bytes::from(vec![1u8; 65 * 1024]),
    )
    .await
    .unwrap();
    assert_eq!((code, error_code(&body).as_str()), (413, "body_too_large"));
    // No length declared: cut off once it passes max_body.
    let chunks = (0..20).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![2u8; 8192])))
    });
    let streamed =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<StreamBody<_>>();
    let req = http::Request::post(gw.url("/echo/y"))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    // The echo upstream reads the whole body before answering, so our cut
    // comes first and is reported as 413, not as an upstream failure.
    let resp = streamed.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(gw.stats().gateway.body_bytes_in_use.load(Relaxed), 0);
    assert!(
        eventually(Duration::from_secs(1), || gw
            .stats()
            .gateway
            .route("echo", 8)
            .pending
            .load(Relaxed)
            == 0)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_threads_serve_and_drain_on_shutdown() {
    let _s = serial().await;
    let up = upstream(Upstream::Sleep(Duration::from_millis(300))).await;
    let gw = TestGateway::start(config("threads = 2", &route("/up/", up, 64, "5s"))).await;
    for h2 in [false, true] {
        let c = client("127.0.0.1", h2);
        assert_eq!(get(&c, &gw.url("/healthz")).await.0, 200, "h2={h2}");
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (c, url) = (c.clone(), gw.url("/up/x"));
                tokio::spawn(async move { send(&c, "GET", &url, Bytes::new()).await.map(|r| r.0) })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(200), "h2={h2}");
        }
    }
    // A request in flight at shutdown finishes; then every thread stops.
    let c = client("127.0.0.1", true);
    let url = gw.url("/up/slow");
    let in_flight =
        tokio::spawn(async move { send(&c, "GET", &url, Bytes::new()).await.map(|r| r.0) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.shared.cancel.cancel();
    gw.shared.tracker.close();
    assert_eq!(in_flight.await.unwrap(), Ok(200));
    tokio::time::timeout(Duration::from_secs(5), gw.shared.tracker.wait())
        .await
        .expect("gateway threads drained and stopped");
}
