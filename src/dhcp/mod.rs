//! The DHCPv4 server.
//!
//! A datagram goes: [`receive`] loop → [`admission`] (every check, in order)
//! → a worker's queue → [`worker`]: decode ([`request`]), the pure
//! [`handler`], the IPAM, [`reply`] → [`outbox`] or the socket.
//! [`state`] holds what the loop, the workers and their operations share.

mod admission;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod handle;
pub mod handler;
mod inflight;
pub mod limits;
pub mod mmsg;
pub mod options;
pub mod outbox;
pub mod pace;
mod receive;
pub mod reply;
pub mod request;
mod schedule;
mod server;
pub mod socket;
mod state;
pub mod thread;
pub mod wire;
mod worker;

pub use error::DhcpError;
pub use handle::DhcpHandle;
pub use server::DhcpServer;

#[cfg(test)]
mod tests;
