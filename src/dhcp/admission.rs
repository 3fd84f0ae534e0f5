//! Admission: every check a DHCP packet meets before it costs work, in the
//! order it meets them, cheapest first. Adding a limit is adding a step here.
//!
//! On arrival, in the receive loop, never blocking ([`admit`]):
//! 1. [`for_this_socket`]: the listen socket leaves un-relayed broadcasts to
//!    the interfaces' own sockets (not counted);
//! 2. `chaddr` present (else malformed, charged to nobody);
//! 3. [`not_isolated`] by the raw `chaddr`;
//! 4. [`framing`]: header, cookie, options, message type, client key;
//! 5. [`not_isolated`] by that client key (option 61 may name another MAC);
//! 6. [`trusted_relay`]: giaddr and the datagram's source are configured relays;
//! 7. [`this_node`]: in a cluster, the live node the client hashes to
//!    answers it; the others drop it (`other_node`);
//! 8. [`quota`]: the client's own rate, then the global one;
//! 9. [`enqueue`]: the worker's bounded queue.
//!
//! In the worker: [`in_time`] (the deadline) before decoding, and
//! [`new_lease`] before a new address is handed out: shedding, the relay
//! port's cap, the new-lease rate per relay and subnet.

use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use dhcproto::v4::MessageType;
use tokio::sync::mpsc;

use super::request::{circuit_id, Request};
use super::state::{Job, State};
use super::wire::{peek, peek_giaddr, peek_mac, Peek};
use crate::client::ClientKey;
use crate::events::EventKind;
use crate::ipam::Port;
use crate::stats::{DhcpKind, DhcpOutcome, DropReason};

/// Why a packet goes no further; [`refuse`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not this socket's to answer: not counted.
    NotMine,
    /// Counted for its client, and as a malformed packet.
    Malformed,
    /// Counted for its client only.
    Isolated,
    /// Counted for its client and as a dropped packet of its kind.
    Drop(DropReason),
}

/// A step's verdict: go on (with what it learnt), or stop.
pub(super) type Step<T = ()> = Result<T, Refused>;

/// A datagram as taken from listener `listener`'s socket at `now`; `from`
/// is its source (`None`: not IPv4).
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival<'a> {
    pub buf: &'a [u8],
    pub from: Option<SocketAddrV4>,
    pub listener: usize,
    pub now: Instant,
}

/// Runs the arrival steps on a datagram and queues it for its worker, or
/// counts why not. Never blocks.
pub(super) fn admit(s: &State, a: Arrival<'_>, queues: &[mpsc::Sender<Job>]) {
    if for_this_socket(s, &a).is_err() {
        return;
    }
    let Some(mac) = peek_mac(a.buf) else {
        s.stats.drop_anonymous(DropReason::Malformed);
        return s
            .stats
            .dhcp
            .packet(DhcpKind::Malformed, DhcpOutcome::Dropped);
    };
    let by_mac = ClientKey::Mac(mac);
    let identified = not_isolated(s, &by_mac).and_then(|()| framing(a.buf, mac));
    let (peek, key) = match identified {
        Ok(found) => found,
        Err(r) => return refuse_at(s, &by_mac, DhcpKind::Malformed, r, a.now),
    };
    let kind = kind_of(peek.msg_type);
    if let Err(r) = checks(s, &a, &peek, &key, &by_mac) {
        return refuse_at(s, &key, kind, r, a.now);
    }
    let job = Job {
        buf: a.buf.to_vec(),
        listener: a.listener,
        at: a.now,
        key,
        kind,
        peek,
    };
    enqueue(s, job, queues);
}

/// Steps 5 to 8, once the client is known.
fn checks(s: &State, a: &Arrival<'_>, peek: &Peek, key: &ClientKey, by_mac: &ClientKey) -> Step {
    if key != by_mac {
        not_isolated(s, key)?;
    }
    // Every arrival past isolation, dropped or not, except another node's
    // client: the rates show what a client sends to the node answering it.
    let relayed = trusted_relay(s, peek, a.from);
    let ours = relayed.and_then(|()| this_node(s, key));
    if ours != Err(Refused::Drop(DropReason::OtherNode)) {
        s.stats.clients.request(key, a.now);
    }
    ours?;
    quota(s, key)
}

/// Cluster mode: every node hears the client, the one it hashes to among
/// the live nodes answers (always this one alone). The others drop it on
/// a hash of its key, before any decoding, and count it only in
/// `vpcbox_client_drops_total{reason="other_node"}`: in the client table
/// it would take the places of this node's own clients.
fn this_node(s: &State, key: &ClientKey) -> Step {
    match s.ipam.answers(key) {
        true => Ok(()),
        false => Err(Refused::Drop(DropReason::OtherNode)),
    }
}

/// Broadcasts reach the listen socket too; when interfaces have their own
/// sockets, those answer them.
fn for_this_socket(s: &State, a: &Arrival<'_>) -> Step {
    let listen_socket = s
        .listeners
        .get(a.listener)
        .is_some_and(|l| l.iface.is_none());
    let mine = !(listen_socket
        && s.listeners.len() > 1
        && peek_giaddr(a.buf) == Some(Ipv4Addr::UNSPECIFIED));
    mine.then_some(()).ok_or(Refused::NotMine)
}

fn not_isolated(s: &State, key: &ClientKey) -> Step {
    match s.isolation.is_isolated(key) {
        true => Err(Refused::Isolated),
        false => Ok(()),
    }
}

/// The framing checks of [`peek`], then the client key.
fn framing(buf: &[u8], mac: [u8; 6]) -> Step<(Peek, ClientKey)> {
    let peek = peek(buf).map_err(|_| Refused::Malformed)?;
    let key = ClientKey::dhcp(peek.client_id(buf), mac).ok_or(Refused::Malformed)?;
    Ok((peek, key))
}

