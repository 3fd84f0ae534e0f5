//! Label and gauge values of the metrics: drop reasons, DHCP message kinds
//! and outcomes, the overload state.

/// Why a packet, connection or request was refused. Label values of
/// `vpcbox_client_drops_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The client is isolated by the operator.
    Isolated,
    /// Over its per-client quota.
    RateLimited,
    /// Over the global quota.
    GlobalRate,
    /// The bounded work queue was full.
    QueueFull,
    /// The message waited past its deadline.
    Deadline,
    /// Undecodable or invalid on the wire.
    Malformed,
    /// No configured subnet matches the packet.
    NoSubnet,
    /// Addressed to another server, or a message type we do not serve.
    NotForUs,
    /// The per-relay/per-subnet new-lease cap was reached.
    LeaseCap,
    /// The client's relay port holds its cap of addresses.
    PortCap,
    /// A relayed packet from a source or giaddr that is no configured relay.
    UntrustedRelay,
    /// The address pool is exhausted.
    PoolExhausted,
    /// A route's max-pending cap was reached.
    PendingCap,
    /// The global request-body byte budget was exhausted.
    BodyBudget,
    /// Too many connections (overall or from this client).
    ConnLimit,
    /// The memory governor is shedding load.
    Overload,
    /// A timeout (header read, request, upstream).
    Timeout,
    /// The upstream failed or reset.
    Upstream,
    /// The store failed.
    Storage,
    /// A retransmission while the client's previous packet is still being
    /// handled (coalesced into that one operation).
    Duplicate,
    /// An event stream whose reader fell too far behind was ended.
    SlowReader,
    /// Every event-stream slot was taken.
    StreamCap,
    /// Cluster mode: the client hashes to another live node, which answers it.
    OtherNode,
}

impl DropReason {
    pub const ALL: [DropReason; 23] = [
        Self::Isolated,
        Self::RateLimited,
        Self::GlobalRate,
        Self::QueueFull,
        Self::Deadline,
        Self::Malformed,
        Self::NoSubnet,
        Self::NotForUs,
        Self::LeaseCap,
        Self::PortCap,
        Self::UntrustedRelay,
        Self::PoolExhausted,
        Self::PendingCap,
        Self::BodyBudget,
        Self::ConnLimit,
        Self::Overload,
        Self::Timeout,
        Self::Upstream,
        Self::Storage,
        Self::Duplicate,
        Self::SlowReader,
        Self::StreamCap,
        Self::OtherNode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Isolated => "isolated",
            Self::RateLimited => "rate_limited",
            Self::GlobalRate => "global_rate",
            Self::QueueFull => "queue_full",
            Self::Deadline => "deadline",
            Self::Malformed => "malformed",
            Self::NoSubnet => "no_subnet",
            Self::NotForUs => "not_for_us",
            Self::LeaseCap => "lease_cap",
            Self::PortCap => "port_cap",
            Self::UntrustedRelay => "untrusted_relay",
            Self::PoolExhausted => "pool_exhausted",
            Self::PendingCap => "pending_cap",
            Self::BodyBudget => "body_budget",
            Self::ConnLimit => "conn_limit",
            Self::Overload => "overload",
            Self::Timeout => "timeout",
            Self::Upstream => "upstream",
            Self::Storage => "storage",
            Self::Duplicate => "duplicate",
            Self::SlowReader => "slow_reader",
            Self::StreamCap => "stream_cap",
            Self::OtherNode => "other_node",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// DHCP message type of a received packet (`type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpKind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
    Other,
    Malformed,
    /// DHCPv6 (RFC 9915); Request, Release and Decline share v4's labels.
    Solicit,
    Renew,
    Rebind,
    Confirm,
    InformationRequest,
}

impl DhcpKind {
    pub const ALL: [DhcpKind; 12] = [
        Self::Discover,
        Self::Request,
        Self::Decline,
        Self::Release,
        Self::Inform,
        Self::Other,
        Self::Malformed,
        Self::Solicit,
        Self::Renew,
        Self::Rebind,
        Self::Confirm,
        Self::InformationRequest,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discover => "discover",
            Self::Request => "request",
            Self::Decline => "decline",
            Self::Release => "release",
            Self::Inform => "inform",
            Self::Other => "other",
            Self::Malformed => "malformed",
            Self::Solicit => "solicit",
            Self::Renew => "renew",
            Self::Rebind => "rebind",
            Self::Confirm => "confirm",
            Self::InformationRequest => "information_request",
        }
    }
}

/// What became of a received DHCP packet (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpOutcome {
    Offer,
    Ack,
    Nak,
    /// Handled, no reply due (RELEASE, DECLINE, another server selected).
    Silent,
    Dropped,
    /// DHCPv6 answers.
    Advertise,
    Reply,
}

impl DhcpOutcome {
    pub const ALL: [DhcpOutcome; 7] = [
        Self::Offer,
        Self::Ack,
        Self::Nak,
        Self::Silent,
        Self::Dropped,
        Self::Advertise,
        Self::Reply,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Ack => "ack",
            Self::Nak => "nak",
            Self::Silent => "silent",
            Self::Dropped => "dropped",
            Self::Advertise => "advertise",
            Self::Reply => "reply",
        }
    }
}

pub(super) const N_KIND: usize = DhcpKind::ALL.len();
pub(super) const N_OUTCOME: usize = DhcpOutcome::ALL.len();
pub(super) const N_REASON: usize = DropReason::ALL.len();

/// The memory governor's state, published as `vpcbox_overload_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OverloadState {
    Normal = 0,
    Shrink = 1,
    /// New work is refused.
    Shed = 2,
}

impl OverloadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Shrink => "shrink",
            Self::Shed => "shed",
        }
    }

    pub fn from_gauge(v: u64) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::Shrink,
            _ => Self::Shed,
        }
    }
}
