//! The DHCPv6 socket: one UDP socket on `[dhcp6] listen` for relays and
//! directly attached clients alike. It joins All_DHCP_Relay_Agents_and_Servers
//! (ff02::1:2) on each of `[dhcp6] interfaces` and asks the kernel for each
//! datagram's arrival interface and destination (IPV6_RECVPKTINFO), which
//! pick a direct client's subnet and tell multicast from unicast.

use std::net::{Ipv6Addr, SocketAddr};

use nix::sys::socket::{self, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::dhcp::DhcpError;

/// All_DHCP_Relay_Agents_and_Servers (RFC 9915 7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Kernel receive buffer: absorbs a burst while bounding kernel memory.
const RECV_BUFFER: usize = 4 << 20;

/// A directly attached interface: its index and IPv6 addresses (which
/// select the subnet of its clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface6 {
    pub name: String,
    pub index: u32,
    pub addrs: Vec<Ipv6Addr>,
}

/// Binds `listen` and joins ff02::1:2 on each interface. Must be called
/// inside a tokio runtime. Errors are worded for the operator (exit 69).
pub fn bind(
    listen: SocketAddr,
    interfaces: &[String],
) -> Result<(UdpSocket, Vec<Iface6>), DhcpError> {
    let err = |e: std::io::Error| DhcpError::bind(listen, None, &e);
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_only_v6(true).map_err(err)?;
    // Best effort: a smaller buffer only means earlier kernel drops.
    let _ = s.set_recv_buffer_size(RECV_BUFFER);
    socket::setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(|e| err(e.into()))?;
    s.set_multicast_loop_v6(false).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&listen.into()).map_err(err)?;
    let mut ifaces = Vec::with_capacity(interfaces.len());
    for name in interfaces {
        let iface = iface(name)?;
        s.join_multicast_v6(&ALL_SERVERS, iface.index)
            .map_err(|e| DhcpError::Interface {
                name: name.clone(),
                reason: format!("cannot join {ALL_SERVERS}: {e}"),
            })?;
        ifaces.push(iface);
    }
    let socket = UdpSocket::from_std(s.into()).map_err(err)?;
    Ok((socket, ifaces))
}

/// Interface `name`: its index and IPv6 addresses (getifaddrs).
pub fn iface(name: &str) -> Result<Iface6, DhcpError> {
    let fail = |reason: String| DhcpError::Interface {
        name: name.to_owned(),
        reason,
    };
    let index =
        nix::net::if_::if_nametoindex(name).map_err(|_| fail("no such interface".into()))?;
    let all =
        nix::ifaddrs::getifaddrs().map_err(|e| fail(format!("cannot list addresses: {e}")))?;
    let addrs = all
        .filter(|a| a.interface_name == name)
        .filter_map(|a| a.address?.as_sockaddr_in6().map(|s| s.ip()))
        .collect();
    Ok(Iface6 {
        name: name.to_owned(),
        index,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::mmsg::{PktInfo6, RecvBatch};
    use std::net::SocketAddrV6;

    /// Loopback: the datagram's interface and destination come with it.
    #[tokio::test]
    async fn pktinfo_names_the_arrival_interface_and_destination() {
        let (s, ifaces) = bind("[::1]:0".parse().unwrap(), &[]).unwrap();
        assert!(ifaces.is_empty());
        let to = s.local_addr().unwrap();
        let c = UdpSocket::bind("[::1]:0").await.unwrap();
        c.send_to(b"hello", to).await.unwrap();
        s.readable().await.unwrap();
        let mut batch = RecvBatch::with_pktinfo6(16);
        loop {
            match batch.recv(&s, 8) {
                Ok(n) => break assert_eq!(n, 1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.readable().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(batch.get(0), b"hello");
        let from: Option<SocketAddrV6> = match c.local_addr().unwrap() {
            SocketAddr::V6(a) => Some(a),
            _ => unreachable!(),
        };
        assert_eq!(batch.from6(0), from);
        let lo = iface("lo").unwrap().index;
        assert_eq!(
            batch.pktinfo6(0),
            Some(PktInfo6 {
                ifindex: lo,
                dst: Ipv6Addr::LOCALHOST
            })
        );
        assert!(matches!(
            iface("no-such-if0"),
            Err(DhcpError::Interface { .. })
        ));
    }

    #[tokio::test]
    async fn a_taken_port_is_refused() {
        let (s, _) = bind("[::1]:0".parse().unwrap(), &[]).unwrap();
        let e = bind(s.local_addr().unwrap(), &[]).unwrap_err();
        assert!(
            e.is_unavailable() && e.to_string().contains("already in use"),
            "{e}"
        );
    }
}
