//! The response budget (`[gateway] response_budget`, `send_stall_timeout`):
//! clients that ask for large responses and never read them, over h2 (raw
//! frames, huge windows, the socket never read) and HTTP/1.1.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::h2frames::*;
use super::support::*;

const SEC: Duration = Duration::from_secs(1);

fn budget_config(gateway: &str, tail: &str) -> vpcbox::config::Config {
    config(
        &format!(
            "per_client_rate = \"1000000/s\"\nper_client_burst = 1000000\nidle_timeout = \"60s\"\n{gateway}"
        ),
        tail,
    )
}

/// The largest `response_buffered` seen, sampled every 2 ms on a thread.
struct Peak {
    peak: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Peak {
    fn start(gw: &TestGateway) -> Self {
        let stats = gw.shared.stats.clone();
        let (peak, stop) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Relaxed) {
                p.fetch_max(stats.gateway.response_buffered.load(Relaxed), Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self { peak, stop }
    }
    fn get(&self) -> i64 {
        self.peak.load(Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// An h2 connection that opens `streams` GETs of `path` with windows of
/// 2^31-1 and never reads its socket.
async fn never_reading(gw: &TestGateway, streams: usize, path: &str) -> Raw {
    let mut raw = Raw::connect(gw.addr, &[(0x4, 0x7fff_ffff)]).await;
    raw.send(&window_update(0, 0x7fff_ffff - 65_535), SEC).await;
    let mut open = Vec::new();
    for i in 0..streams {
        open.extend(headers(
            (2 * i + 1) as u32,
            END_HEADERS | END_STREAM,
            &request_block(false, path, None),
        ));
    }
    raw.send(&open, SEC).await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_connections_are_held_to_the_response_budget() {
    let _s = serial().await;
    let big = upstream(Upstream::Big(8 << 20)).await;
    let small = upstream(Upstream::Big(1 << 20)).await;
    let tail = route("/big/", big, 4096, "30s") + &route("/small/", small, 64, "30s");
    let gw = TestGateway::start(budget_config(
        "response_budget = \"2MiB\"\nsend_stall_timeout = \"30s\"",
        &tail,
    ))
    .await;
    let peak = Peak::start(&gw);
    // 8 x 50 streams could buffer 400 x (64 KiB send buffer + one chunk).
    let mut raws = Vec::new();
    for _ in 0..8 {
        raws.push(never_reading(&gw, 50, "/big/x").await);
    }
    let route = gw.stats().gateway.route("big", 4096);
    assert!(eventually(5 * SEC, || route.pending.load(Relaxed) == 400).await);
    tokio::time::sleep(SEC).await;
    // A client that reads is served while they hold the budget.
    let c = client("127.0.0.2", true);
    let t = Instant::now();
    let (status, _, body) = tokio::time::timeout(15 * SEC, get(&c, &gw.url("/small/x")))
        .await
        .expect("a reading client is served");
    eprintln!("reading client served in {:?}", t.elapsed());
    assert_eq!((status, body.len()), (200, 1 << 20));
    let p = peak.get();
    eprintln!(
        "peak buffered {} KiB, resets (budget) {}",
        p / 1024,
        gw.stats().gateway.response_resets_budget.load(Relaxed)
    );
    assert!(p > 0, "the attack buffered something");
    assert!(
        p <= 2 << 20,
        "buffered {} KiB over the 2 MiB budget",
        p / 1024
    );
    drop(raws);
    assert!(
        eventually(5 * SEC, || gw
            .stats()
            .gateway
            .response_buffered
            .load(Relaxed)
            == 0)
        .await,
        "all returned after the connections closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_streams_are_reset_after_the_send_stall_timeout() {
    let _s = serial().await;
    let big = upstream(Upstream::Big(8 << 20)).await;
    let gw = TestGateway::start(budget_config(
        "send_stall_timeout = \"1s\"",
        &route("/big/", big, 64, "30s"),
    ))
    .await;
    let _raw = never_reading(&gw, 10, "/big/x").await;
    let route = gw.stats().gateway.route("big", 64);
    assert!(eventually(3 * SEC, || route.pending.load(Relaxed) == 10).await);
    // Bytes stay buffered once the socket's buffers are full, which takes
    // a while after the streams start on a loaded machine.
    assert!(
        eventually(10 * SEC, || gw
            .stats()
            .gateway
            .response_buffered
            .load(Relaxed)
            > 0)
        .await,
        "nothing buffered"
    );
    let t = Instant::now();
    // Well before the 30 s route timeout.
    assert!(
        eventually(4 * SEC, || route.pending.load(Relaxed) == 0).await,
        "stalled streams still pending: {}",
        route.pending.load(Relaxed)
    );
    eprintln!(
        "stalled streams reset {:?} after bytes were held",
        t.elapsed()
    );
    let g = &gw.stats().gateway;
    assert!(
        g.response_resets_stall.load(Relaxed) >= 10,
        "stall resets {}, budget {}, shed {}, connections {}",
        g.response_resets_stall.load(Relaxed),
        g.response_resets_budget.load(Relaxed),
        g.response_resets_shed.load(Relaxed),
        g.connections.load(Relaxed)
    );
    assert!(
        eventually(2 * SEC, || gw
            .stats()
            .gateway
            .response_buffered
            .load(Relaxed)
            == 0)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http1_connections_are_closed_after_the_send_stall_timeout() {
    let _s = serial().await;
    let big = upstream(Upstream::Big(8 << 20)).await;
    let gw = TestGateway::start(budget_config(
        "send_stall_timeout = \"1s\"",
        &route("/big/", big, 64, "30s"),
    ))
    .await;
    let mut socks = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /big/x HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    let route = gw.stats().gateway.route("big", 64);
    assert!(eventually(3 * SEC, || route.pending.load(Relaxed) == 10).await);
    assert!(
        eventually(4 * SEC, || route.pending.load(Relaxed) == 0).await,
        "stalled connections still pending: {}",
        route.pending.load(Relaxed)
    );
    assert!(gw.stats().gateway.response_resets_stall.load(Relaxed) >= 10);
    assert!(
        eventually(2 * SEC, || gw.stats().gateway.connections.load(Relaxed)
            == 0)
        .await,
        "connections closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_resets_the_streams_holding_the_most_bytes_first() {
    let _s = serial().await;
    let big = upstream(Upstream::Big(8 << 20)).await;
    // 20 KiB answers (two chunks at most), the connection kept open.
    let (small, _) = counted_upstream(|mut s| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 20480\r\n\r\n";
            if s.write_all(head).await.is_err() || s.write_all(&[b'x'; 20480]).await.is_err() {
                return;
            }
        }
    })
    .await;
    let tail = route("/big/", big, 64, "30s") + &route("/small/", small, 64, "30s");
    let gw = TestGateway::start(budget_config("send_stall_timeout = \"30s\"", &tail)).await;
    // Heavy: large answers, never read. Light: 20 KiB answers, never read.
    let _heavy = never_reading(&gw, 10, "/big/x").await;
    let _light = never_reading(&gw, 10, "/small/x").await;
    let heavy = gw.stats().gateway.route("big", 64);
    assert!(eventually(3 * SEC, || heavy.pending.load(Relaxed) == 10).await);
    tokio::time::sleep(SEC / 2).await;
    gw.stats().memory.overload_state.store(2, Relaxed);
    assert!(
        eventually(3 * SEC, || heavy.pending.load(Relaxed) == 0).await,
        "heavy streams still pending: {}",
        heavy.pending.load(Relaxed)
    );
    tokio::time::sleep(SEC / 2).await;
    gw.stats().memory.overload_state.store(0, Relaxed);
    // The heavy connection went (its streams' bytes stayed queued after
    // they were reset); the light one's streams hold under two chunks
    // each: kept.
    let shed = gw.stats().gateway.response_resets_shed.load(Relaxed);
    assert!((1..=10).contains(&shed), "{shed} resets");
    assert!(
        eventually(2 * SEC, || gw.stats().gateway.connections.load(Relaxed)
            == 1)
        .await
    );
}
