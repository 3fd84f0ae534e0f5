//! DHCPv6 (RFC 9915). A datagram goes, on the server's own thread:
//! [`receive`] (recvmmsg batches) → [`admission`] (every check, in order:
//! [`inbound::peek`], isolation, the client's quota, [`inbound::decode`]
//! ([`relay::unwrap`], [`request::Request6::decode`]), trusted relay, the
//! global quota, queue) → [`worker`]: [`handler::plan`] → the IPAM
//! for each IA → [`handler::answer`] builds the reply ([`reply`]) →
//! [`relay::wrap`] (Relay-Repl per level) → the socket.

mod admission;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod handle;
pub mod handler;
pub mod inbound;
pub mod limits;
pub mod link;
mod receive;
pub mod relay;
pub mod reply;
pub mod request;
mod server;
pub mod server_error;
pub mod socket;
mod state;
pub mod wire;
mod worker;

pub use error::Malformed6;
pub use handle::Dhcp6Handle;
pub use request::{Ia, IaKey, IaKind, IaNa, IaPd, LinkLayer, Request6};
pub use server::Dhcp6Server;
pub use server_error::Dhcp6Error;

#[cfg(test)]
mod tests;
