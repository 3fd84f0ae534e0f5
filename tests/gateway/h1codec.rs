//! The gateway's own HTTP/1.1 upstream client against a raw upstream that
//! writes scripted bytes: response framings (chunked with extensions and
//! trailers, read to EOF, none for HEAD/204/304), 1xx before the answer,
//! malformed heads and bodies (502 or a cut body, never a panic), request
//! bodies with and without a known length, and which connections are
//! reused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

/// One request as the raw upstream read it.
struct RawReq {
    method: String,
    path: String,
    head: String,
    body: Vec<u8>,
}

/// What the raw upstream does for a request.
enum Step {
    /// These bytes, in one write.
    Send(Vec<u8>),
    /// These bytes, a few at a time with pauses (every split point).
    Trickle(Vec<u8>, usize),
    /// Closes the connection.
    Close,
}

fn bytes(s: impl Into<Vec<u8>>) -> Step {
    Step::Send(s.into())
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A whole response behind a first one that a reader might take for part
/// of it or for the next: a gateway that is desynchronised answers a
/// later request with it.
const SMUGGLED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";

/// Responses whose framing could be read two ways, each followed by
/// [`SMUGGLED`] in the same write: the gateway must answer 502 and close.
const AMBIGUOUS: [(&str, &str); 8] = [
    (
        "/cl-te",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "/te-empty",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: \r\ncontent-length: 0\r\n\r\n",
    ),
    (
        "/te-http10",
        "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "/cl-differ",
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-length: 44\r\n\r\n",
    ),
    (
        "/obs-fold",
        "HTTP/1.1 200 OK\r\nx-a: 1\r\n content-length: 44\r\ncontent-length: 0\r\n\r\n",
    ),
    (
        "/bare-lf",
        "HTTP/1.1 200 OK\r\nx-echo: a\ncontent-length: 0\r\n\r\n",
    ),
    (
        "/blank-first",
        "\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ),
    (
        "/interim-body",
        "HTTP/1.1 100 Continue\r\ncontent-length: 4\r\n\r\nabcd",
    ),
];

/// The script: what each request path gets.
fn script(req: &RawReq) -> Vec<Step> {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                   5;ext=1;q=\"a b\"\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";
    match req.path.as_str() {
        "/chunked" => vec![bytes(chunked)],
        "/chunked-trickle" => vec![Step::Trickle(chunked.into(), 3)],
        "/eof" => vec![bytes("HTTP/1.1 200 OK\r\n\r\nuntil the end"), Step::Close],
        "/interim" => vec![
            bytes("HTTP/1.1 100 Continue\r\n\r\n"),
            Step::Trickle("HTTP/1.1 103 Early Hints\r\nlink: </s>\r\n\r\n".into(), 7),
            bytes(OK),
        ],
        "/head" => vec![bytes("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")],
        "/204" => vec![bytes("HTTP/1.1 204 No Content\r\n\r\n")],
        "/304" => vec![bytes(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        )],
        "/bad-length" => vec![bytes("HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\nok")],
        "/two-lengths" => vec![bytes(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        )],
        "/bad-head" => vec![bytes("HTTP/1.1 2000 OK\r\n\r\n")],
        "/bad-chunk" => vec![bytes(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )],
        "/both" => vec![bytes(
            "HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n\
             2\r\nok\r\n0\r\n\r\n",
        )],
        "/cut-chunked" => vec![
            bytes("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n100\r\nonly some"),
            Step::Close,
        ],
        "/big-head" => {
            let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "b".repeat(30 * 1024));
            vec![Step::Trickle(big.into(), 4096)]
        }
        p if AMBIGUOUS.iter().any(|(a, _)| *a == p) => {
            let (_, first) = AMBIGUOUS.iter().find(|(a, _)| *a == p).unwrap();
            vec![bytes(format!("{first}{SMUGGLED}"))]
        }
        "/cl-equal" => vec![bytes(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2, 02\r\n\r\nok{SMUGGLED}"
        ))],
        "/head-body" => vec![bytes(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled{SMUGGLED}"
        ))],
        "/204-body" => vec![bytes(format!(
            "HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ))],
        "/chunk-overflow" => vec![bytes(format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             10000000000000002\r\nok\r\n0\r\n\r\n{SMUGGLED}"
        ))],
        "/chunk-ext-ctl" => vec![bytes(format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             2;a\0\r\nok\r\n0\r\n\r\n{SMUGGLED}"
        ))],
        "/close" => vec![
            bytes("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
            Step::Close,
        ],
        "/echo" => {
            let te = req.head.contains("transfer-encoding: chunked");
            let text = format!(
                "{} {} te={te} {}",
                req.method,
                req.body.len(),
                String::from_utf8_lossy(&req.body)
            );
            vec![bytes(format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            ))]
        }
        _ => vec![bytes(OK)],
    }
}

