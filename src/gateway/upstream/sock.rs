//! Socket calls of the HTTP/1.1 client: reads into a stack buffer, and
//! writes with `send`/`sendmsg`.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The most one read takes (on the stack, then copied out at its size).
pub(super) const READ: usize = 16 * 1024;

/// Reads at most `max` bytes into a stack buffer and appends what came.
/// `Ok(0)`: the upstream closed.
pub(super) fn poll_read_into(
    tcp: &mut TcpStream,
    cx: &mut Context<'_>,
    max: usize,
    dst: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut raw = [MaybeUninit::<u8>::uninit(); READ];
    let mut buf = ReadBuf::uninit(&mut raw[..max.clamp(1, READ)]);
    ready!(Pin::new(tcp).poll_read(cx, &mut buf))?;
    dst.extend_from_slice(buf.filled());
    Poll::Ready(Ok(buf.filled().len()))
}

/// Writes `parts` with `send` (one part) or `sendmsg`: a socket call, not
/// the file layer `writev` goes through, on the one write per request.
pub(super) fn poll_send(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    parts: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut one = parts.iter().filter(|p| !p.is_empty());
    let single = match (one.next(), one.next()) {
        (Some(p), None) => Some(&**p),
        _ => None,
    };
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let sock = socket2::SockRef::from(tcp);
        let sent = tcp.try_io(Interest::WRITABLE, || match single {
            Some(buf) => sock.send(buf),
            None => sock.send_vectored(parts),
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}
