//! The HTTP gateway: one TCP port serving HTTP/1.1 and h2c (auto-detected),
//! or TLS with ALPN `h2`/`http/1.1`. Every request passes the admission
//! chain (`admission.rs`) before any work, then goes to the internal API
//! ([`api`]) or is proxied upstream by `[[route]]` prefix (`proxy.rs`, which
//! uses the clients in `upstream/`). Every byte held is bounded.

mod activity;
mod admission;
pub mod api;
mod body;
mod conn;
mod error;
mod events;
pub mod fuzz;
mod inner;
mod limiters;
mod limits;
mod listener;
mod proxy;
mod refusal;
mod respbudget;
mod server;
mod service;
mod streams;
mod tls;
mod upstream;

pub use api::ApiContext;
pub use error::GatewayError;
pub use server::{Gateway, GatewayDeps};
