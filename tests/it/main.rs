//! The integration test binary: everything that runs the real `vpcbox`
//! binary, real sockets and (as root, in CI) real network namespaces.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // helpers are shared by modules that land over time

mod config_fixtures;
mod gateway_h2attack;
mod gateway_h2frames;
mod gateway_limits;
mod gateway_support;
mod gateway_tls;
mod headless;
mod replay;
mod store;
mod support;
