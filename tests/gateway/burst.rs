//! A burst that overflows a route's pending cap: its refusals must not wait
//! behind the admitted streams' upstream connection set-up, which shares
//! the gateway thread with them.
//!
//! No clock decides here: the upstream's first accepted connection is the
//! witness. The gateway thread makes every connect after the work it put
//! before it, so whatever the gateway has counted when the first connection
//! arrives was done before that connect, however slow the machine.
//!
//! What is counted is a refusal's answer being produced (its stream task
//! has run), not its bytes on the wire: those leave when the connection
//! task runs next, which nothing here can see without a race. So this
//! catches admitted streams connecting first (no yield: 0 of 40 refusals
//! counted), not one yield too few (see `service::refusals_first`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpListener;
use vpcbox::stats::DropReason;

use super::h2frames::*;
use super::support::*;

/// Streams admitted (the route's cap); as many again are refused.
const CAP: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_refusals_are_answered_before_admitted_streams_connect_upstream() {
    let _s = serial().await;
    // Not served until the first connection: the upstream only counts.
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let routes = route("/up/", up.local_addr().unwrap(), CAP, "5s");
    let gw = TestGateway::start(config("threads = 1", &routes)).await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    // 2 × CAP requests in one write: the gateway reads them in one go,
    // admits the first CAP and refuses the rest.
    let block = request_block(false, "/up/x", None);
    let burst: Vec<u8> = (0..2 * CAP as u32)
        .flat_map(|i| headers(1 + 2 * i, END_STREAM | END_HEADERS, &block))
        .collect();
    assert!(raw.send(&burst, Duration::from_secs(5)).await);

    let (first, _) = tokio::time::timeout(Duration::from_secs(10), up.accept())
        .await
        .expect("an admitted stream connects upstream")
        .unwrap();
    let refused = gw.stats().drops(DropReason::PendingCap);
    assert_eq!(
        refused, CAP as u64,
        "every refusal of the burst is produced before the first upstream connect"
    );

    // The admitted streams' upstream closes: 502, and nothing leaks.
    drop(first);
    let closer = tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let answered = eventually(Duration::from_secs(10), || {
        raw.seen.headers.load(Relaxed) == 2 * CAP as u64
    })
    .await;
    assert!(answered, "{}", raw.seen.summary());
    assert_released(&gw, "up").await;
    closer.abort();
}
