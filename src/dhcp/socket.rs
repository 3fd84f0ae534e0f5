//! Sockets: the listen socket (relayed traffic) and one socket per directly
//! attached interface, bound to the device (SO_BINDTODEVICE) on 0.0.0.0 so
//! it receives broadcasts and its broadcasts leave on that interface.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::error::DhcpError;

/// Kernel receive buffer per socket: absorbs an avalanche of a few
/// thousand clients while bounding kernel memory.
const RECV_BUFFER: usize = 4 << 20;

/// A bound socket and, for a directly attached interface, its name and
/// IPv4 addresses (which select the subnet of non-relayed packets).
#[derive(Debug)]
pub struct Listener {
    pub socket: UdpSocket,
    pub iface: Option<Iface>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
}

/// Binds a UDP socket for DHCP. Must be called inside a tokio runtime.
pub fn bind(addr: SocketAddr, device: Option<&str>) -> Result<UdpSocket, DhcpError> {
    let err = |e: std::io::Error| DhcpError::bind(addr, device, &e);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // The listen socket and the per-interface sockets share the port; the
    // kernel prefers the device-bound one for packets on its interface.
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    // Best effort: a smaller buffer only means earlier kernel drops.
    let _ = s.set_recv_buffer_size(RECV_BUFFER);
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes())).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// Fails if another socket (another vpcbox, a DHCP server) holds `addr`.
/// Our sockets share their port with SO_REUSEADDR, which would also let a
/// second process bind it, and then the kernel hands that process every
/// datagram: a bind without SO_REUSEADDR, closed at once, finds it first.
fn probe(addr: SocketAddr, device: Option<&str>) -> Result<(), DhcpError> {
    let err = |e: std::io::Error| DhcpError::bind(addr, device, &e);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes())).map_err(err)?;
    }
    s.bind(&addr.into()).map_err(err)
}

/// Binds the listen socket and one socket per interface (on the listen
/// port). Interfaces without an IPv4 address are an error: their subnet
/// could never be found.
pub fn bind_all(listen: SocketAddr, interfaces: &[String]) -> Result<Vec<Listener>, DhcpError> {
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, listen.port()));
    probe(listen, None)?;
    for name in interfaces {
        probe(any, Some(name))?;
    }
    let mut out = vec![Listener {
        socket: bind(listen, None)?,
        iface: None,
    }];
    for name in interfaces {
        let addrs = iface_addrs(name)?;
        if addrs.is_empty() {
            return Err(DhcpError::Interface {
                name: name.clone(),
                reason: "has no IPv4 address".into(),
            });
        }
        out.push(Listener {
            socket: bind(any, Some(name))?,
            iface: Some(Iface {
                name: name.clone(),
                addrs,
            }),
        });
    }
    Ok(out)
}

/// The IPv4 addresses of interface `name` (getifaddrs).
pub fn iface_addrs(name: &str) -> Result<Vec<Ipv4Addr>, DhcpError> {
    let all = ifaddrs().map_err(|e| DhcpError::Interface {
        name: name.to_owned(),
        reason: format!("cannot list addresses: {e}"),
    })?;
    if !all.iter().any(|(n, _)| n == name) {
        return Err(DhcpError::Interface {
            name: name.to_owned(),
            reason: "no such interface".into(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|(n, _)| n == name)
        .filter_map(|(_, a)| a)
        .collect())
}

/// Every (interface name, IPv4 address if the entry has one).
fn ifaddrs() -> std::io::Result<Vec<(String, Option<Ipv4Addr>)>> {
    let all = nix::ifaddrs::getifaddrs()?;
    Ok(all
        .map(|ifa| {
            let v4 = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|a| a.ip());
            (ifa.interface_name, v4)
        })
        .collect())
}

/// Registers sockets taken out of another runtime (`into_std`) with the
/// current one, keeping each one's interface.
pub fn adopt(moved: Vec<(std::net::UdpSocket, Option<Iface>)>) -> std::io::Result<Vec<Listener>> {
    moved
        .into_iter()
        .map(|(s, iface)| {
            Ok(Listener {
                socket: UdpSocket::from_std(s)?,
                iface,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_127_0_0_1() {
        assert!(iface_addrs("lo").unwrap().contains(&Ipv4Addr::LOCALHOST));
        assert!(matches!(
            iface_addrs("no-such-if0"),
            Err(DhcpError::Interface { .. })
        ));
    }

    #[tokio::test]
    async fn privileged_port_errors_name_the_capability() {
        let e = DhcpError::bind(
            "0.0.0.0:67".parse().unwrap(),
            None,
            &std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "binding 0.0.0.0:67 needs CAP_NET_BIND_SERVICE"
        );
        assert!(bind("127.0.0.1:0".parse().unwrap(), None).is_ok());
    }

    /// A second server on our port would silently receive every datagram
    /// (SO_REUSEADDR); it must be refused instead, and the port must be
    /// ours alone again once we let go of it.
    #[tokio::test]
    async fn a_second_server_on_the_same_port_is_refused() {
        let first = bind_all("127.0.0.1:0".parse().unwrap(), &[]).unwrap();
        let addr = first[0].socket.local_addr().unwrap();
        let e = bind_all(addr, &[]).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(
            e.to_string(),
            format!("binding {addr} failed: address already in use")
        );
        drop(first);
        assert!(bind_all(addr, &[]).is_ok());
    }
}