/// A raw upstream running [`script`], counting its connections.
async fn scripted() -> (SocketAddr, Counts) {
    counted_upstream(serve_script).await
}

async fn serve_script(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        for step in script(&req) {
            let ok = match step {
                Step::Send(b) => s.write_all(&b).await.is_ok(),
                Step::Trickle(b, n) => {
                    let mut ok = true;
                    for piece in b.chunks(n) {
                        ok &= s.write_all(piece).await.is_ok();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    ok
                }
                Step::Close => false,
            };
            if !ok {
                return;
            }
        }
    }
}

/// Reads one request (head, then a body by content-length or chunked).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawReq> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let line: Vec<String> = String::from_utf8_lossy(&buf[..end])
        .split(' ')
        .take(2)
        .map(str::to_owned)
        .collect();
    buf.drain(..end);
    let mut body = Vec::new();
    if let Some(n) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < n {
            fill(s, buf).await?;
        }
        body = buf.drain(..n).collect();
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            let Some(i) = buf.windows(2).position(|w| w == b"\r\n") else {
                fill(s, buf).await?;
                continue;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..i]).ok()?, 16).ok()?;
            while buf.len() < i + 2 + size + 2 {
                fill(s, buf).await?;
            }
            body.extend_from_slice(&buf[i + 2..i + 2 + size]);
            buf.drain(..i + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    }
    Some(RawReq {
        method: line.first()?.clone(),
        path: line.get(1)?.clone(),
        head,
        body,
    })
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

const UNLIMITED: &str = "per_client_rate = \"100000/s\"\nper_client_burst = 100000";

async fn gateway() -> (TestGateway, Counts) {
    let (up, n) = scripted().await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "5s"))).await;
    (gw, n)
}

/// `(status, body or the error it ended with)`; status 0 if the stream
/// failed before its head.
async fn fetch(c: &TestClient, method: &str, url: &str) -> (u16, Result<Bytes, String>) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = match c.request(req).await {
        Ok(resp) => resp,
        Err(e) => return (0, Err(format!("{e:?}"))),
    };
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("body ends");
    (
        status,
        body.map(|b| b.to_bytes()).map_err(|e| e.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_decoded_and_the_connection_reused() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for path in ["/up/chunked", "/up/chunked-trickle", "/up/chunked"] {
            let (code, body) = fetch(&c, "GET", &gw.url(path)).await;
            assert_eq!((code, body.unwrap()), (200, Bytes::from("hello, world")));
        }
    }
    assert_eq!(
        n.accepted.load(Relaxed),
        1,
        "6 requests in turn, one connection"
    );
    assert_released(&gw, "up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_to_eof_are_read_whole_and_not_reused() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for _ in 0..3 {
            let (code, body) = fetch(&c, "GET", &gw.url("/up/eof")).await;
            assert_eq!((code, body.unwrap()), (200, Bytes::from("until the end")));
        }
    }
    assert_eq!(n.accepted.load(Relaxed), 6);
    assert_released(&gw, "up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_skipped() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    let c = client("127.0.0.1", true);
    for _ in 0..3 {
        let (code, body) = fetch(&c, "GET", &gw.url("/up/interim")).await;
        assert_eq!((code, body.unwrap()), (200, Bytes::from("ok")));
    }
    assert_eq!(n.accepted.load(Relaxed), 1);
    assert_released(&gw, "up").await;
}

