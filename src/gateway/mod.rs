//! The HTTP/2 API gateway.

pub mod api;
