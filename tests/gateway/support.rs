//! Helpers for the gateway tests: an in-process `Gateway` on port 0, tiny
//! upstream servers, HTTP clients bound to a chosen source IP, a raw
//! HTTP/2 frame writer, and heap measurement through jemalloc.
//!
//! The test binary uses jemalloc (like `vpcbox` itself) so a test can read
//! `stats.allocated`; gateway tests take [`serial`] so one test's heap does
//! not show up in another's measurement.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vpcbox::config::Config;
use vpcbox::gateway::{ApiContext, Gateway};
use vpcbox::isolation::IsolationSet;
use vpcbox::shared::Shared;
use vpcbox::stats::Stats;

/// The admin bearer token of in-process test gateways.
pub const TEST_TOKEN: &str = "test-admin-token";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs gateway tests one at a time (heap measurements are process-wide).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Bytes allocated on the jemalloc heap now.
pub fn heap_allocated() -> u64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64
}

/// Samples the heap every few ms on a thread until dropped; `peak()` is the
/// largest growth over the baseline taken at start.
pub struct HeapWatch {
    base: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HeapWatch {
    pub fn start() -> Self {
        let base = heap_allocated();
        let peak = Arc::new(AtomicU64::new(base));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Relaxed) {
                p.fetch_max(heap_allocated(), Relaxed);
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Self { base, peak, stop }
    }
    /// The heap at start.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Peak growth in bytes so far.
    pub fn growth(&self) -> u64 {
        self.peak
            .load(Relaxed)
            .max(heap_allocated())
            .saturating_sub(self.base)
    }
}

impl Drop for HeapWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

pub const MIB: u64 = 1 << 20;

/// A config with the gateway on 127.0.0.1:0; `gateway` lines go into
/// `[gateway]`, `tail` after it (routes).
pub fn config(gateway: &str, tail: &str) -> Config {
    let dir = std::env::temp_dir().join("vpcbox-gw-test");
    let text = format!(
        r#"[storage]
path = "{data}"

[dhcp]
listen = "127.0.0.1:0"
server_id = "10.0.0.1"

[gateway]
listen = "127.0.0.1:0"
admin_token_file = "{data}/admin.token"
{gateway}

[process]
shutdown_grace = "2s"
{tail}"#,
        data = dir.display()
    );
    Config::parse(&text, "<test>").expect("test config")
}

/// A running in-process gateway; cancelled on drop.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub shared: Shared,
    /// This gateway's own store (sled locks its directory per process).
    _data: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start(mut config: Config) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        config.storage.path = data.path().to_path_buf();
        let stats = Stats::new(config.stats.tracked_clients);
        let shared = Shared::new(Arc::new(config), stats.clone(), IsolationSet::in_memory());
        let ipam = vpcbox::ipam::Ipam::open(
            &shared.config.storage.path,
            vpcbox::app::store::ipam_options(&shared.config),
            stats.clone(),
        )
        .expect("open ipam");
        ipam.spawn(&shared.tracker, shared.cancel.clone());
        let (snap_tx, snapshots) = tokio::sync::watch::channel(Arc::default());
        std::mem::forget(snap_tx); // keep the channel open for the test's life
        let api = ApiContext::new(&shared, ipam, snapshots, Arc::from(TEST_TOKEN));
        api.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        let gw = Gateway::bind(&shared, api).expect("bind gateway");
        let addr = gw.local_addr().expect("addr");
        shared.tracker.spawn(gw.run());
        Self {
            addr,
            shared,
            _data: data,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP client from source address `from`; `h2` = prior-knowledge h2c.
pub fn client(from: &str, h2: bool) -> TestClient {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(from.parse::<IpAddr>().expect("ip")));
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2)
        .pool_max_idle_per_host(if h2 { 1 } else { 256 });
    b.build(conn)
}

/// `(status, headers, body)` of one request.
pub async fn send(
    c: &TestClient,
    method: &str,
    url: &str,
    body: Bytes,
) -> Result<(u16, http::HeaderMap, Bytes), String> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = c.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status.as_u16(), parts.headers, body))
}

pub async fn get(c: &TestClient, url: &str) -> (u16, http::HeaderMap, Bytes) {
    send(c, "GET", url, Bytes::new()).await.expect("request")
}

