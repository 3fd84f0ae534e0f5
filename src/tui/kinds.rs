//! The small vocabulary of the dashboard state: views, sort keys, client
//! states, text inputs and the status line.

use std::time::Duration;

use crate::client::ClientKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Clients,
    Subnets,
    Leases,
    Events,
}

impl View {
    pub const ALL: [View; 4] = [Self::Clients, Self::Subnets, Self::Leases, Self::Events];
    pub fn title(self) -> &'static str {
        match self {
            Self::Clients => "Clients",
            Self::Subnets => "Subnets",
            Self::Leases => "Leases",
            Self::Events => "Events",
        }
    }
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|v| *v == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
    pub fn prev(self) -> Self {
        let i = Self::ALL.iter().position(|v| *v == self).unwrap_or(0);
        Self::ALL[(i + Self::ALL.len() - 1) % Self::ALL.len()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Rate10s,
    Rate1s,
    Drops,
    Pending,
    Client,
}

impl SortKey {
    pub fn next(self) -> Self {
        match self {
            Self::Rate10s => Self::Rate1s,
            Self::Rate1s => Self::Drops,
            Self::Drops => Self::Pending,
            Self::Pending => Self::Client,
            Self::Client => Self::Rate10s,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::Rate10s => "rate 10s",
            Self::Rate1s => "rate 1s",
            Self::Drops => "drops",
            Self::Pending => "pending",
            Self::Client => "client",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Ok,
    Limited,
    Isolated,
}

impl ClientState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Limited => "limited",
            Self::Isolated => "isolated",
        }
    }
}

/// A visible row: an index into the snapshot's client table. Its state is
/// looked up when drawn ([`UiState::state_of`]), so re-sorting 10,000 rows
/// costs no hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    pub idx: usize,
}

/// Which text input the keys go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Filter,
    LeaseSearch,
}

/// Served rate of an isolated client, measured from the second snapshot
/// after the isolation took effect: the first may still count answers to
/// packets admitted before it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedSince {
    pub at: Duration,
    pub served: u64,
    pub rate: Option<f64>,
    /// The baseline has been taken again from the second snapshot.
    pub settled: bool,
}

/// The status line.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Isolating(ClientKey),
    Isolated {
        client: ClientKey,
        since: Option<ServedSince>,
    },
    Released(ClientKey),
    Info(String),
    Error(String),
}
