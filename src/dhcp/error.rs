//! The DHCP server's startup errors (the packet path counts drops instead).

use std::net::SocketAddr;

/// Errors at the DHCP server's boundary.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A socket could not be bound. `reason` says why in operator terms.
    #[error("binding {addr} {reason}")]
    Bind { addr: String, reason: String },
    #[error("interface '{name}': {reason}")]
    Interface { name: String, reason: String },
    #[error("dhcp.server_id is required to serve DHCP")]
    NoServerId,
}

impl DhcpError {
    /// A bind failure, worded for the operator ("needs CAP_NET_BIND_SERVICE").
    pub fn bind(addr: SocketAddr, device: Option<&str>, e: &std::io::Error) -> Self {
        let reason = match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) if addr.port() < 1024 => {
                "needs CAP_NET_BIND_SERVICE".to_owned()
            }
            Some(libc::EACCES) | Some(libc::EPERM) if device.is_some() => {
                "to a device needs CAP_NET_RAW".to_owned()
            }
            Some(libc::EADDRINUSE) => "failed: address already in use".to_owned(),
            Some(libc::ENODEV) => "failed: no such interface".to_owned(),
            _ => format!("failed: {e}"),
        };
        let addr = match device {
            Some(d) => format!("{addr} on {d}"),
            None => addr.to_string(),
        };
        Self::Bind { addr, reason }
    }

    /// Whether the process should exit 69 (a port or device it needs is
    /// unavailable) rather than 70.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Bind { .. } | Self::Interface { .. })
    }
}
