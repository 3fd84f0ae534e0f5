//! The gateway's internal services: the IPAM API, the admin API and the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.yaml`; `assets/openapi.yaml` is the contract). A failed
//! request changes nothing: each IPAM write is one transaction, validated
//! before it runs.

mod admin;
mod context;
mod error;
mod ipam;
mod ops;
mod response;
mod router;
mod status;
mod wire;

pub use context::{ApiContext, ApiDeps};
pub use error::ApiError;
pub use ops::OPENAPI;
pub use router::handle;
pub(crate) use wire::authorized;
pub use wire::constant_time_eq;
