//! What the receive loop, the workers and their operations share: the
//! server's state and the jobs passed between them. A leaf: it imports no
//! file that uses it.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::handler::Ctx;
use super::limits::Limits;
use super::outbox::Outbox;
use super::socket::Listener;
use super::wire::Peek;
use crate::client::ClientKey;
use crate::events::EventLog;
use crate::ipam::Ipam;
use crate::isolation::IsolationSet;
use crate::stats::{DhcpKind, Stats};

/// How long the server waits for in-flight IPAM operations at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// A received datagram that passed admission, on its way to a worker.
pub(super) struct Job {
    pub buf: Vec<u8>,
    pub listener: usize,
    pub at: Instant,
    pub key: ClientKey,
    pub kind: DhcpKind,
    pub peek: Peek,
}

/// A client's operation in flight: which packet it answers, and the
/// client's next packet, waiting for it to end.
pub(super) struct Busy {
    pub kind: DhcpKind,
    pub xid: u32,
    pub next: Option<Job>,
}

/// State shared by the receive loop, the workers and their operations.
pub(super) struct State {
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub ipam: Arc<Ipam>,
    /// Swapped whole when a reload brings new rates (quotas restart then).
    pub limits: ArcSwap<Limits>,
    pub ctx: Ctx,
    pub listeners: Vec<Listener>,
    pub server_port: u16,
    pub client_port: u16,
    pub deadline: Duration,
    /// Clients with an IPAM operation in flight, one map per worker shard.
    /// Bounded by `permits` (an entry is made only by an operation holding
    /// one). std Mutex: held for one insert/remove, never across an await.
    pub inflight: Box<[Mutex<HashMap<ClientKey, Busy>>]>,
    /// Bounds the operations (durable writes waiting for a commit).
    pub permits: Arc<Semaphore>,
    /// The operations in flight (a token each), waited for at shutdown.
    pub tasks: TaskTracker,
    /// Replies waiting for the end of the receive loop's look.
    pub outbox: Outbox<SocketAddrV4>,
    /// The operator's event log (port-cap refusals).
    pub events: Arc<EventLog>,
    /// Port-cap refusals not yet reported as an event.
    pub port_notes: Mutex<PortNotes>,
}

/// Port-cap refusals since the last event (ports are chosen by whoever
/// sends, so one event per port would flood the log).
#[derive(Debug, Default)]
pub(super) struct PortNotes {
    pub last: Option<Instant>,
    pub refused: u64,
}
