//! The DHCPv4 server.
//!
//! ```text
//! socket ─► admission ───────────────────────────► worker ──────────────► ipam
//!           1 isolation (chaddr, raw)               deadline               offer / bind / renew …
//!           2 peek: framing, client key             decode (dhcproto)      (relay port cap)
//!           3 isolation (client key)                handler (pure) ◄───────┘ after (pure)
//!           4 relay trust (giaddr + source)         send reply
//!           5 per-client + global quota (governor)
//!           6 bounded queue (try_send)
//! ```
//!
//! * [`wire`]: raw checks before decoding; [`request`]: the decoded message.
//! * [`handler`]: the pure core (packet + subnet + lease + `now` → action).
//! * [`reply`], [`options`]: reply encoding, option order and size limits.
//! * [`admission`]: quotas and caps; [`server`]: sockets, queue, workers.

pub mod limits;
#[doc(hidden)]
pub mod fuzz;
pub mod handler;
pub mod mmsg;
pub mod options;
mod outbox;
pub mod reply;
pub mod request;
mod server;
pub mod socket;
pub mod wire;
mod worker;

pub use server::DhcpServer;

#[cfg(test)]
mod tests;

use crate::ipam;

use std::net::SocketAddr;

/// Errors at the DHCP server's boundary (startup; the packet path counts
/// drops instead of returning errors).
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
