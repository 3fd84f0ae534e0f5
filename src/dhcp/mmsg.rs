//! Batched datagram I/O on a tokio `UdpSocket`: recvmmsg(2) takes up to
//! [`BATCH`] waiting datagrams in one system call, sendmmsg(2) sends up to
//! [`BATCH`] replies in one. Neither ever waits: they run through
//! `try_io`, so a `WouldBlock` clears the socket's readiness as
//! `try_recv_from` / `try_send_to` do.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one call receives or sends at most.
pub const BATCH: usize = 32;

/// Room for [`BATCH`] datagrams of up to `size` bytes each, reused from
/// one call to the next (no allocation per datagram).
#[derive(Debug)]
pub struct RecvBatch {
    size: usize,
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    /// Each datagram's source address (`None`: not IPv4).
    from: [Option<SocketAddrV4>; BATCH],
}

impl RecvBatch {
    /// `size` is the longest datagram kept whole; a longer one is cut to
    /// `size` bytes, so one byte over a limit shows oversize datagrams as
    /// such.
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            bufs: vec![0; size.max(1) * BATCH],
            lens: [0; BATCH],
            from: [None; BATCH],
        }
    }

    /// Takes up to `max` (at most [`BATCH`]) datagrams waiting on `socket`
    /// without waiting, and returns how many; fewer than asked means the
    /// socket had no more. `Err(WouldBlock)` when none was waiting.
    #[allow(unsafe_code)]
    pub fn recv(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        let want = max.clamp(1, BATCH);
        let (size, fd) = (self.size, socket.as_raw_fd());
        let base = self.bufs.as_mut_ptr();
        let (lens, from) = (&mut self.lens, &mut self.from);
        socket.try_io(Interest::READABLE, || {
            let mut names = [sockaddr(SocketAddrV4::new(0.into(), 0)); BATCH];
            let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
                iov_base: base.wrapping_add(i * size).cast(),
                iov_len: size,
            });
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero
            // lengths: no name, no control data).
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for ((h, v), n) in hdrs.iter_mut().zip(iov.iter_mut()).zip(&mut names) {
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (n as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            // SAFETY: the first `want` headers each point at one iovec of
            // `size` bytes inside `bufs` (BATCH * size bytes, borrowed
            // mutably for this call) and one sockaddr_in in `names`, all
            // alive until it returns; the kernel writes only there and
            // into the headers.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
            for (((len, f), h), n) in lens
                .iter_mut()
                .zip(from.iter_mut())
                .zip(&hdrs)
                .zip(&names)
                .take(got)
            {
                *len = (h.msg_len as usize).min(size);
                // The kernel sets msg_namelen to the source's length; an
                // IPv4 socket's sources are sockaddr_in.
                let v4 = h.msg_hdr.msg_namelen as usize == std::mem::size_of::<libc::sockaddr_in>()
                    && i32::from(n.sin_family) == libc::AF_INET;
                *f = v4.then(|| {
                    SocketAddrV4::new(
                        u32::from_be(n.sin_addr.s_addr).into(),
                        u16::from_be(n.sin_port),
                    )
                });
            }
            Ok(got)
        })
    }

    /// The source address of datagram `i` of the last [`RecvBatch::recv`].
    pub fn from(&self, i: usize) -> Option<SocketAddrV4> {
        self.from[i.min(BATCH - 1)]
    }

    /// Datagram `i` of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> &[u8] {
        let start = i.min(BATCH - 1) * self.size;
        &self.bufs[start..start + self.lens[i.min(BATCH - 1)]]
    }
}

