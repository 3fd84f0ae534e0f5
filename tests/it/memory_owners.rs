//! Memory by owner against the real `vpcbox run --headless`: a known load
//! per owner moves that owner's figure by about what the load holds, the
//! heap's owners add up to jemalloc's allocated bytes, and `vpcbox status`
//! (text and `--json`) shows it all.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType as M;
use serde_json::Value;

use crate::dhcp_support::{mac, packet, send_burst};
use crate::support::{eventually, free_port, vpcbox, write_token, Running};

const TOKEN: &str = "memory-owner-token";
const RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const MIB: f64 = 1048576.0;

struct Node {
    vb: Running,
    http: u16,
    dhcp: u16,
    cfg: std::path::PathBuf,
}

/// A node with a route to `upstream`, quotas out of the way of the loads
/// (each owner must see its whole load), and a /16 pool.
fn start(dir: &Path, upstream: u16) -> Node {
    let (dhcp, http) = (free_port(), free_port());
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_token(&data.join("admin.token"), TOKEN);
    let text = format!(
        r#"[storage]
path = "{data}"
[dhcp]
listen = "127.0.0.1:{dhcp}"
server_id = "10.0.0.1"
per_client_rate = "1/s"
per_client_burst = 1000
global_rate = "10000000/s"
new_lease_rate = "10000000/s"
max_leases_per_port = 0
queue = 8192
[gateway]
listen = "127.0.0.1:{http}"
admin_token_file = "{data}/admin.token"
per_client_rate = "1000000/s"
body_budget = "64MiB"
max_body = "1MiB"
[memory]
budget = "2GiB"
[process]
shutdown_grace = "2s"
[[route]]
prefix = "/slow/"
upstream = "http://127.0.0.1:{upstream}"
max_pending = 1000
timeout = "60s"
[[subnet]]
id = "lab"
cidr = "10.1.0.0/16"
pools = ["10.1.0.10-10.1.255.250"]
gateway = "10.1.0.1"
lease_time = "1h"
relays = ["127.0.0.2"]
"#,
        data = data.display()
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut vb = Running::start(&cfg);
    let up = eventually(Duration::from_secs(15), || {
        http_call(http, "GET", "/readyz", "").0 == 200
    });
    assert!(up, "vpcbox never became ready: {}", vb.stderr());
    Node {
        vb,
        http,
        dhcp,
        cfg,
    }
}

/// One HTTP/1.1 request with the admin token; (status, body), (0, "") if nothing answers.
fn http_call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    crate::support::http_request(to, Some(TOKEN), method, path, body, Duration::from_secs(10))
}

