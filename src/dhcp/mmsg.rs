//! Batched datagram I/O on a tokio `UdpSocket` (nix's recvmmsg/sendmmsg):
//! up to [`BATCH`] datagrams per system call, IPv4 or IPv6 (with each
//! datagram's IPV6_PKTINFO if asked). Neither waits: they run through
//! `try_io`, so a `WouldBlock` clears the socket's readiness.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one call receives or sends at most.
pub const BATCH: usize = 32;

/// An IPv6 datagram's IPV6_PKTINFO: the interface it arrived on and the
/// address it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo6 {
    pub ifindex: u32,
    pub dst: Ipv6Addr,
}

/// Room for [`BATCH`] datagrams of up to `size` bytes each, reused from
/// one call to the next.
#[derive(Debug)]
pub struct RecvBatch {
    size: usize,
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    /// Each datagram's source address.
    from: [Option<SocketAddr>; BATCH],
    /// Each datagram's IPV6_PKTINFO, when [`RecvBatch::with_pktinfo6`] asked for it.
    info: [Option<PktInfo6>; BATCH],
    pktinfo: bool,
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
            info: [None; BATCH],
            pktinfo: false,
        }
    }

    /// As [`RecvBatch::new`], also keeping each datagram's IPV6_PKTINFO
    /// (the socket must have IPV6_RECVPKTINFO set).
    pub fn with_pktinfo6(size: usize) -> Self {
        Self {
            pktinfo: true,
            ..Self::new(size)
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
            info,
            pktinfo,
        } = self;
        let size = *size;
        let cmsg = pktinfo.then(|| nix::cmsg_space!(libc::in6_pktinfo));
        socket.try_io(Interest::READABLE, || {
            // Not kept in `self`: it holds raw pointers, and the receive
            // loop's future must be Send.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(want, cmsg.clone());
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
            for (((len, f), info), msg) in lens
                .iter_mut()
                .zip(from.iter_mut())
                .zip(info.iter_mut())
                .zip(got)
            {
                *len = msg.bytes.min(size);
                *f = msg.address.as_ref().and_then(source);
                *info = msg.cmsgs().ok().and_then(|mut all| {
                    all.find_map(|c| match c {
                        ControlMessageOwned::Ipv6PacketInfo(p) => Some(PktInfo6 {
                            ifindex: p.ipi6_ifindex,
                            dst: Ipv6Addr::from(p.ipi6_addr.s6_addr),
                        }),
                        _ => None,
                    })
                });
                n += 1;
            }
            Ok(n)
        })
    }

    /// The IPv4 source address of datagram `i` of the last [`RecvBatch::recv`].
    pub fn from(&self, i: usize) -> Option<SocketAddrV4> {
        match self.from[i.min(BATCH - 1)] {
            Some(SocketAddr::V4(a)) => Some(a),
            _ => None,
        }
    }

    /// The IPv6 source address of datagram `i` of the last [`RecvBatch::recv`].
    pub fn from6(&self, i: usize) -> Option<SocketAddrV6> {
        match self.from[i.min(BATCH - 1)] {
            Some(SocketAddr::V6(a)) => Some(a),
            _ => None,
        }
    }

    /// The IPV6_PKTINFO of datagram `i` of the last [`RecvBatch::recv`]
    /// (`None` unless made by [`RecvBatch::with_pktinfo6`]).
    pub fn pktinfo6(&self, i: usize) -> Option<PktInfo6> {
        self.info[i.min(BATCH - 1)]
    }

    /// Datagram `i` of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> &[u8] {
        let start = i.min(BATCH - 1) * self.size;
        &self.bufs[start..start + self.lens[i.min(BATCH - 1)]]
    }
}

/// A received datagram's source as a std address (IPv4 or IPv6).
fn source(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// A destination: IPv4, or IPv6 with its scope id and maybe the source
/// address to send from.
pub trait Dest: Copy + Into<SockaddrStorage> {
    /// The IPv6 source to send from (IPV6_PKTINFO); None: the kernel
    /// picks one (its source address selection, per datagram).
    fn source6(&self) -> Option<Ipv6Addr> {
        None
    }
}

impl Dest for SocketAddrV4 {}
impl Dest for SocketAddrV6 {}

/// An IPv6 destination and the address of ours to send from: the one the
/// client or relay sent to, which also spares the kernel choosing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct To6 {
    pub to: SocketAddrV6,
    pub from: Option<Ipv6Addr>,
}

impl Dest for To6 {
    fn source6(&self) -> Option<Ipv6Addr> {
        self.from
    }
}

impl From<To6> for SockaddrStorage {
    fn from(t: To6) -> Self {
        t.to.into()
    }
}

impl From<To6> for SocketAddr {
    fn from(t: To6) -> Self {
        t.to.into()
    }
}

impl std::fmt::Display for To6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to.fmt(f)
    }
}

