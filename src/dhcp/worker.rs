//! Workers: deadline, decode, subnet, the pure handler, then the IPAM.
//! Answers that need no durable write are sent at once; durable operations
//! (bind, renew, release, decline) are futures the worker polls alongside
//! its queue ([`Ops`]), never waiting for a group commit; one client has at
//! most one in flight ([`super::inflight`]).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::admission::{self, port_full, refuse, Refused};
use super::handler::{after, handle, Action, Done, Op};
use super::inflight::{Entry, InFlight, DUPLICATE};
use super::outbox::Outgoing;
use super::reply::{Dest, Reply};
use super::request::Request;
use super::schedule::{serve, Handler};
use super::state::{Job, State, DRAIN};
use crate::client::ClientKey;
use crate::ipam::{IpamError, Port, SubnetSpec};
use crate::stats::{DhcpKind, DhcpOutcome, DropReason};

/// A durable IPAM operation.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Bind { ip: Ipv4Addr, rapid: bool },
    Renew { ip: Ipv4Addr, rapid: bool },
    Release { ip: Ipv4Addr },
    Decline { ip: Ipv4Addr },
}

/// A durable operation in flight; ends with the client's packet that
/// waited for it, if any.
type Operation = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// What an operation leaves to its worker: the client's packet that waited
/// for it, and its tracker token, held until that packet is handled (so
/// the drain at shutdown waits for that too).
struct Ended {
    next: Option<Job>,
    token: TaskTrackerToken,
}

/// A worker's durable operations in flight, polled by the worker itself
/// rather than spawned a task each: the committer's answer to a batch then
/// wakes the worker once, not a task per operation.
type Ops = FuturesUnordered<Operation>;

/// One worker: takes jobs from its queue and finishes its operations until
/// `cancel` fires (jobs still queued then are discarded: no new IPAM
/// operation starts) or every sender is gone; then the operations in
/// flight go on (see [`drain`]).
pub(super) async fn run(
    state: Arc<State>,
    shard: usize,
    mut rx: mpsc::Receiver<Job>,
    cancel: CancellationToken,
) {
    let mut ops = Ops::new();
    let mut worker = Worker {
        state: &state,
        shard,
    };
    serve(&mut rx, &mut ops, &cancel, &mut worker).await;
    rx.close();
    let left = rx.len();
    state.stats.dhcp.queue_depth.fetch_sub(left as i64, Relaxed);
    if !ops.is_empty() {
        // Not tracked itself: the operations' tracker tokens are, and the
        // server waits on those for up to DRAIN.
        tokio::spawn(drain(state, shard, ops));
    }
}

/// The DHCP worker of one shard.
struct Worker<'a> {
    state: &'a Arc<State>,
    shard: usize,
}

impl Handler for Worker<'_> {
    type Job = Job;
    type Op = Operation;

    async fn job(&mut self, job: Job, ops: &mut Ops) {
        self.state.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
        process(self.state, self.shard, job, ops).await;
    }

    async fn ended(&mut self, ended: Ended, ops: &mut Ops) {
        after_op(self.state, self.shard, ended, ops).await;
    }
}

