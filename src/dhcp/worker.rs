//! Workers: deadline, decode, subnet, the pure handler, then the IPAM.
//!
//! Answers that need no durable write (offers, replies from memory, NAKs,
//! INFORM) are sent by the worker itself. Durable operations (bind, renew,
//! release, decline) run as tasks so a worker never waits for a group
//! commit; one client has at most one in flight. A retransmission of the
//! packet in flight (same type and xid) is dropped as a duplicate: its
//! answer is on its way. Another packet meanwhile (a REQUEST right after a
//! RELEASE) waits, and is handled as soon as the operation ends; only the
//! latest one waits (one per client), an earlier one is dropped as a
//! duplicate.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::handler::{after, handle, Action, Done, Op};
use super::outbox::{self, Outgoing};
use super::reply::{Dest, Reply};
use super::request::Request;
use super::server::{Inner, Job};
use crate::client::ClientKey;
use crate::ipam::{IpamError, SubnetSpec};
use crate::stats::{DhcpKind, DhcpOutcome, DropReason};

/// A retransmission of the packet in flight, or a waiting packet that a
/// newer one replaced.
pub const DUPLICATE: DropReason = DropReason::Duplicate;

/// A client's operation in flight: which packet it answers, and the
/// client's next packet, waiting for it to end.
pub(super) struct Busy {
    kind: DhcpKind,
    xid: u32,
    next: Option<Job>,
}

/// A durable IPAM operation, performed in its own task.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Bind { ip: Ipv4Addr, rapid: bool },
    Renew { ip: Ipv4Addr, rapid: bool },
    Release { ip: Ipv4Addr },
    Decline { ip: Ipv4Addr },
}

/// One worker: takes jobs from its queue until `cancel` fires (jobs still
/// queued then are discarded: no new IPAM operation starts during
/// shutdown) or every sender is gone.
pub(super) async fn run(
    inner: Arc<Inner>,
    shard: usize,
    mut rx: mpsc::Receiver<Job>,
    cancel: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            job = rx.recv() => job,
        };
        let Some(job) = job else { break };
        inner.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
        process(&inner, shard, job).await;
    }
    rx.close();
    let left = rx.len();
    inner.stats.dhcp.queue_depth.fetch_sub(left as i64, Relaxed);
}

async fn process(inner: &Arc<Inner>, shard: usize, job: Job) {
    if job.at.elapsed() > inner.deadline {
        return inner.refuse(&job.key, job.kind, DropReason::Deadline);
    }
    let Ok(req) = Request::decode(&job.buf, &job.peek) else {
        return inner.refuse(&job.key, DhcpKind::Malformed, DropReason::Malformed);
    };
    let Some(subnet) = subnet_of(inner, &req, job.listener) else {
        return inner.refuse(&job.key, job.kind, DropReason::NoSubnet);
    };
    let lease = inner.ipam.lease_of(&req.client);
    let now = SystemTime::now();
    let action = handle(&req, &subnet, lease.as_ref(), &inner.ctx, now);
    let pending = match action {
        Action::Reply(r) => return send(inner, job.listener, job.kind, &req.client, r).await,
        Action::Silent => return inner.stats.dhcp.packet(job.kind, DhcpOutcome::Silent),
        Action::Drop(reason) => return inner.refuse(&job.key, job.kind, reason),
        Action::Offer {
            requested,
            new,
            rapid,
        } => {
            if new {
                if let Err(reason) = inner.admit_new_lease(&subnet.id, req.giaddr) {
                    return inner.refuse(&job.key, job.kind, reason);
                }
            }
            let offered = inner.ipam.offer(&subnet.id, &req.client, requested, now);
            match offered {
                Ok(l) if rapid => Pending::Bind { ip: l.ip, rapid },
                res => {
                    let done = after(&req, &subnet, &inner.ctx, Op::Offer, res, now);
                    return finish(inner, &job, &req, done).await;
                }
            }
        }
        Action::Bind { ip, new } => {
            if new {
                if let Err(reason) = inner.admit_new_lease(&subnet.id, req.giaddr) {
                    return inner.refuse(&job.key, job.kind, reason);
                }
            }
            Pending::Bind { ip, rapid: false }
        }
        Action::Renew { ip, rapid } => Pending::Renew { ip, rapid },
        Action::Release { ip } | Action::Forget { ip } => Pending::Release { ip },
        Action::Decline { ip } => Pending::Decline { ip },
    };
    spawn(inner, shard, job, req, subnet, pending);
}

fn subnet_of(inner: &Inner, req: &Request, listener: usize) -> Option<Arc<SubnetSpec>> {
    if req.is_relayed() {
        return inner.ipam.subnet_for_relay(req.giaddr);
    }
    let iface = inner.listeners.get(listener)?.iface.as_ref()?;
    iface
        .addrs
        .iter()
        .find_map(|a| inner.ipam.subnet_for_interface(*a))
}

/// Removes the client from the in-flight map when the operation ends,
/// however it ends (so the task is cancel-safe in this respect).
struct InFlight {
    inner: Arc<Inner>,
    shard: usize,
    key: ClientKey,
    /// [`InFlight::leave`] ran: nothing left for `Drop` to do.
    left: bool,
}

/// What [`InFlight::enter`] made of a packet.
enum Entry {
    /// The client had nothing in flight: this packet's operation is.
    Started(InFlight, Job),
    /// A retransmission of the packet in flight.
    Duplicate(Job),
    /// Waits for the operation in flight (and may be replaced).
    Waiting,
}