/// Sends the first [`BATCH`] or fewer of `msgs` (each one's bytes and
/// destination, as `parts` gives them) in one system call, without
/// waiting. Returns how many the kernel took, at least one: the rest are
/// for another call. `Err` is the first message's error (`WouldBlock`:
/// the socket buffer is full; any other: that message cannot be sent, the
/// others may well be).
#[allow(unsafe_code)]
pub fn send<T>(
    socket: &UdpSocket,
    msgs: &[T],
    parts: impl Fn(&T) -> (&[u8], SocketAddrV4),
) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let fd = socket.as_raw_fd();
    socket.try_io(Interest::WRITABLE, || {
        let mut addrs = [sockaddr(SocketAddrV4::new(0.into(), 0)); BATCH];
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for ((m, a), v) in msgs.iter().zip(&mut addrs).zip(&mut iov) {
            let (bytes, to) = parts(m);
            *a = sockaddr(to);
            // The kernel only reads through it (sendmsg).
            v.iov_base = bytes.as_ptr().cast_mut().cast();
            v.iov_len = bytes.len();
        }
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero
        // lengths: no name, no control data).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((h, a), v) in hdrs.iter_mut().zip(&mut addrs).zip(&mut iov).take(n) {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers each point at one sockaddr_in in
        // `addrs` and one iovec over a message's bytes (borrowed from
        // `msgs` for this call), all alive until it returns; the kernel
        // reads those and writes only `msg_len` in the headers.
        let sent =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    })
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use crate::dhcp::mmsg::*;
    use std::net::Ipv4Addr;

    async fn pair() -> (UdpSocket, UdpSocket, SocketAddrV4) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(to) = b.local_addr().unwrap() else {
            unreachable!()
        };
        (a, b, to)
    }

    /// Receives every datagram waiting on `b`, [`BATCH`] at most per call.
    async fn drain(b: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < want {
            b.readable().await.unwrap();
            match batch.recv(b, usize::MAX) {
                Ok(n) => out.extend((0..n).map(|i| batch.get(i).to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    /// More than one batch goes out in several calls, each taking at most
    /// BATCH; all arrive, in order, and a datagram over the buffer size
    /// arrives cut to it (one byte over the limit: seen as oversize).
    #[tokio::test]
    async fn batches_go_out_and_come_in_whole_and_oversize_ones_are_seen() {
        let (a, b, to) = pair().await;
        let mut msgs: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 300]).collect();
        msgs[40] = vec![40; 1600];
        let mut at = 0;
        while at < msgs.len() {
            a.writable().await.unwrap();
            match send(&a, &msgs[at..], |m| (m, to)) {
                Ok(n) => {
                    assert!((1..=BATCH).contains(&n), "{n}");
                    at += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut batch = RecvBatch::new(1501);
        let got = drain(&b, &mut batch, msgs.len()).await;
        assert_eq!(got.len(), 70);
        for (i, g) in got.iter().enumerate() {
            let len = if i == 40 { 1501 } else { 300 };
            assert_eq!(g, &vec![i as u8; len], "datagram {i}");
        }
        let std::net::SocketAddr::V4(sender) = a.local_addr().unwrap() else {
            unreachable!()
        };
        assert_eq!(batch.from(0), Some(sender), "the source of the last batch");
        assert_eq!(
            batch.recv(&b, 8).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// A message the kernel refuses (a broadcast on a socket without
    /// SO_BROADCAST) fails alone: the ones before it went, the ones after
    /// it go with the next call.
    #[tokio::test]
    async fn a_refused_message_fails_alone() {
        let (a, b, to) = pair().await;
        let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, to.port());
        let msgs = [(1u8, to), (2, to), (3, bcast), (4, to)];
        let bytes = |m: &(u8, SocketAddrV4)| -> ([u8; 1], SocketAddrV4) { ([m.0], m.1) };
        let parts: Vec<_> = msgs.iter().map(bytes).collect();
        a.writable().await.unwrap();
        assert_eq!(send(&a, &parts, |p| (&p.0, p.1)).unwrap(), 2);
        let e = send(&a, &parts[2..], |p| (&p.0, p.1)).unwrap_err();
        assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert_eq!(send(&a, &parts[3..], |p| (&p.0, p.1)).unwrap(), 1);
        let got = drain(&b, &mut RecvBatch::new(16), 3).await;
        assert_eq!(got, vec![vec![1], vec![2], vec![4]]);
    }
}