/// A response to HEAD, a 204 and a 304 have no body whatever their
/// headers say: the next request on that connection gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_304_have_no_body() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for (method, path, code) in [
            ("HEAD", "/up/head", 200),
            ("GET", "/up/204", 204),
            ("GET", "/up/304", 304),
        ] {
            let (got, body) = fetch(&c, method, &gw.url(path)).await;
            assert_eq!(
                (got, body.unwrap()),
                (code, Bytes::new()),
                "{method} {path}"
            );
            let (got, body) = fetch(&c, "GET", &gw.url("/up/ok")).await;
            assert_eq!(
                (got, body.unwrap()),
                (200, Bytes::from("ok")),
                "after {path}"
            );
        }
    }
    assert_eq!(n.accepted.load(Relaxed), 1);
    assert_released(&gw, "up").await;
}

/// Bad heads and bad lengths are a 502 and close that connection; a bad
/// chunk comes after the head went out, so it cuts the body. The route
/// keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_get_502_or_a_cut_body() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for path in [
            "/up/bad-length",
            "/up/two-lengths",
            "/up/bad-head",
            "/up/big-head",
        ] {
            let (code, body) = fetch(&c, "GET", &gw.url(path)).await;
            assert_eq!(code, 502, "{path} h2={h2}");
            assert_eq!(error_code(&body.unwrap()), "upstream", "{path}");
            let (code, _) = fetch(&c, "GET", &gw.url("/up/ok")).await;
            assert_eq!(code, 200, "after {path}");
        }
        // The head may have gone out before the bad bytes were read, or
        // not yet (h2: the stream is then reset before its head).
        for path in ["/up/bad-chunk", "/up/cut-chunked"] {
            let (code, body) = fetch(&c, "GET", &gw.url(path)).await;
            assert!(matches!(code, 0 | 200), "{path}: {code}");
            assert!(body.is_err(), "{path} h2={h2}: the body must fail");
        }
        // Both framings: a 502 (see `ambiguous_framing_is_502`).
        let (code, _) = fetch(&c, "GET", &gw.url("/up/both")).await;
        assert_eq!(code, 502);
    }
    assert!(eventually(Duration::from_secs(2), || n.open.load(Relaxed) <= 1).await);
    assert_released(&gw, "up").await;
}

