//! The DHCPv6 server's startup errors (the packet path counts drops instead).

use crate::dhcp::DhcpError;
use crate::ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum Dhcp6Error {
    /// A socket, multicast group or interface it needs (worded as v4's).
    #[error(transparent)]
    Socket(#[from] DhcpError),
    #[error("dhcp6: the server DUID cannot be read from the store: {0}")]
    ServerDuid(IpamError),
}

impl Dhcp6Error {
    /// Whether the process should exit 69 (something it needs is
    /// unavailable) rather than 64.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Socket(e) => e.is_unavailable(),
            Self::ServerDuid(_) => true,
        }
    }
}
