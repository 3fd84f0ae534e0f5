//! The gateway's internal services: the IPAM API, the admin API, the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.yaml`; `assets/openapi.yaml` is the contract), the `/ui` page
//! and the live view its event stream sends (`live.rs`). A failed
//! request changes nothing: each IPAM write is one transaction, validated
//! before it runs.

mod admin;
mod context;
mod error;
mod ipam;
mod lease6;
pub(crate) mod live;
mod ops;
mod response;
mod router;
mod status;
mod subnet6;
mod ui;
mod wire;

#[cfg(test)]
pub(crate) use context::test_context;
pub use context::{ApiContext, ApiDeps};
pub use error::ApiError;
pub use ops::OPENAPI;
pub use router::handle;
pub(crate) use wire::authorized;
pub use wire::constant_time_eq;
