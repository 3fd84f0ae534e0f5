//! `/v1/events/stream` under readers that never read, from outside the
//! process: each is dropped (counted as `slow_reader`) once it falls
//! behind, a reading client beside them keeps its updates, the stream cap
//! refuses extras with 503 `stream_cap`, token-less readers get at most
//! half the slots, and RSS stays flat through two waves of slow readers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{eventually, write_config};
use crate::ui_browser::{healthy, start_demo, DEMO_SUBNET};

const CAP: usize = 8;

/// Opens a stream and sends the request; reads nothing. The socket's
/// receive buffer is small, so the server's sends stall soon.
fn open(http: u16, token: Option<&str>) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http).into();
    sock.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(s, "GET /v1/events/stream HTTP/1.1\r\nhost: x\r\n{auth}\r\n").expect("write");
    s
}

/// The status line's code of a stream just opened (reads the head only).
fn status_of(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metric(http: u16, name: &str, token: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A reader that keeps reading, counting updates, until told to stop.
fn reader(
    http: u16,
    token: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<bool>) {
    let updates = Arc::new(AtomicUsize::new(0));
    let mut s = open(http, Some(token));
    assert_eq!(status_of(&mut s), 200);
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let n = updates.clone();
    let t = std::thread::spawn(move || {
        let mut lines = BufReader::new(s);
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) => return false, // the server ended it
                Ok(_) if line.starts_with("event: update") => {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        true
    });
    (updates, t)
}

const SLOW: &str = "vpcbox_client_drops_total{reason=\"slow_reader\"}";

#[test]
fn slow_readers_are_dropped_the_cap_refuses_extras_and_rss_stays_flat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), DEMO_SUBNET);
    let text = std::fs::read_to_string(&cfg).expect("read");
    let text = text.replace(
        "[gateway]\n",
        &format!("[gateway]\nmax_event_streams = {CAP}\nsocket_buffer = \"4KiB\"\n"),
    );
    std::fs::write(&cfg, text).expect("write");
    let vb = start_demo(&cfg);
    assert!(healthy(http));
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .expect("token")
        .trim()
        .to_owned();
    let pid = vb.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let baseline = rss_kib(pid);

    // One reader that reads, beside the slow ones.
    let stop = Arc::new(AtomicBool::new(false));
    let (updates, live) = reader(http, &token, stop.clone());
    let reading_since = Instant::now();
    let mut peak = baseline;
    for wave in 1..=2u64 {
        // Token-less readers: half the slots at most.
        let mut anon: Vec<TcpStream> = (0..CAP / 2).map(|_| open(http, None)).collect();
        assert!(anon.iter_mut().all(|s| status_of(s) == 200));
        let mut extra = open(http, None);
        assert_eq!(
            status_of(&mut extra),
            503,
            "a token-less reader over half the slots"
        );
        drop((anon, extra));
        // Every other slot to slow readers with the token (the ones just
        // closed free theirs at the next update), then one more: refused.
        let mut slow = Vec::new();
        while slow.len() < CAP - 1 {
            let mut s = open(http, Some(&token));
            match status_of(&mut s) {
                200 => slow.push(s),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let mut over = open(http, Some(&token));
        assert_eq!(status_of(&mut over), 503, "a reader over the cap");
        let mut rest = [0u8; 1024];
        let n = over.read(&mut rest).expect("the refusal's body");
        let body = String::from_utf8_lossy(&rest[..n]);
        assert!(body.contains("stream_cap"), "{body}");
        // Never read again: every slow one is dropped.
        let want = wave * (CAP as u64 - 1);
        let t0 = Instant::now();
        let dropped = eventually(Duration::from_secs(30), || {
            peak = peak.max(rss_kib(pid));
            metric(http, SLOW, &token) >= want
        });
        assert!(
            dropped,
            "wave {wave}: {} of {want} slow readers dropped",
            metric(http, SLOW, &token)
        );
        eprintln!("wave {wave}: dropped in {:?}", t0.elapsed());
        // Their slots are free again.
        let mut again = open(http, Some(&token));
        assert_eq!(status_of(&mut again), 200, "a slot after the drops");
        drop((slow, again));
    }
    let before = updates.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        updates.load(Ordering::Relaxed) > before,
        "the reading client still gets updates"
    );
    let most = 4.0 * reading_since.elapsed().as_secs_f64() + 2.0;
    assert!(
        before >= 20 && (before as f64) <= most,
        "about 4 updates a second, never more: {before} in {:?}",
        reading_since.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    assert!(
        live.join().expect("reader"),
        "the reading client was never dropped"
    );
    let grown = peak.saturating_sub(baseline);
    eprintln!("RSS baseline {baseline} KiB, peak {peak} KiB");
    assert!(grown < 12 * 1024, "RSS grew {grown} KiB under slow readers");
}
