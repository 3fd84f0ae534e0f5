//! DHCPv6 (RFC 9915): the pure parts. A datagram goes: [`relay::unwrap`]
//! (Relay-Forw envelopes, hop limit) → [`request::Request6::decode`] →
//! [`handler::plan`] (what the IPAM must do) → the IPAM → [`handler::answer`]
//! builds the Reply ([`reply`]) → [`relay::wrap`] (Relay-Repl per level).

pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod handler;
pub mod inbound;
pub mod link;
pub mod relay;
pub mod reply;
pub mod request;
pub mod wire;

pub use error::Malformed6;
pub use request::{Ia, IaKey, IaKind, IaNa, IaPd, LinkLayer, Request6};

#[cfg(test)]
mod tests;
