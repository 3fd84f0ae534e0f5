//! Upstream clients: HTTP/1.1 (our own pooled client: [`h1`] pool,
//! [`h1io`] I/O, [`h1wire`] bytes) and h2c (hyper's, one multiplexed
//! connection), the hop-by-hop rules and the bodies that cross the
//! boundary. Nothing here knows routes or admission; the proxy uses it.

mod body;
mod connect;
mod error;
mod h1;
mod h1io;
pub(crate) mod h1wire;
mod h2c;
mod hop;
mod response;
mod sock;

pub(crate) use body::{PollFrame, ProxyBody};
pub(crate) use error::{BodyError, ResponseError};
pub(crate) use h1::H1Upstream;
pub(crate) use h2c::H2cUpstream;
pub(crate) use hop::strip_hop_by_hop;
pub(crate) use response::UpstreamBody;