/// Polls the operations left in flight at shutdown until they end (they
/// reply once durable), for at most [`DRAIN`]; a packet that waited for
/// one is still handled, as during service.
async fn drain(state: Arc<State>, shard: usize, mut ops: Ops) {
    let all = async {
        while let Some(ended) = ops.next().await {
            after_op(&state, shard, ended, &mut ops).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN, all).await;
}

/// Handles the packet that waited for an operation that ended.
async fn after_op(state: &Arc<State>, shard: usize, ended: Ended, ops: &mut Ops) {
    if let Some(job) = ended.next {
        process(state, shard, job, ops).await;
    }
    drop(ended.token);
}

async fn process(state: &Arc<State>, shard: usize, job: Job, ops: &mut Ops) {
    if let Err(r) = admission::in_time(state, &job) {
        return refuse(state, &job.key, job.kind, r);
    }
    let Ok(req) = Request::decode(&job.buf, &job.peek) else {
        return refuse(state, &job.key, DhcpKind::Malformed, Refused::Malformed);
    };
    let Some(subnet) = subnet_of(state, &req, job.listener) else {
        return refuse(
            state,
            &job.key,
            job.kind,
            Refused::Drop(DropReason::NoSubnet),
        );
    };
    let lease = state.ipam.lease_of(&req.client);
    let now = SystemTime::now();
    let action = handle(&req, &subnet, lease.as_ref(), &state.ctx, now);
    let port_id = req.port();
    let cap = state.limits.load().port_cap;
    let port = port_id.as_deref().map(|id| Port { id, cap });
    let new_lease = |new: bool| match new {
        true => admission::new_lease(state, &subnet.id, &req, port),
        false => Ok(()),
    };
    let pending = match action {
        Action::Reply(r) => return send(state, job.listener, job.kind, &req.client, r).await,
        Action::Silent => return state.stats.dhcp.packet(job.kind, DhcpOutcome::Silent),
        Action::Drop(reason) => return refuse(state, &job.key, job.kind, Refused::Drop(reason)),
        Action::Offer {
            requested,
            new,
            rapid,
        } => {
            if let Err(r) = new_lease(new) {
                return refuse(state, &job.key, job.kind, r);
            }
            let offered = state
                .ipam
                .offer_via(&subnet.id, &req.client, requested, port, now);
            match offered {
                Ok(l) if rapid => Pending::Bind { ip: l.ip, rapid },
                res => {
                    let done = after(&req, &subnet, &state.ctx, Op::Offer, res, now);
                    return finish(state, &job, &req, done).await;
                }
            }
        }
        Action::Bind { ip, new } => {
            if let Err(r) = new_lease(new) {
                return refuse(state, &job.key, job.kind, r);
            }
            Pending::Bind { ip, rapid: false }
        }
        Action::Renew { ip, rapid } => Pending::Renew { ip, rapid },
        Action::Release { ip } | Action::Forget { ip } => Pending::Release { ip },
        Action::Decline { ip } => Pending::Decline { ip },
    };
    start(state, shard, job, req, subnet, pending, ops);
}

fn subnet_of(state: &State, req: &Request, listener: usize) -> Option<Arc<SubnetSpec>> {
    if req.is_relayed() {
        return state.ipam.subnet_for_relay(req.giaddr);
    }
    let iface = state.listeners.get(listener)?.iface.as_ref()?;
    iface
        .addrs
        .iter()
        .find_map(|a| state.ipam.subnet_for_interface(*a))
}

/// Starts `op` for the client of `job` unless it has one in flight (then
/// the packet is a duplicate, or waits for it).
fn start(
    state: &Arc<State>,
    shard: usize,
    job: Job,
    req: Request,
    subnet: Arc<SubnetSpec>,
    op: Pending,
    ops: &mut Ops,
) {
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        let full = Refused::Drop(DropReason::QueueFull);
        return refuse(state, &job.key, job.kind, full);
    };
    let (mut guard, job) = match InFlight::enter(state, shard, &req, job) {
        Entry::Started(g, job) => (g, job),
        Entry::Duplicate(job) => return refuse(state, &job.key, job.kind, DUPLICATE),
        Entry::Waiting => return,
    };
    let state = state.clone();
    // Counts the operation for the server's drain at shutdown.
    let token = state.tasks.token();
    ops.push(Box::pin(async move {
        let done = perform(&state, &req, &subnet, op).await;
        let next = guard.leave();
        drop(guard);
        drop(permit);
        finish(&state, &job, &req, done).await;
        Ended { next, token }
    }));
}

/// Performs `op`. The IPAM's operations are cancel-safe (a write made is
/// flushed anyway); this task is never cancelled, only waited for.
async fn perform(state: &State, req: &Request, subnet: &SubnetSpec, op: Pending) -> Done {
    let ipam = &state.ipam;
    let now = SystemTime::now();
    let quiet = |r: Result<(), IpamError>| match r {
        Ok(()) | Err(IpamError::NotOwner { .. } | IpamError::NoLease) => Done::Silent,
        Err(_) => Done::Drop(DropReason::Storage),
    };
    match op {
        Pending::Bind { ip, rapid } => {
            let port = req.port();
            let cap = state.limits.load().port_cap;
            let port = port.as_deref().map(|id| Port { id, cap });
            let r = ipam
                .bind_via(
                    &subnet.id,
                    &req.client,
                    ip,
                    req.hostname.as_deref(),
                    port,
                    now,
                )
                .await;
            after(req, subnet, &state.ctx, Op::Commit { rapid }, r, now)
        }
        Pending::Renew { ip, rapid } => {
            let r = ipam.renew(&req.client, ip, now).await;
            after(req, subnet, &state.ctx, Op::Commit { rapid }, r, now)
        }
        Pending::Release { ip } => quiet(ipam.release(&req.client, ip, now).await),
        Pending::Decline { ip } => quiet(ipam.decline(&req.client, ip, now).await),
    }
}

async fn finish(state: &State, job: &Job, req: &Request, done: Done) {
    match done {
        Done::Reply(r) => send(state, job.listener, job.kind, &req.client, r).await,
        Done::Silent => state.stats.dhcp.packet(job.kind, DhcpOutcome::Silent),
        Done::Drop(reason) => {
            if reason == DropReason::PortCap {
                port_full(state, req);
            }
            refuse(state, &job.key, job.kind, Refused::Drop(reason))
        }
    }
}

/// Sends a reply on the socket the request came in on: queued for the
/// receive loop's flush while it is busy, at once otherwise.
async fn send(state: &State, listener: usize, kind: DhcpKind, key: &ClientKey, reply: Reply) {
    let to = match reply.to {
        Dest::Relay(g) => SocketAddrV4::new(g, state.server_port),
        Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, state.client_port),
        Dest::Unicast(ip) => SocketAddrV4::new(ip, state.client_port),
    };
    let Some(l) = state.listeners.get(listener) else {
        return;
    };
    let out = Outgoing {
        bytes: reply.bytes,
        to,
        kind,
        outcome: reply.outcome,
        relayed: false,
        key: key.clone(),
    };
    state
        .outbox
        .send(listener, &l.socket, &state.stats, out)
        .await
}
