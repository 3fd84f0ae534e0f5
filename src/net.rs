//! Reaching a vpcbox listener from the same host: the admin CLI, the replay
//! lab and the demo traffic all connect to what the config says it listens on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `addr` with a wildcard IP (`0.0.0.0`, `::`) replaced by loopback of the
/// same family: where a listener bound to the wildcard is reached locally.
pub fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_becomes_loopback_of_its_family() {
        for (listen, reach) in [
            ("0.0.0.0:67", "127.0.0.1:67"),
            ("[::]:8080", "[::1]:8080"),
            ("10.0.0.1:8080", "10.0.0.1:8080"),
        ] {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(loopback_if_unspecified(listen).to_string(), reach);
        }
    }
}
