//! `/v1/events/stream` over HTTP/2: a reader that never opens its flow
//! control window falls behind and loses its stream (reset, counted as
//! `slow_reader`), not its connection, which keeps serving; a reader that
//! reads keeps getting updates beside it.

use std::time::Duration;

use http_body_util::BodyExt;
use vpcbox::client::ClientKey;
use vpcbox::stats::DropReason;

use super::support::*;

const SEC: Duration = Duration::from_secs(1);

fn stream_request() -> http::Request<()> {
    http::Request::get("http://x/v1/events/stream")
        .header("authorization", format!("Bearer {TEST_TOKEN}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_reader_that_never_reads_loses_its_stream_not_its_connection() {
    let _s = serial().await;
    let gw = TestGateway::start(config("max_send_buffer = \"1KiB\"", "")).await;
    // Updates follow changes: an isolation change a tick makes one each time.
    let shared = gw.shared.clone();
    let churn = tokio::spawn(async move {
        let k: ClientKey = "ip:10.9.9.9".parse().unwrap();
        loop {
            let _ = shared.isolation.isolate(&k, "test");
            let _ = shared.isolation.release(&k, "test");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The slow reader: a 4 KiB window it never gives back.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(4096)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let (resp, _) = h2.send_request(stream_request(), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut slow = resp.into_body();

    // A reader beside it that reads.
    let reader = client("127.0.0.1", true);
    let req = http::Request::get(gw.url("/v1/events/stream"))
        .header("authorization", format!("Bearer {TEST_TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let mut live = reader.request(req).await.unwrap().into_body();

    assert!(
        eventually(10 * SEC, || gw.stats().drops(DropReason::SlowReader) == 1).await,
        "the slow reader was not dropped"
    );
    // Its stream was reset (after what it had buffered), not ended.
    let ended = tokio::time::timeout(5 * SEC, async {
        loop {
            match slow.data().await {
                Some(Ok(_)) => continue,
                other => return other.map(|r| r.is_err()),
            }
        }
    })
    .await
    .expect("the slow stream ends");
    assert_eq!(ended, Some(true), "a reset, not an end of stream");
    // Its connection still serves.
    let mut h2 = h2.ready().await.unwrap();
    let health = http::Request::get("http://x/healthz").body(()).unwrap();
    let (resp, _) = h2.send_request(health, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    // The reading client still gets updates.
    let mut updates = 0;
    let t0 = std::time::Instant::now();
    while updates < 3 && t0.elapsed() < 5 * SEC {
        let frame = tokio::time::timeout(2 * SEC, live.frame()).await;
        if let Ok(Some(Ok(f))) = frame {
            let text = f.into_data().unwrap_or_default();
            updates += String::from_utf8_lossy(&text)
                .matches("event: update")
                .count();
        }
    }
    assert!(updates >= 3, "the reading client got {updates} updates");
    assert_eq!(
        gw.stats().drops(DropReason::SlowReader),
        1,
        "only the slow one"
    );
    churn.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_a_readers_ip_ends_its_stream_even_with_the_token() {
    let _s = serial().await;
    let gw = TestGateway::start(config("", "")).await;
    let c = client("127.0.0.42", false);
    let req = http::Request::get(gw.url("/v1/events/stream"))
        .header("authorization", format!("Bearer {TEST_TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(2 * SEC, body.frame()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "the stream started");
    let ip: ClientKey = "ip:127.0.0.42".parse().unwrap();
    gw.shared.isolation.isolate(&ip, "test").unwrap();
    // The isolation's event makes an update; the body ends instead.
    let ended = tokio::time::timeout(3 * SEC, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream still runs after its IP was isolated"
    );
}