/// A relayed packet is trusted only from a configured relay: its giaddr
/// (which selects the subnet) and the datagram's source.
fn trusted_relay(s: &State, peek: &Peek, from: Option<SocketAddrV4>) -> Step {
    if peek.giaddr.is_unspecified() {
        return Ok(());
    }
    let trusted = |a: Ipv4Addr| s.ipam.is_relay(a);
    if trusted(peek.giaddr) && from.is_some_and(|f| trusted(*f.ip())) {
        Ok(())
    } else {
        Err(Refused::Drop(DropReason::UntrustedRelay))
    }
}

/// The client's own quota, then the global one (a client over its own
/// quota does not spend the global one).
fn quota(s: &State, key: &ClientKey) -> Step {
    s.limits.load().check_client(key).map_err(Refused::Drop)
}

/// Queues `job` for its client's worker (one client, one worker: its
/// packets are handled in order); a full queue drops it.
fn enqueue(s: &State, job: Job, queues: &[mpsc::Sender<Job>]) {
    let Some(queue) = queues.get(shard_of(&job.key, queues.len())) else {
        return;
    };
    s.stats.dhcp.queue_depth.fetch_add(1, Relaxed);
    if let Err(e) = queue.try_send(job) {
        s.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
        if let mpsc::error::TrySendError::Full(job) = e {
            refuse(s, &job.key, job.kind, Refused::Drop(DropReason::QueueFull));
        }
    }
}

/// In the worker: a packet that waited past `dhcp.deadline` is not answered.
pub(super) fn in_time(s: &State, job: &Job) -> Step {
    if job.at.elapsed() > s.deadline {
        return Err(Refused::Drop(DropReason::Deadline));
    }
    Ok(())
}

/// Whether one more *new* lease may be handed out in `subnet`: not while
/// the memory governor sheds load (renewals still are), not to a relay port
/// holding its cap (before the rates, so a full port's clients spend none
/// of the subnet's new leases; the IPAM checks again as it hands the address
/// out), and within the new-lease rate per relay and subnet. A port-cap
/// refusal is noted for the operator.
pub(super) fn new_lease(s: &State, subnet: &str, req: &Request, port: Option<Port>) -> Step {
    if s.stats.shedding() {
        return Err(Refused::Drop(DropReason::Overload));
    }
    if port.is_some_and(|p| s.ipam.port_full(p)) {
        port_full(s, req);
        return Err(Refused::Drop(DropReason::PortCap));
    }
    if !s.limits.load().check_new_lease(subnet, req.giaddr) {
        return Err(Refused::Drop(DropReason::LeaseCap));
    }
    Ok(())
}

/// The memory governor's shedding state.
/// Counts a refused packet for its client.
pub(super) fn refuse(s: &State, key: &ClientKey, kind: DhcpKind, why: Refused) {
    refuse_at(s, key, kind, why, Instant::now());
}

fn refuse_at(s: &State, key: &ClientKey, kind: DhcpKind, why: Refused, now: Instant) {
    let (reason, counted_as) = match why {
        Refused::NotMine => return,
        Refused::Drop(DropReason::OtherNode) => {
            s.stats.drop_anonymous(DropReason::OtherNode);
            return s.stats.dhcp.packet(kind, DhcpOutcome::Dropped);
        }
        Refused::Malformed => (DropReason::Malformed, Some(DhcpKind::Malformed)),
        Refused::Isolated => (DropReason::Isolated, None),
        Refused::Drop(reason) => (reason, Some(kind)),
    };
    s.stats.drop_for(key, reason, now);
    if let Some(kind) = counted_as {
        s.stats.dhcp.packet(kind, DhcpOutcome::Dropped);
    }
}

/// The least time between two port-cap events.
pub const PORT_EVENT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Notes a client refused because its relay port holds its cap: an event
/// at most every [`PORT_EVENT_EVERY`], naming the latest port and how many
/// clients were refused meanwhile.
pub(super) fn port_full(s: &State, req: &Request) {
    let now = Instant::now();
    let refused = {
        let mut n = s.port_notes.lock().unwrap_or_else(|e| e.into_inner());
        n.refused += 1;
        if n.last
            .is_some_and(|t| now.duration_since(t) < PORT_EVENT_EVERY)
        {
            return;
        }
        n.last = Some(now);
        std::mem::take(&mut n.refused)
    };
    let circuit = req
        .relay_info
        .as_deref()
        .and_then(circuit_id)
        .map_or_else(|| "none".to_owned(), show_circuit);
    let cap = s.limits.load().port_cap;
    let msg = format!(
        "relay port {} circuit-id {circuit} holds its cap of {cap} addresses: \
         {refused} new client(s) refused (latest {})",
        req.giaddr, req.client
    );
    tracing::warn!("{msg}");
    s.events.push(EventKind::PortCap, msg);
}

/// A circuit-id for the operator: quoted if printable ASCII, else hex; cut
/// at 32 bytes.
fn show_circuit(c: &[u8]) -> String {
    let c = &c[..c.len().min(32)];
    if !c.is_empty() && c.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(c))
    } else {
        hex::encode(c)
    }
}

fn kind_of(msg_type: u8) -> DhcpKind {
    match MessageType::from(msg_type) {
        MessageType::Discover => DhcpKind::Discover,
        MessageType::Request => DhcpKind::Request,
        MessageType::Decline => DhcpKind::Decline,
        MessageType::Release => DhcpKind::Release,
        MessageType::Inform => DhcpKind::Inform,
        _ => DhcpKind::Other,
    }
}

fn shard_of(key: &ClientKey, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}