fn status(port: u16) -> Value {
    let (code, body) = http_call(port, "GET", "/v1/status", "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn owner(s: &Value, o: &str) -> f64 {
    s["memory"]["by_owner"][o].as_f64().unwrap()
}

/// Polls `/v1/status` for at least `min` and until the DHCP queue was seen
/// at least 32 deep (at most `max`): the largest `dhcp_queues` figure, the
/// status holding it, and the deepest queue seen.
fn dhcp_peak(port: u16, min: Duration, max: Duration) -> (f64, Value, f64) {
    let t0 = Instant::now();
    let (mut best, mut depth) = ((f64::MIN, Value::Null), 0f64);
    while t0.elapsed() < min || (depth < 32.0 && t0.elapsed() < max) {
        let s = status(port);
        depth = depth.max(s["dhcp"]["queue_depth"].as_f64().unwrap());
        if owner(&s, "dhcp_queues") > best.0 {
            best = (owner(&s, "dhcp_queues"), s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (best.0, best.1, depth)
}

const PARTS: [&str; 7] = [
    "store",
    "clients",
    "gateway_buffers",
    "dhcp_queues",
    "allocator_retained",
    "allocator_dirty",
    "other",
];

/// The seven parts add up to RSS with `other` never cut to 0, and, read
/// from outside the process (`/proc/<pid>/smaps_rollup`), the heap's parts
/// (all but `other`, plus the unowned heap inside it) are the process's
/// anonymous resident memory (heap and thread stacks) within 4 MiB + 3 %:
/// the owners are measured in the page tables, jemalloc's metadata and the
/// unowned heap are jemalloc's own counts.
fn adds_up(s: &Value, pid: u32) {
    let parts: f64 = PARTS.iter().map(|o| owner(s, o)).sum();
    let rss = s["memory"]["rss_bytes"].as_f64().unwrap();
    let other = owner(s, "other");
    assert!(
        (parts - rss).abs() <= rss * 0.01 && other > 0.0,
        "parts {parts} vs rss {rss}: {s}"
    );
    let heap = parts - other + owner(s, "unowned_heap");
    let anon = anonymous_rss(pid);
    eprintln!(
        "heap parts {:.2} MiB, anonymous {:.2} MiB, rss {:.2} MiB {}",
        heap / MIB,
        anon / MIB,
        rss / MIB,
        s["memory"]["by_owner"]
    );
    assert!(
        (heap - anon).abs() <= 4.0 * MIB + anon * 0.03,
        "heap parts {heap} vs anonymous resident {anon}: {s}"
    );
}

/// `Anonymous:` of `/proc/<pid>/smaps_rollup`, in bytes.
fn anonymous_rss(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024.0
}

/// An upstream that accepts and never reads, with a small receive buffer:
/// requests stay pending and their bodies back up into the gateway.
fn silent_upstream() -> (u16, std::thread::JoinHandle<()>) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(1024).unwrap();
    let l: TcpListener = s.into();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    (port, t)
}

/// `streams` h2c streams on `conns` connections, each a POST declaring
/// twice `body` bytes and sending `body` of them, held open until the
/// runtime drops.
fn hold_streams(
    rt: &tokio::runtime::Runtime,
    port: u16,
    conns: usize,
    streams: usize,
    body: usize,
) {
    rt.block_on(async {
        for _ in 0..conns {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(conn);
            for i in 0..streams {
                let req = http::Request::post(format!("http://127.0.0.1:{port}/slow/{i}"))
                    .header("content-length", (2 * body).to_string())
                    .body(())
                    .unwrap();
                client = client.ready().await.unwrap();
                let (resp, mut send) = client.send_request(req, false).unwrap();
                send.send_data(vec![7u8; body].into(), false).unwrap();
                tokio::spawn(async move {
                    let _keep = send;
                    let _ = resp.await;
                });
            }
            tokio::spawn(async move {
                let _keep = client;
                std::future::pending::<()>().await
            });
        }
    });
}

#[test]
fn each_owner_moves_with_its_load_and_the_owners_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _upstream) = silent_upstream();
    let mut node = start(dir.path(), up);
    let pid = node.vb.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let base = status(node.http);
    adds_up(&base, pid);

    // Gateway: 32 held streams, each with 128 KiB of its body sent, against
    // an upstream that never reads: up to a stream window (64 KiB) of each
    // waits in the gateway, plus what its upstream client has buffered.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (n, body) = (32usize, 128usize << 10);
    hold_streams(&rt, node.http, 2, n / 2, body);
    let (low, high) = ((n * (32 << 10)) as f64, (n * (512 << 10)) as f64);
    let pending = eventually(Duration::from_secs(10), || {
        let s = status(node.http);
        s["routes"][0]["pending"] == n
            && owner(&s, "gateway_buffers") - owner(&base, "gateway_buffers") >= low
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = status(node.http);
    let rise = owner(&s, "gateway_buffers") - owner(&base, "gateway_buffers");
    eprintln!(
        "gateway_buffers +{:.2} MiB for {n} held streams",
        rise / MIB
    );
    assert!(
        pending && rise <= high,
        "gateway_buffers +{:.2} MiB for {n} streams (expected {:.1}..{:.1} MiB): {s}",
        rise / MIB,
        low / MIB,
        high / MIB
    );
    adds_up(&s, pid);
    drop(rt);
    let freed = eventually(Duration::from_secs(10), || {
        owner(&status(node.http), "gateway_buffers") < owner(&base, "gateway_buffers") + rise / 4.0
    });
    assert!(freed, "the streams' bytes stayed: {}", status(node.http));

    // Store: M leases through the allocation API (durable writes to sled).
    let before = status(node.http);
    let m = 2000;
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let port = node.http;
            std::thread::spawn(move || {
                for i in (w..m).step_by(8) {
                    let b = format!(
                        r#"{{"client": "mac:02:bb:00:00:{:02x}:{:02x}"}}"#,
                        i >> 8,
                        i & 0xff
                    );
                    let (code, text) = http_call(port, "POST", "/v1/subnets/lab/allocations", &b);
                    assert!(code == 200 || code == 201, "{code} {text}");
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let after = status(node.http);
    let rise = owner(&after, "store") - owner(&before, "store");
    assert!(
        rise >= (m * 64) as f64 && rise <= ((m * 32) << 10) as f64,
        "store +{rise} bytes for {m} leases: {after}"
    );
    adds_up(&after, pid);

    // DHCP and the client tables: DISCOVERs from 20,000 MACs, as fast as
    // one socket sends them, until the queue is seen deep: the DHCP thread
    // holds the queued jobs (a datagram each) and those in flight; each new
    // MAC gets a quota of its own.
    let before = status(node.http);
    let relay = UdpSocket::bind((RELAY, node.dhcp)).unwrap();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], node.dhcp));
    let packets: Vec<Vec<u8>> = (0..20_000)
        .map(|i| packet(M::Discover, mac(0x100000 + i), RELAY, |_| {}))
        .collect();
    let datagram = packets[0].len() as f64;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for chunk in packets.chunks(512) {
                    send_burst(&relay, to, chunk);
                }
            }
        })
    };
    let (top, at, depth) = dhcp_peak(node.http, Duration::from_secs(3), Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    let rise = top - owner(&before, "dhcp_queues");
    eprintln!(
        "dhcp_queues peak +{:.2} MiB, queue seen {depth} deep",
        rise / MIB
    );
    // The server takes at most 256 datagrams per look before its workers
    // drain them: the queue's load is small, and its pages stay in use
    // while the flood lasts.
    assert!(
        depth >= 32.0 && rise >= depth * datagram && rise <= 16.0 * MIB,
        "dhcp_queues +{rise} with the queue seen {depth} deep ({datagram} bytes a job): {at}"
    );
    adds_up(&at, pid);
    let s = status(node.http);
    let clients = owner(&s, "clients") - owner(&before, "clients");
    // Not every datagram of the flood reaches the server (socket buffers
    // overflow): a lower bound that thousands of new keys pass.
    eprintln!("clients +{:.2} MiB", clients / MIB);
    assert!(
        clients >= (32 << 10) as f64 && clients <= 64.0 * MIB,
        "clients +{clients} for up to 20,000 new quota keys: {s}"
    );
    // What the burst leaves on the DHCP thread (its in-flight maps keep
    // their grown capacity, tokio its queue blocks) stays visible, bounded.
    let after = status(node.http);
    eprintln!(
        "dhcp_queues after the burst: +{:.2} MiB",
        (owner(&after, "dhcp_queues") - owner(&before, "dhcp_queues")) / MIB
    );
    node.vb.signal("TERM");
    assert_eq!(
        node.vb.wait(Duration::from_secs(10)),
        Some(0),
        "{}",
        node.vb.stderr()
    );
}