/// Sends the first [`BATCH`] or fewer of `msgs` (each one's bytes and
/// destination, IPv4 or IPv6 with its scope id, as `parts` gives them) in
/// one system call, without waiting: those from the same source as the
/// first. Returns how many the kernel took, at least one: the rest are
/// for another call. `Err` is the first message's error (`WouldBlock`:
/// the socket buffer is full; any other: that message cannot be sent, the
/// others may well be). A source the kernel refuses (an address gone
/// from its interface) is left to the kernel to pick instead.
pub fn send<T, A: Dest>(
    socket: &UdpSocket,
    msgs: &[T],
    parts: impl Fn(&T) -> (&[u8], A),
) -> io::Result<usize> {
    let Some(first) = msgs.first() else {
        return Ok(0);
    };
    let from = parts(first).1.source6();
    let n = msgs
        .iter()
        .take(BATCH)
        .take_while(|m| parts(m).1.source6() == from)
        .count();
    match send_from(socket, &msgs[..n], &parts, from) {
        Err(e)
            if from.is_some()
                && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EADDRNOTAVAIL)) =>
        {
            send_from(socket, &msgs[..n], &parts, None)
        }
        sent => sent,
    }
}

/// One sendmmsg of `msgs` (at most [`BATCH`]), from `from` if given.
fn send_from<T, A: Dest>(
    socket: &UdpSocket,
    msgs: &[T],
    parts: &impl Fn(&T) -> (&[u8], A),
    from: Option<Ipv6Addr>,
) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    let fd = socket.as_raw_fd();
    let info = from.map(|a| libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: a.octets(),
        },
        ipi6_ifindex: 0,
    });
    socket.try_io(Interest::WRITABLE, || {
        let room = info.map(|_| nix::cmsg_space!(libc::in6_pktinfo));
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(n, room);
        let each: [Option<(&[u8], A)>; BATCH] = std::array::from_fn(|i| msgs.get(i).map(parts));
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(each[i].map_or(&[], |(b, _)| b))]);
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| each[i].map(|(_, to)| to.into()));
        let cmsgs: Vec<ControlMessage<'_>> =
            info.iter().map(ControlMessage::Ipv6PacketInfo).collect();
        let sent = sendmmsg(
            fd,
            &mut headers,
            iovs.iter().take(n),
            &addrs[..n],
            &cmsgs,
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

    /// IPv6 batches out, and in with IPV6_PKTINFO: each datagram comes
    /// with its source, its arrival interface and its destination.
    #[tokio::test]
    async fn ipv6_batches_keep_each_datagrams_pktinfo() {
        use nix::sys::socket::{setsockopt, sockopt::Ipv6RecvPacketInfo};
        let a = UdpSocket::bind("[::1]:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await.unwrap();
        setsockopt(&b, Ipv6RecvPacketInfo, &true).unwrap();
        let std::net::SocketAddr::V6(to) = b.local_addr().unwrap() else {
            unreachable!()
        };
        // Sent in batches too, to an IPv6 destination.
        let msgs: Vec<[u8; 3]> = (0..40u8).map(|i| [i; 3]).collect();
        let mut at = 0;
        while at < msgs.len() {
            a.writable().await.unwrap();
            match send(&a, &msgs[at..], |m| (&m[..], to)) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut batch = RecvBatch::with_pktinfo6(16);
        let got = drain(&b, &mut batch, 40).await;
        assert_eq!(got.len(), 40);
        assert!(got.iter().enumerate().all(|(i, g)| g == &[i as u8; 3]));
        let std::net::SocketAddr::V6(sender) = a.local_addr().unwrap() else {
            unreachable!()
        };
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        for i in 0..8 {
            assert_eq!(batch.from6(i), Some(sender));
            assert_eq!(batch.from(i), None, "not IPv4");
            assert_eq!(
                batch.pktinfo6(i),
                Some(PktInfo6 {
                    ifindex: lo,
                    dst: Ipv6Addr::LOCALHOST
                })
            );
        }
        // Without asking, no pktinfo.
        a.send_to(b"x", to).await.unwrap();
        let mut plain = RecvBatch::new(16);
        drain(&b, &mut plain, 1).await;
        assert_eq!(plain.pktinfo6(0), None);
        assert_eq!(plain.from6(0), Some(sender));
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

    /// Replies from our own address go out from it, a run per source; a
    /// source that is not ours (gone since) is left to the kernel to pick,
    /// and the reply still goes.
    #[tokio::test]
    async fn a_source_address_is_used_per_run_and_a_foreign_one_left_to_the_kernel() {
        let a = UdpSocket::bind("[::]:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await.unwrap();
        let std::net::SocketAddr::V6(to) = b.local_addr().unwrap() else {
            unreachable!()
        };
        let ours = Some(Ipv6Addr::LOCALHOST);
        let gone = Some("fd00:c6c0::1".parse().unwrap());
        let msgs = [(1u8, ours), (2, ours), (3, gone), (4, None)];
        let parts: Vec<([u8; 1], To6)> = msgs
            .iter()
            .map(|m| ([m.0], To6 { to, from: m.1 }))
            .collect();
        a.writable().await.unwrap();
        let n = send(&a, &parts, |p| (&p.0, p.1)).unwrap();
        assert_eq!(n, 2, "the run from ::1");
        let n = send(&a, &parts[2..], |p| (&p.0, p.1)).unwrap();
        assert_eq!(n, 1, "from the kernel's pick");
        assert_eq!(send(&a, &parts[3..], |p| (&p.0, p.1)).unwrap(), 1);
        let mut batch = RecvBatch::new(16);
        let got = drain(&b, &mut batch, 4).await;
        assert_eq!(got, vec![vec![1], vec![2], vec![3], vec![4]]);
        assert_eq!(batch.from6(0).map(|f| *f.ip()), Some(Ipv6Addr::LOCALHOST));
    }
}