/// An upstream whose response could be read two ways, with a second
/// response behind it: the gateway answers 502 and closes that
/// connection, so the next request gets its own answer, never the
/// smuggled one. Framing that is odd but has one reading (equal
/// content-lengths, a body after a HEAD or 204 answer) is served, and
/// what follows it is not taken for the next answer either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_502() {
    let _s = serial().await;
    let (gw, _) = gateway().await;
    for h2 in [true, false] {
        let c = client("127.0.0.1", h2);
        for (path, _) in AMBIGUOUS {
            let (code, body) = fetch(&c, "GET", &gw.url(&format!("/up{path}"))).await;
            assert_eq!(code, 502, "{path} h2={h2}: {body:?}");
            assert_eq!(error_code(&body.unwrap()), "upstream", "{path}");
            let (code, body) = fetch(&c, "GET", &gw.url("/up/ok")).await;
            assert_eq!(
                (code, body.unwrap()),
                (200, Bytes::from("ok")),
                "after {path}"
            );
        }
        // A bad chunk comes after the head went out: the body is cut.
        for path in ["/up/chunk-overflow", "/up/chunk-ext-ctl"] {
            let (code, body) = fetch(&c, "GET", &gw.url(path)).await;
            assert!(matches!(code, 0 | 200), "{path}: {code}");
            assert!(body.is_err(), "{path} h2={h2}: the body must fail");
            let (code, body) = fetch(&c, "GET", &gw.url("/up/ok")).await;
            assert_eq!(
                (code, body.unwrap()),
                (200, Bytes::from("ok")),
                "after {path}"
            );
        }
        for (method, path, want) in [
            ("GET", "/up/cl-equal", (200, "ok")),
            ("HEAD", "/up/head-body", (200, "")),
            ("GET", "/up/204-body", (204, "")),
        ] {
            let (code, body) = fetch(&c, method, &gw.url(path)).await;
            assert_eq!(
                (code, body.unwrap()),
                (want.0, Bytes::from(want.1)),
                "{path}"
            );
            let (code, body) = fetch(&c, "GET", &gw.url("/up/ok")).await;
            assert_eq!(
                (code, body.unwrap()),
                (200, Bytes::from("ok")),
                "after {path}"
            );
        }
    }
    assert_released(&gw, "up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_not_reused() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    let c = client("127.0.0.1", true);
    for _ in 0..3 {
        let (code, body) = fetch(&c, "GET", &gw.url("/up/close")).await;
        assert_eq!((code, body.unwrap()), (200, Bytes::from("ok")));
    }
    assert_eq!(n.accepted.load(Relaxed), 3);
    assert_released(&gw, "up").await;
}

/// Request bodies: with a known length as `content-length`, without one
/// (an h2 body of unknown size) chunked; both on one reused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_with_and_without_a_length() {
    let _s = serial().await;
    let (gw, n) = gateway().await;
    let c = client("127.0.0.1", true);
    let (code, _, body) = send(&c, "POST", &gw.url("/up/echo"), Bytes::from("12345"))
        .await
        .unwrap();
    assert_eq!((code, &body[..]), (200, &b"POST 5 te=false 12345"[..]));
    let (code, _, body) = send(&c, "PUT", &gw.url("/up/echo"), Bytes::new())
        .await
        .unwrap();
    assert_eq!((code, &body[..]), (200, &b"PUT 0 te=false "[..]));
    let streaming =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let frames = ["abc", "", "defgh"]
        .map(|s| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(s))));
    let req = http::Request::post(gw.url("/up/echo"))
        .body(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
        .unwrap();
    let resp = streaming.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"POST 8 te=true abcdefgh");
    assert_eq!(n.accepted.load(Relaxed), 1);
    assert_released(&gw, "up").await;
}

/// 1 MiB request bodies toward an upstream that never reads: what the
/// gateway holds per stream is the downstream window and one frame (the
/// socket's buffers are capped), not the body; the route timeout ends
/// each one (504) and returns its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_to_a_stalled_upstream_stay_bounded() {
    let _s = serial().await;
    let up = upstream(Upstream::Stall).await;
    let gw = TestGateway::start(config(UNLIMITED, &route("/up/", up, 64, "1s"))).await;
    let c = client("127.0.0.1", true);
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let heap = HeapWatch::start();
    let uploads: Vec<_> = (0..20)
        .map(|_| {
            let (c, url, body) = (c.clone(), gw.url("/up/x"), body.clone());
            tokio::spawn(async move { send(&c, "POST", &url, body).await.map(|r| r.0) })
        })
        .collect();
    for u in uploads {
        let code = u.await.unwrap();
        assert!(matches!(code, Ok(504) | Err(_)), "{code:?}");
    }
    let grown = heap.growth();
    eprintln!(
        "heap growth, 20 × 1 MiB to a stalled upstream: {} KiB",
        grown / 1024
    );
    // The client's 20 MiB of bodies were allocated before the watch, but
    // its h2 send side shares this heap (a few MiB when written): a
    // gateway that buffered the bodies would add 20 MiB.
    assert!(grown < 8 * MIB, "heap grew {} KiB", grown / 1024);
    assert_released(&gw, "up").await;
}
