//! Why a request was refused or not fully served, and the drop reason it
//! is counted under. The answer to each is [`super::error::refusal`].

use std::time::Duration;

use crate::stats::DropReason;

/// Why a request was not (fully) served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Isolated,
    Overload,
    RateLimited {
        retry_after: Duration,
    },
    /// `body`: the route's answer, built once (`error::pending_cap_body`).
    PendingCap {
        body: bytes::Bytes,
    },
    BodyBudget,
    TooLarge {
        max: u64,
    },
    Timeout,
    Upstream,
    /// The client's body failed mid-way (reset, malformed framing).
    BadBody,
    /// Every `/v1/events/stream` slot open to this reader is taken.
    StreamCap,
}

impl Refusal {
    /// The drop reason counted for this refusal.
    pub(crate) fn reason(&self) -> DropReason {
        match self {
            Self::Isolated => DropReason::Isolated,
            Self::Overload => DropReason::Overload,
            Self::RateLimited { .. } => DropReason::RateLimited,
            Self::PendingCap { .. } => DropReason::PendingCap,
            Self::BodyBudget | Self::TooLarge { .. } => DropReason::BodyBudget,
            Self::Timeout => DropReason::Timeout,
            Self::Upstream => DropReason::Upstream,
            Self::BadBody => DropReason::Malformed,
            Self::StreamCap => DropReason::StreamCap,
        }
    }
}
