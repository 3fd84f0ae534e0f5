//! Batched datagram I/O on a tokio `UdpSocket` (nix's recvmmsg/sendmmsg):
//! up to [`BATCH`] datagrams per system call. Neither waits: they run
//! through `try_io`, so a `WouldBlock` clears the socket's readiness.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one call receives or sends at most.
pub const BATCH: usize = 32;

/// Room for [`BATCH`] datagrams of up to `size` bytes each, reused from
/// one call to the next.
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
    pub fn recv(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        let want = max.clamp(1, BATCH);
        let fd = socket.as_raw_fd();
        let Self {
            size,
            bufs,
            lens,
            from,
        } = self;
        let size = *size;
        socket.try_io(Interest::READABLE, || {
            // Not kept in `self`: it holds raw pointers, and the receive
            // loop's future must be Send.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(want, None);
            let mut chunks = bufs.chunks_mut(size);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let got = recvmmsg(
                fd,
                &mut headers,
                iovs.iter_mut().take(want),
                MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            let mut n = 0;
            for ((len, f), msg) in lens.iter_mut().zip(from.iter_mut()).zip(got) {
                *len = msg.bytes.min(size);
                *f = msg
                    .address
                    .as_ref()
                    .and_then(SockaddrStorage::as_sockaddr_in)
                    .map(|a| SocketAddrV4::new(a.ip(), a.port()));
                n += 1;
            }
            Ok(n)
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
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(n, None);
        let each: [Option<(&[u8], SocketAddrV4)>; BATCH] =
            std::array::from_fn(|i| msgs.get(i).map(&parts));
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(each[i].map_or(&[], |(b, _)| b))]);
        let addrs: [Option<SockaddrIn>; BATCH] =
            std::array::from_fn(|i| each[i].map(|(_, to)| SockaddrIn::from(to)));
        let none: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            fd,
            &mut headers,
            iovs.iter().take(n),
            &addrs[..n],
            none,
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