impl InFlight {
    fn enter(inner: &Arc<Inner>, shard: usize, req: &Request, job: Job) -> Entry {
        use std::collections::hash_map::Entry as E;
        let mut map = inner.inflight[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match map.entry(req.client.clone()) {
            E::Occupied(mut busy) => {
                let busy = busy.get_mut();
                if busy.kind == job.kind && busy.xid == req.xid {
                    return Entry::Duplicate(job);
                }
                let replaced = busy.next.replace(job);
                drop(map);
                if let Some(old) = replaced {
                    inner.refuse(&old.key, old.kind, DUPLICATE);
                }
                Entry::Waiting
            }
            E::Vacant(v) => {
                v.insert(Busy {
                    kind: job.kind,
                    xid: req.xid,
                    next: None,
                });
                drop(map);
                inner.stats.clients.pending(&req.client, 1);
                let guard = Self {
                    inner: inner.clone(),
                    shard,
                    key: req.client.clone(),
                    left: false,
                };
                Entry::Started(guard, job)
            }
        }
    }

    /// Ends the operation; returns the client's packet that waited for it.
    fn leave(&mut self) -> Option<Job> {
        self.left = true;
        let busy = self.inner.inflight[self.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if busy.is_some() {
            self.inner.stats.clients.pending(&self.key, -1);
        }
        busy.and_then(|b| b.next)
    }
}

impl Drop for InFlight {
    /// Cancelled (shutdown): a waiting packet is dropped with it.
    fn drop(&mut self) {
        if self.left {
            return;
        }
        if let Some(job) = self.leave() {
            self.inner.refuse(&job.key, job.kind, DropReason::Deadline);
        }
    }
}

fn spawn(
    inner: &Arc<Inner>,
    shard: usize,
    job: Job,
    req: Request,
    subnet: Arc<SubnetSpec>,
    op: Pending,
) {
    let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
        return inner.refuse(&job.key, job.kind, DropReason::QueueFull);
    };
    let (mut guard, job) = match InFlight::enter(inner, shard, &req, job) {
        Entry::Started(g, job) => (g, job),
        Entry::Duplicate(job) => return inner.refuse(&job.key, job.kind, DUPLICATE),
        Entry::Waiting => return,
    };
    let inner = inner.clone();
    inner.tasks.clone().spawn(async move {
        let done = perform(&inner, &req, &subnet, op).await;
        let next = guard.leave();
        drop(guard);
        drop(permit);
        finish(&inner, &job, &req, done).await;
        if let Some(next) = next {
            process(&inner, shard, next).await;
        }
    });
}

/// Performs `op`. The IPAM's operations are cancel-safe (a write made is
/// flushed anyway); this task is never cancelled, only waited for.
async fn perform(inner: &Inner, req: &Request, subnet: &SubnetSpec, op: Pending) -> Done {
    let ipam = &inner.ipam;
    let now = SystemTime::now();
    let quiet = |r: Result<(), IpamError>| match r {
        Ok(()) | Err(IpamError::NotOwner { .. } | IpamError::NoLease) => Done::Silent,
        Err(_) => Done::Drop(DropReason::Storage),
    };
    match op {
        Pending::Bind { ip, rapid } => {
            let r = ipam
                .bind(&subnet.id, &req.client, ip, req.hostname.as_deref(), now)
                .await;
            after(req, subnet, &inner.ctx, Op::Commit { rapid }, r, now)
        }
        Pending::Renew { ip, rapid } => {
            let r = ipam.renew(&req.client, ip, now).await;
            after(req, subnet, &inner.ctx, Op::Commit { rapid }, r, now)
        }
        Pending::Release { ip } => quiet(ipam.release(&req.client, ip, now).await),
        Pending::Decline { ip } => quiet(ipam.decline(&req.client, ip, now).await),
    }
}

async fn finish(inner: &Inner, job: &Job, req: &Request, done: Done) {
    match done {
        Done::Reply(r) => send(inner, job.listener, job.kind, &req.client, r).await,
        Done::Silent => inner.stats.dhcp.packet(job.kind, DhcpOutcome::Silent),
        Done::Drop(reason) => inner.refuse(&job.key, job.kind, reason),
    }
}

/// Sends a reply on the socket the request came in on: queued for the
/// receive loop's flush while it is busy, at once otherwise.
async fn send(inner: &Inner, listener: usize, kind: DhcpKind, key: &ClientKey, reply: Reply) {
    let to = match reply.to {
        Dest::Relay(g) => SocketAddrV4::new(g, inner.server_port),
        Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, inner.client_port),
        Dest::Unicast(ip) => SocketAddrV4::new(ip, inner.client_port),
    };
    let Some(l) = inner.listeners.get(listener) else {
        return;
    };
    if inner.outbox.batching() {
        return inner.outbox.push(
            listener,
            Outgoing {
                bytes: reply.bytes,
                to,
                kind,
                outcome: reply.outcome,
                key: key.clone(),
            },
        );
    }
    match l.socket.send_to(&reply.bytes, SocketAddr::V4(to)).await {
        Ok(_) => outbox::sent(inner, kind, reply.outcome, key, Instant::now()),
        Err(e) => outbox::unsent(inner, kind, to, &e),
    }
}