/// The `error.code` of a JSON error body.
pub fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// What a test upstream does with each request.
#[derive(Clone, Copy)]
pub enum Upstream {
    /// Answers `ok` after the delay, having read the whole body.
    Sleep(Duration),
    /// Answers with this many bytes (streamed in 64 KiB chunks).
    Big(usize),
    /// Accepts the connection and closes it without answering.
    Close,
    /// Accepts and never reads nor answers.
    Stall,
    /// Answers `{path} xff={x-forwarded-for}`, then ` expect={expect}` if
    /// the request had that field.
    Echo,
    /// Promises 1 MiB, sends 100 KiB, closes.
    Truncate,
}

/// A tiny HTTP/1.1 upstream on 127.0.0.1:0. Lives until the runtime ends.
pub async fn upstream(kind: Upstream) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_upstream(s, kind));
        }
    });
    addr
}

async fn serve_upstream(s: tokio::net::TcpStream, kind: Upstream) {
    match kind {
        Upstream::Close => drop(s),
        Upstream::Truncate => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n")
                .await;
            let _ = s.write_all(&[b'x'; 100 * 1024]).await;
        }
        Upstream::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        }
        Upstream::Sleep(_) | Upstream::Big(_) | Upstream::Echo => {
            let svc = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let field = |name| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let mut echo = format!("{} xff={}", req.uri(), field("x-forwarded-for"));
                    if req.headers().contains_key("expect") {
                        echo += &format!(" expect={}", field("expect"));
                    }
                    let _ = req.into_body().collect().await;
                    let body = match kind {
                        Upstream::Echo => {
                            http_body_util::Either::Left(Full::new(Bytes::from(echo)))
                        }
                        Upstream::Sleep(d) => {
                            tokio::time::sleep(d).await;
                            http_body_util::Either::Left(Full::new(Bytes::from_static(b"ok")))
                        }
                        Upstream::Big(n) => http_body_util::Either::Right(big_body(n)),
                        _ => unreachable!(),
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
    }
}

fn big_body(
    n: usize,
) -> http_body_util::StreamBody<
    impl futures::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> + Send,
> {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let count = n.div_ceil(chunk.len());
    http_body_util::StreamBody::new(futures::stream::iter(
        (0..count).map(move |_| Ok(hyper::body::Frame::data(chunk.clone()))),
    ))
}

/// A `[[route]]` block to `addr`.
pub fn route(prefix: &str, addr: SocketAddr, max_pending: usize, timeout: &str) -> String {
    format!(
        "\n[[route]]\nprefix = \"{prefix}\"\nupstream = \"http://{addr}\"\nmax_pending = {max_pending}\ntimeout = \"{timeout}\"\nstrip_prefix = true\n"
    )
}

/// Waits until `f` holds, at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Waits (at most 2 s each) until `route` has nothing pending and no
/// stream is open, then checks the body budget is all back.
pub async fn assert_released(gw: &TestGateway, route: &str) {
    let pending = gw.stats().gateway.route(route, 0);
    assert!(
        eventually(Duration::from_secs(2), || pending.pending.load(Relaxed)
            == 0)
        .await,
        "{route}: pending {}",
        pending.pending.load(Relaxed)
    );
    assert!(
        eventually(Duration::from_secs(2), || gw
            .stats()
            .gateway
            .streams
            .load(Relaxed)
            == 0)
        .await
    );
    assert_eq!(gw.stats().gateway.body_bytes_in_use.load(Relaxed), 0);
}

/// Connections a test upstream has accepted so far, and has open now.
#[derive(Clone, Default)]
pub struct Counts {
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    pub open: Arc<std::sync::atomic::AtomicUsize>,
}

/// A test upstream on 127.0.0.1:0: `serve` runs for each accepted
/// connection, which is counted while it runs.
pub async fn counted_upstream<F, Fut>(serve: F) -> (SocketAddr, Counts)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counts = Counts::default();
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.accepted.fetch_add(1, Relaxed);
            c.open.fetch_add(1, Relaxed);
            let open = c.open.clone();
            let served = serve(s);
            tokio::spawn(async move {
                served.await;
                open.fetch_sub(1, Relaxed);
            });
        }
    });
    (addr, counts)
}
