//! Adversarial HTTP/2, one test per attack. Each asserts that the server
//! handled the connection (GOAWAY, resets, answers or back-pressure) and
//! that the heap grew by at most a few MiB while it did.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::h2frames::*;
use super::support::*;

const SEC: Duration = Duration::from_secs(1);

/// Short timeouts so the timer-driven defences fire within the test, and
/// a quota high enough not to mask the h2 layer.
fn attack_config(tail: &str) -> vpcbox::config::Config {
    config(
        "header_read_timeout = \"1s\"\nrequest_timeout = \"1s\"\nidle_timeout = \"3s\"\n\
         per_client_rate = \"1000000/s\"\nper_client_burst = 1000000",
        tail,
    )
}

async fn start() -> TestGateway {
    TestGateway::start(attack_config("")).await
}

fn assert_heap(watch: &HeapWatch, limit_mib: u64, what: &str) {
    let g = watch.growth();
    eprintln!("{what}: heap growth {} KiB", g / 1024);
    assert!(g < limit_mib * MIB, "{what}: heap grew {} KiB", g / 1024);
}

/// Streams are odd, increasing.
fn sid(i: usize) -> u32 {
    (2 * i + 1) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_cve_2023_44487() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let block = request_block(false, "/healthz", None);
    let watch = HeapWatch::start();
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.extend(headers(sid(i), END_HEADERS | END_STREAM, &block));
        batch.extend(rst(sid(i), 0x8));
        if batch.len() > 64 * 1024 {
            if !raw.send(&batch, SEC).await {
                break;
            }
            batch.clear();
        }
    }
    assert!(
        raw.wait_end(3 * SEC).await,
        "not stopped: {}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "rapid reset");
    assert_eq!(
        raw.seen.goaway_code.load(Relaxed),
        0xb,
        "ENHANCE_YOUR_CALM: {}",
        raw.seen.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_cve_2025_8671() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let block = request_block(true, "/v1/x", None);
    let watch = HeapWatch::start();
    let mut batch = Vec::new();
    // Each stream is valid, then a WINDOW_UPDATE of 0 makes the *server*
    // reset it (a stream error): resets the client never sent.
    for i in 0..5_000 {
        batch.extend(headers(sid(i), END_HEADERS, &block));
        batch.extend(window_update(sid(i), 0));
        if batch.len() > 64 * 1024 {
            if !raw.send(&batch, SEC).await {
                break;
            }
            batch.clear();
        }
    }
    assert!(
        raw.wait_end(3 * SEC).await,
        "not stopped: {}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "MadeYouReset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_cve_2024_27316() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    let mut ok = raw
        .send(&headers(1, 0, &request_block(false, "/healthz", None)), SEC)
        .await;
    // Literal headers with new names, never ending the block.
    let mut junk = Vec::new();
    for i in 0..1000 {
        let name = format!("x-junk-{i:05}");
        junk.push(0x00);
        junk.push(name.len() as u8);
        junk.extend_from_slice(name.as_bytes());
        junk.push(4);
        junk.extend_from_slice(b"aaaa");
    }
    junk.truncate(16 * 1024);
    let cont = frame(CONTINUATION, 0, 1, &junk);
    let mut sent = 0;
    while ok && sent < 20 * MIB as usize {
        ok = raw.send(&cont, SEC).await;
        sent += cont.len();
    }
    assert!(
        raw.wait_end(3 * SEC).await,
        "not stopped after {sent} B: {}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "CONTINUATION flood");
}

/// Sends `unit` repeatedly for about `secs` without reading.
async fn flood(raw: &mut Raw, unit: &[u8], times: usize, dur: Duration) -> usize {
    let mut batch = Vec::new();
    while batch.len() < 64 * 1024 {
        batch.extend_from_slice(unit);
    }
    let per = batch.len() / unit.len();
    let end = tokio::time::Instant::now() + dur;
    let mut sent = 0;
    while sent < times && tokio::time::Instant::now() < end {
        if !raw.send(&batch, Duration::from_millis(300)).await {
            break;
        }
        sent += per;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_back_pressured() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    let watch = HeapWatch::start();
    let sent = flood(&mut raw, &frame(PING, 0, 0, &[1; 8]), 1_000_000, 2 * SEC).await;
    assert_heap(&watch, 4, "ping flood (not reading)");
    assert!(
        sent < 1_000_000,
        "server kept reading {sent} pings without us reading a pong"
    );
    raw.read_in_background();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_heap(&watch, 4, "ping flood (reading)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_bounded() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    let watch = HeapWatch::start();
    let sent = flood(
        &mut raw,
        &settings(&[(0x4, 65_535), (0x3, 100)]),
        1_000_000,
        2 * SEC,
    )
    .await;
    raw.read_in_background();
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "settings flood: {sent} frames written; {}",
        raw.seen.summary()
    );
    assert!(
        sent < 1_000_000 || raw.seen.ended(),
        "{}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "settings flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_flood_on_idle_streams_is_a_connection_error() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.extend(rst(sid(i), 0x8));
    }
    let _ = raw.send(&batch, SEC).await;
    assert!(
        raw.wait_end(3 * SEC).await,
        "not stopped: {}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "reset flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_churn_is_bounded_and_the_connection_still_serves() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    let mut batch = Vec::new();
    for i in 0..100_000 {
        // Stream i+1 (idle) depends on stream (i % 50) * 2 + 1, weight 16.
        let dep = sid(i % 50).to_be_bytes();
        batch.extend(frame(
            PRIORITY,
            0,
            sid(i + 1),
            &[dep[0], dep[1], dep[2], dep[3], 16],
        ));
        if batch.len() > 64 * 1024 {
            if !raw.send(&batch, SEC).await {
                break;
            }
            batch.clear();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_heap(&watch, 4, "PRIORITY churn");
    if !raw.seen.ended() {
        let s = sid(200_001);
        raw.send(
            &headers(
                s,
                END_HEADERS | END_STREAM,
                &request_block(false, "/healthz", None),
            ),
            SEC,
        )
        .await;
        let answered = eventually(2 * SEC, || {
            raw.seen.headers.load(Relaxed) >= 1 || raw.seen.ended()
        })
        .await;
        assert!(answered, "{}", raw.seen.summary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_frames_are_cut_by_the_request_timeout() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    raw.send(
        &headers(1, END_HEADERS, &request_block(true, "/v1/x", None)),
        SEC,
    )
    .await;
    let sent = flood(
        &mut raw,
        &frame(DATA, 0, 1, &[]),
        2_000_000,
        Duration::from_millis(1500),
    )
    .await;
    let handled = eventually(2 * SEC, || {
        raw.seen.headers.load(Relaxed) >= 1 || raw.seen.rst.load(Relaxed) >= 1 || raw.seen.ended()
    })
    .await;
    assert!(
        handled,
        "{sent} empty frames, no answer: {}",
        raw.seen.summary()
    );
    assert_heap(&watch, 4, "empty DATA frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_header_blocks_are_reset() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    let mut batch = Vec::new();
    for i in 0..2_000 {
        batch.extend(headers(sid(i), END_HEADERS | END_STREAM, &[]));
    }
    let _ = raw.send(&batch, SEC).await;
    let handled = eventually(3 * SEC, || {
        raw.seen.ended() || raw.seen.rst.load(Relaxed) >= 2_000
    })
    .await;
    assert!(handled, "{}", raw.seen.summary());
    assert_eq!(
        raw.seen.headers.load(Relaxed),
        0,
        "a malformed request was answered"
    );
    assert_heap(&watch, 4, "zero-length headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dribble_is_cut_by_the_request_timeout() {
    let _s = serial().await;
    let gw = start().await;
    let mut raw = Raw::connect(gw.addr, &[]).await;
    raw.read_in_background();
    let watch = HeapWatch::start();
    let streams = 100;
    let mut open = Vec::new();
    for i in 0..streams {
        open.extend(headers(
            sid(i),
            END_HEADERS,
            &request_block(true, "/v1/x", Some(1 << 20)),
        ));
    }
    raw.send(&open, SEC).await;
    for _ in 0..15 {
        let mut drip = Vec::new();
        for i in 0..streams {
            drip.extend(frame(DATA, 0, sid(i), b"a"));
        }
        if !raw.send(&drip, SEC).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = eventually(2 * SEC, || {
        raw.seen.headers.load(Relaxed) >= streams as u64 || raw.seen.ended()
    })
    .await;
    assert!(answered, "{}", raw.seen.summary());
    assert_heap(&watch, 4, "data dribble");
    assert_eq!(gw.stats().gateway.body_bytes_in_use.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_client_window_never_reading_large_responses_is_bounded() {
    let _s = serial().await;
    let up = upstream(Upstream::Big(8 << 20)).await;
    let gw = TestGateway::start(attack_config(&route("/big/", up, 64, "5s"))).await;
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31-1 and a connection window as large.
    let mut raw = Raw::connect(gw.addr, &[(0x4, 0x7fff_ffff)]).await;
    raw.send(&window_update(0, 0x7fff_ffff - 65_535), SEC).await;
    let watch = HeapWatch::start();
    let mut open = Vec::new();
    for i in 0..20 {
        open.extend(headers(
            sid(i),
            END_HEADERS | END_STREAM,
            &request_block(false, "/big/x", None),
        ));
    }
    raw.send(&open, SEC).await;
    let route = gw.stats().gateway.route("big", 64);
    assert!(eventually(2 * SEC, || route.pending.load(Relaxed) == 20).await);
    tokio::time::sleep(SEC).await;
    assert_heap(&watch, 6, "internal buffering (never reading)");
    drop(raw);
    assert!(
        eventually(3 * SEC, || route.pending.load(Relaxed) == 0).await,
        "pending released on close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_connections_are_closed_by_the_header_timeout() {
    let _s = serial().await;
    let gw = start().await;
    let watch = HeapWatch::start();
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut raw = Raw::connect(gw.addr, &[]).await;
        raw.send(
            &headers(1, END_STREAM, &request_block(false, "/healthz", None)),
            SEC,
        )
        .await;
        raw.read_in_background();
        conns.push(raw);
    }
    let mut h1 = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        h1.push(s);
    }
    assert!(
        eventually(SEC / 2, || gw.stats().gateway.connections.load(Relaxed)
            == 150)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An open connection costs hyper + h2 ~35-55 KiB of heap (h2's 16 KiB
    // write buffer, 8 KiB read buffer, HPACK tables, hyper's state); that
    // cannot be made "a few MiB" for 150 of them, so the bound here is per
    // connection, and the real defence is that they go away.
    assert_heap(&watch, 150 * 64 / 1024, "slow headers (150 connections)");
    let closed = eventually(3 * SEC, || {
        gw.stats().gateway.connections.load(Relaxed) == 0
    })
    .await;
    assert!(
        closed,
        "{} connections still open",
        gw.stats().gateway.connections.load(Relaxed)
    );
    assert!(conns
        .iter()
        .all(|c| c.seen.closed.load(Relaxed) || c.seen.goaway.load(Relaxed)));
    drop((conns, h1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // What stays is bookkeeping that grows once (tokio's I/O slab) and
    // freed objects parked in jemalloc's per-thread caches, which
    // `stats.allocated` still counts.
    let left = heap_allocated().saturating_sub(watch.base());
    assert!(
        left < 2 * MIB,
        "heap not returned after close: {} KiB",
        left / 1024
    );
}
