//! Connecting to an upstream: name resolution, each address in turn, and
//! socket buffers capped before the SYN.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use tokio::net::{TcpSocket, TcpStream};

/// How long a connect (resolution included) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an upstream is: its host (an IPv6 literal without brackets) and
/// port, 80 when the URL gives none.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
}

impl Target {
    pub(crate) fn of(authority: &Authority) -> Self {
        let host = authority.host();
        let host = host.strip_prefix('[').unwrap_or(host);
        let host = host.strip_suffix(']').unwrap_or(host);
        Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
        }
    }

    /// The target's addresses tried in turn. Socket buffers are set before
    /// the connect, so the window scale offered in the SYN already follows
    /// the capped receive buffer.
    pub(crate) async fn connect(&self, buf: u32) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match connect_one(addr, buf).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    }
}

/// A socket whose buffers cannot be capped is not used: the caps are what
/// bounds the kernel memory behind each upstream connection.
async fn connect_one(addr: SocketAddr, buf: u32) -> std::io::Result<TcpStream> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_send_buffer_size(buf)?;
    sock.set_recv_buffer_size(buf)?;
    sock.set_nodelay(true)?;
    sock.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `socket_buffer` caps both buffers of an upstream socket (Linux
    /// reports twice the value set, for its bookkeeping).
    #[tokio::test]
    async fn upstream_sockets_get_the_configured_buffers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tcp = connect_one(addr, 8192).await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert_eq!(sock.recv_buffer_size().unwrap(), 2 * 8192);
        assert_eq!(sock.send_buffer_size().unwrap(), 2 * 8192);
        assert!(sock.tcp_nodelay().unwrap());
    }

    /// An upstream URL without a port means port 80 (`h2c://backend` as
    /// well as `http://backend`); an IPv6 literal loses its brackets, and a
    /// name is resolved when connecting.
    #[tokio::test]
    async fn a_target_without_a_port_is_port_80() {
        let t = Target::of(&Authority::from_static("backend.example"));
        assert_eq!((t.host.as_str(), t.port), ("backend.example", 80));
        let t = Target::of(&Authority::from_static("[::1]:8080"));
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::of(&Authority::try_from(format!("localhost:{port}")).unwrap());
        let tcp = t.connect(8192).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap().port(), port);
    }
}
