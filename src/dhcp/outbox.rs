//! Replies gathered while a receive loop is busy, sent together at the end
//! of its look (sendmmsg): the peer is woken once per batch, not once per
//! reply. Shared by v4 (`SocketAddrV4`, one queue per listener) and v6
//! (`To6`: its scope id and our source address, one socket). All on the server's
//! thread: workers push, the loop flushes; when the loop is not busy,
//! replies go out at once instead.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::mmsg::{self, Dest};
use crate::client::ClientKey;
use crate::stats::{DhcpKind, DhcpOutcome, Stats};

/// A destination the outbox can send to: IPv4, or IPv6 (with the source
/// to send from, [`mmsg::To6`]).
pub trait OutAddr: Display + Dest {}
impl<A: Display + Dest> OutAddr for A {}

/// A reply waiting for the flush, with what counting it needs.
#[derive(Debug)]
pub struct Outgoing<A> {
    pub bytes: Vec<u8>,
    pub to: A,
    pub kind: DhcpKind,
    pub outcome: DhcpOutcome,
    /// A DHCPv6 reply inside Relay-Repl (counted as relayed too).
    pub relayed: bool,
    pub key: ClientKey,
}

/// The replies waiting for the receive loop's flush, per listener: at most
/// what one look produces (bounded by the queue and the operation permits).
#[derive(Debug)]
pub struct Outbox<A> {
    /// Set by the receive loop while it coalesces.
    batching: AtomicBool,
    /// std Mutex: held to push or to swap the queue out, never across an await.
    queues: Box<[Mutex<Vec<Outgoing<A>>>]>,
}

impl<A: OutAddr> Outbox<A> {
    pub fn new(listeners: usize) -> Self {
        Self {
            batching: AtomicBool::new(false),
            queues: (0..listeners).map(|_| Mutex::default()).collect(),
        }
    }

    /// Whether replies now wait for the flush instead of going out at once.
    pub fn batching(&self) -> bool {
        self.batching.load(Relaxed)
    }

    pub fn set_batching(&self, on: bool) {
        self.batching.store(on, Relaxed);
    }

    /// Queues a reply to go out on `listener`'s socket at the next flush.
    pub fn push(&self, listener: usize, out: Outgoing<A>) {
        if let Some(q) = self.queues.get(listener) {
            q.lock().unwrap_or_else(|e| e.into_inner()).push(out);
        }
    }

    /// Sends `out` on `socket` (listener `listener`'s): queued for the
    /// receive loop's flush while it is busy, at once and counted otherwise.
    pub async fn send(&self, listener: usize, socket: &UdpSocket, stats: &Stats, out: Outgoing<A>) {
        if self.batching() {
            return self.push(listener, out);
        }
        // As a flush of one: the same system call, source and counting.
        send_all(stats, socket, std::slice::from_ref(&out)).await
    }

    /// Swaps `listener`'s queue with `spare` (empty, keeping its capacity).
    fn take(&self, listener: usize, spare: &mut Vec<Outgoing<A>>) {
        if let Some(q) = self.queues.get(listener) {
            std::mem::swap(&mut *q.lock().unwrap_or_else(|e| e.into_inner()), spare);
        }
    }
}

/// Sends every queued reply, socket by socket (`listeners` in order, each
/// one's socket as `socket` gives it), until the queues are empty. `spare` is an empty vector reused
/// between flushes. Not cancel-safe: replies taken and not yet sent when
/// the future is dropped are lost (the receive loop stops on its token and
/// flushes before it returns).
pub async fn flush<L, A: OutAddr>(
    outbox: &Outbox<A>,
    listeners: &[L],
    socket: fn(&L) -> &UdpSocket,
    stats: &Stats,
    spare: &mut Vec<Outgoing<A>>,
) {
    for (idx, l) in listeners.iter().enumerate() {
        loop {
            outbox.take(idx, spare);
            if spare.is_empty() {
                break;
            }
            send_all(stats, socket(l), spare).await;
            spare.clear();
        }
    }
}

/// Sends `msgs` on `socket`, [`mmsg::BATCH`] per system call, counting
/// each one: sent once the kernel took it, dropped on its error.
async fn send_all<A: OutAddr>(stats: &Stats, socket: &UdpSocket, msgs: &[Outgoing<A>]) {
    let now = Instant::now();
    let mut at = 0;
    while let Some(rest) = msgs.get(at..).filter(|r| !r.is_empty()) {
        match mmsg::send(socket, rest, |m| (&m.bytes, m.to)) {
            Ok(n) if n > 0 => {
                for m in &rest[..n.min(rest.len())] {
                    sent(stats, m, now);
                }
                at += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    for m in rest {
                        unsent(stats, m, &e);
                    }
                    return;
                }
            }
            // An error of the first message (no route to it, say): the
            // others may well go.
            Ok(_) => {
                unsent(stats, &rest[0], &std::io::Error::other("none sent"));
                at += 1;
            }
            Err(e) => {
                unsent(stats, &rest[0], &e);
                at += 1;
            }
        }
    }
}

/// Counts a reply the kernel took.
pub fn sent<A>(stats: &Stats, m: &Outgoing<A>, now: Instant) {
    stats.dhcp.packet_via(m.kind, m.outcome, m.relayed);
    stats.clients.served(&m.key, now);
}

/// Counts a reply that could not be sent.
pub fn unsent<A: Display>(stats: &Stats, m: &Outgoing<A>, e: &std::io::Error) {
    tracing::debug!(to = %m.to, error = %e, "dhcp send");
    stats
        .dhcp
        .packet_via(m.kind, DhcpOutcome::Dropped, m.relayed);
}