#[test]
fn vpcbox_status_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _upstream) = silent_upstream();
    let node = start(dir.path(), up);
    let (code, _) = http_call(
        node.http,
        "POST",
        "/v1/isolations",
        r#"{"client": "mac:02:00:00:00:00:42"}"#,
    );
    assert_eq!(code, 201);
    // The DHCP thread publishes its queue's capacity once it serves, and a
    // snapshot divides memory by owner once the governor's first sample
    // is complete (one taken during it shows the zeros of the start).
    let serving = eventually(Duration::from_secs(5), || {
        let s = status(node.http);
        s["dhcp"]["queue_capacity"] == 8192
            && s["memory"]["by_owner"]["store"].as_u64().unwrap_or(0) > 0
    });
    assert!(serving);
    let cfg_path = node.cfg.clone();
    let cfg = cfg_path.to_str().unwrap();
    let o = vpcbox(&["status", "--config", cfg]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "· ready · store ok",
        "overload normal · RSS ",
        "of 2.0 GiB budget",
        "MEMORY",
        "store ",
        "gateway_buffers ",
        "dhcp_queues ",
        "allocator_retained ",
        "allocator_dirty ",
        "other ",
        "of which unowned heap",
        "slow ",
        "dhcp queue",
        "mac:02:00:00:00:00:42",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(text.lines().count() <= 40, "more than a screen:\n{text}");

    let o = vpcbox(&["status", "--json", "--config", cfg]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["health"]["ready"], true);
    assert_eq!(v["health"]["storage_degraded"], Value::Null);
    assert_eq!(v["overload"]["state"], "normal");
    assert_eq!(v["overload"]["budget_bytes"], 2u64 << 30);
    assert!(
        v["memory"]["by_owner"]["store"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["clients"].as_array().unwrap().len() <= 5);
    assert_eq!(v["routes"][0]["name"], "slow");
    assert_eq!(v["dhcp"]["queue_capacity"], 8192);
    assert_eq!(v["isolations"][0]["client"], "mac:02:00:00:00:00:42");

    // The token guards it; a node that is not there is 69.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "nope").unwrap();
    let o = vpcbox(&[
        "status",
        "--token-file",
        wrong.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_eq!(o.status.code(), Some(77));
    drop(node);
    let o = vpcbox(&["status", "--config", cfg]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
