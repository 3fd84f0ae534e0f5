//! A minimal raw HTTP/2 client for attack tests: frames written by hand
//! (no HPACK encoder beyond a few static-table entries), and a reader task
//! that only records what the server sent (GOAWAY, RST_STREAM, HEADERS,
//! bytes) and whether it closed.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
}

pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK block: `:method` (GET or POST), `:scheme http`, `:path`,
/// `:authority x`, and `content-length` if given. Literals never indexed.
pub fn request_block(post: bool, path: &str, content_length: Option<usize>) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    let mut lit = |idx: &[u8], v: &str| {
        b.extend_from_slice(idx);
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    };
    lit(&[0x04], path);
    lit(&[0x01], "x");
    if let Some(n) = content_length {
        lit(&[0x0f, 0x0d], &n.to_string());
    }
    b
}

pub fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags, stream, block)
}

/// What the server sent on one connection.
#[derive(Default)]
pub struct Seen {
    pub goaway: AtomicBool,
    pub goaway_code: AtomicU32,
    pub closed: AtomicBool,
    pub rst: AtomicU64,
    pub headers: AtomicU64,
    pub bytes: AtomicU64,
}

impl Seen {
    /// GOAWAY or close, the server's two ways of ending an attack.
    pub fn ended(&self) -> bool {
        self.goaway.load(Relaxed) || self.closed.load(Relaxed)
    }
    pub fn summary(&self) -> String {
        format!(
            "goaway={} (code {}), closed={}, rst={}, headers={}, bytes={}",
            self.goaway.load(Relaxed),
            self.goaway_code.load(Relaxed),
            self.closed.load(Relaxed),
            self.rst.load(Relaxed),
            self.headers.load(Relaxed),
            self.bytes.load(Relaxed)
        )
    }
}

/// A raw h2c connection that has sent the preface and `initial` settings.
pub struct Raw {
    pub w: OwnedWriteHalf,
    r: Option<OwnedReadHalf>,
    pub seen: Arc<Seen>,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr, initial: &[(u16, u32)]) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.set_nodelay(true);
        let (r, mut w) = s.into_split();
        w.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        w.write_all(&settings(initial)).await.expect("settings");
        Self {
            w,
            r: Some(r),
            seen: Arc::new(Seen::default()),
        }
    }

    /// Starts recording what the server sends (until then nothing is read:
    /// the "never reads" attacks).
    pub fn read_in_background(&mut self) {
        if let Some(r) = self.r.take() {
            tokio::spawn(read_frames(r, self.seen.clone()));
        }
    }

    /// Writes, giving up after `limit` (a server applying back-pressure
    /// stops reading); `false` when the write failed or timed out.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.w.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Waits up to `limit` for GOAWAY or close.
    pub async fn wait_end(&self, limit: Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while !self.seen.ended() && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen.ended()
    }
}

async fn read_frames(mut r: OwnedReadHalf, seen: Arc<Seen>) {
    let mut head = [0u8; 9];
    // Payloads are read in small pieces: this buffer is heap the attack
    // tests would otherwise count against the server.
    let mut payload = vec![0u8; 1024];
    'frames: loop {
        if r.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut left = len;
        while left > 0 {
            let n = left.min(payload.len());
            if r.read_exact(&mut payload[..n]).await.is_err() {
                break 'frames;
            }
            left -= n;
        }
        seen.bytes.fetch_add(9 + len as u64, Relaxed);
        match head[3] {
            GOAWAY => {
                if len >= 8 {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    seen.goaway_code.store(code, Relaxed);
                }
                seen.goaway.store(true, Relaxed);
            }
            RST_STREAM => {
                seen.rst.fetch_add(1, Relaxed);
            }
            HEADERS => {
                seen.headers.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
    seen.closed.store(true, Relaxed);
}
