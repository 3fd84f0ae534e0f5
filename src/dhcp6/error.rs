//! Why a DHCPv6 datagram was refused on the wire: one variant per cause,
//! each with a stable name for counting and the drop reason it is counted as.

use crate::stats::DropReason;

/// A malformed or unacceptable datagram. Never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed6 {
    #[error("shorter than a DHCPv6 header")]
    TooShort,
    #[error("longer than the largest datagram accepted")]
    TooLong,
    #[error("an option header is cut short")]
    TruncatedOption,
    #[error("an option's length runs past the end of its container")]
    OptionOverrun,
    #[error("an option has the wrong length for its code")]
    BadLength,
    #[error("more options than a message may carry")]
    TooManyOptions,
    #[error("more IAs than a message may carry")]
    TooManyIas,
    #[error("more addresses or prefixes in one IA than accepted")]
    TooManyHints,
    #[error("an option that may appear once appears twice")]
    Duplicate,
    #[error("a DUID shorter than 3 or longer than 130 bytes")]
    DuidLength,
    #[error("a server's message (Advertise, Reply, Reconfigure) sent to the server")]
    ServerMessage,
    #[error("a Relay-Repl sent to the server")]
    RelayReply,
    #[error("a message type the server does not serve")]
    Unsupported,
    #[error("relay nesting past the hop count limit")]
    HopLimit,
    #[error("a Relay-Forw without exactly one Relay Message option")]
    NoRelayMessage,
    #[error("a relay message option inside a client message")]
    RelayInClient,
}

impl Malformed6 {
    pub const ALL: [Malformed6; 16] = [
        Self::TooShort,
        Self::TooLong,
        Self::TruncatedOption,
        Self::OptionOverrun,
        Self::BadLength,
        Self::TooManyOptions,
        Self::TooManyIas,
        Self::TooManyHints,
        Self::Duplicate,
        Self::DuidLength,
        Self::ServerMessage,
        Self::RelayReply,
        Self::Unsupported,
        Self::HopLimit,
        Self::NoRelayMessage,
        Self::RelayInClient,
    ];

    /// A stable snake_case name (a label value once the server counts them).
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::TruncatedOption => "truncated_option",
            Self::OptionOverrun => "option_overrun",
            Self::BadLength => "bad_length",
            Self::TooManyOptions => "too_many_options",
            Self::TooManyIas => "too_many_ias",
            Self::TooManyHints => "too_many_hints",
            Self::Duplicate => "duplicate_option",
            Self::DuidLength => "duid_length",
            Self::ServerMessage => "server_message",
            Self::RelayReply => "relay_reply",
            Self::Unsupported => "unsupported_type",
            Self::HopLimit => "hop_limit",
            Self::NoRelayMessage => "no_relay_message",
            Self::RelayInClient => "relay_in_client",
        }
    }

    /// The `vpcbox_client_drops_total{reason}` it counts under: a message
    /// meant for someone else is `not_for_us`, the rest `malformed`.
    pub fn reason(self) -> DropReason {
        match self {
            Self::ServerMessage | Self::RelayReply | Self::Unsupported => DropReason::NotForUs,
            _ => DropReason::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Malformed6::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Malformed6::ALL.len());
    }
}
