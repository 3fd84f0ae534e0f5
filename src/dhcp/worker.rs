//! Workers: deadline, decode, subnet, the pure handler, then the IPAM.
//!
//! Answers that need no durable write (offers, replies from memory, NAKs,
//! INFORM) are sent by the worker itself. Durable operations (bind, renew,
//! release, decline) run as futures the worker polls alongside its queue
//! ([`Ops`]), so a worker never waits for a group commit; one client has
//! at most one in flight. A retransmission of the packet in flight (same
//! type and xid) is dropped as a duplicate: its answer is on its way. Another packet meanwhile (a REQUEST right after a
//! RELEASE) waits, and is handled as soon as the operation ends; only the
//! latest one waits (one per client), an earlier one is dropped as a
//! duplicate.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::handler::{after, handle, Action, Done, Op};
use super::outbox::{self, Outgoing};
use super::reply::{Dest, Reply};
use super::request::Request;
use super::server::{Inner, Job, DRAIN};
use crate::client::ClientKey;
use crate::ipam::{IpamError, Port, SubnetSpec};
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
/// rather than spawned one task each: at 6,000 binds a second a tokio task
/// per bind (its allocation, registration, scheduling and a wake-up from
/// the committer's thread each) cost more than the set, which the
/// committer's answers to a whole batch wake once.
type Ops = FuturesUnordered<Operation>;

/// Jobs a worker takes from its queue in a row before it finishes the
/// operations that have ended meanwhile (their acks), even if more jobs
/// are queued.
const FAIR_SHARE: usize = 32;

/// One worker: takes jobs from its queue and finishes its operations until
/// `cancel` fires (jobs still queued then are discarded: no new IPAM
/// operation starts) or every sender is gone; then the operations in
/// flight go on (see [`drain`]).
pub(super) async fn run(
    inner: Arc<Inner>,
    shard: usize,
    mut rx: mpsc::Receiver<Job>,
    cancel: CancellationToken,
) {
    let mut ops = Ops::new();
    let mut worker = Worker {
        inner: &inner,
        shard,
    };
    serve(&mut rx, &mut ops, &cancel, &mut worker).await;
    rx.close();
    let left = rx.len();
    inner.stats.dhcp.queue_depth.fetch_sub(left as i64, Relaxed);
    if !ops.is_empty() {
        // Not tracked itself: the operations' tracker tokens are, and the
        // server waits on those for up to DRAIN.
        tokio::spawn(drain(inner, shard, ops));
    }
}

/// What a worker does with a job and with an operation that ended;
/// [`serve`] decides when. A trait rather than two async closures: rustc
/// cannot prove `Send` (the worker is spawned) for a generic await of an
/// async closure's future that borrows the closure's captures.
trait Handler {
    type Job;
    type Op: Future;
    async fn job(&mut self, job: Self::Job, ops: &mut FuturesUnordered<Self::Op>);
    async fn ended(
        &mut self,
        ended: <Self::Op as Future>::Output,
        ops: &mut FuturesUnordered<Self::Op>,
    );
}

/// The DHCP worker of one shard.
struct Worker<'a> {
    inner: &'a Arc<Inner>,
    shard: usize,
}

impl Handler for Worker<'_> {
    type Job = Job;
    type Op = Operation;

    async fn job(&mut self, job: Job, ops: &mut Ops) {
        self.inner.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
        process(self.inner, self.shard, job, ops).await;
    }

    async fn ended(&mut self, ended: Ended, ops: &mut Ops) {
        after_op(self.inner, self.shard, ended, ops).await;
    }
}

/// A worker's schedule: `cancel` first, then the queue, then the
/// operations that ended, but never more than [`FAIR_SHARE`] jobs in a
/// row while operations have ended. Returns when `cancel` fires or every
/// sender is gone, leaving the jobs still queued and the operations in
/// flight to the caller. Generic so that tests can drive it with plain
/// jobs and futures.
async fn serve<H: Handler>(
    rx: &mut mpsc::Receiver<H::Job>,
    ops: &mut FuturesUnordered<H::Op>,
    cancel: &CancellationToken,
    handler: &mut H,
) {
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    // Jobs taken from the queue since operations were last looked at.
    let mut in_a_row = 0;
    loop {
        // Queued packets before ended operations: a look's offers then go
        // out ahead of the acks a group commit released at once (dozens,
        // each taking the peer's receive path in the send), as they did
        // when the operations were tasks woken from the committer's thread.
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            job = rx.recv() => {
                let Some(job) = job else { break };
                handler.job(job, ops).await;
                in_a_row += 1;
                if in_a_row >= FAIR_SHARE {
                    // A queue that never empties (a flood) must not starve
                    // the acks: finish what has ended before more jobs.
                    in_a_row = 0;
                    while let Some(Some(ended)) = ops.next().now_or_never() {
                        handler.ended(ended, ops).await;
                    }
                }
            }
            Some(ended) = ops.next(), if !ops.is_empty() => {
                in_a_row = 0;
                handler.ended(ended, ops).await;
            }
        }
    }
}

/// Polls the operations left in flight at shutdown until they end (they
/// reply once durable), for at most [`DRAIN`]; a packet that waited for
/// one is still handled, as during service.
async fn drain(inner: Arc<Inner>, shard: usize, mut ops: Ops) {
    let all = async {
        while let Some(ended) = ops.next().await {
            after_op(&inner, shard, ended, &mut ops).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN, all).await;
}

/// Handles the packet that waited for an operation that ended.
async fn after_op(inner: &Arc<Inner>, shard: usize, ended: Ended, ops: &mut Ops) {
    if let Some(job) = ended.next {
        process(inner, shard, job, ops).await;
    }
    drop(ended.token);
}

async fn process(inner: &Arc<Inner>, shard: usize, job: Job, ops: &mut Ops) {
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
    let port_id = req.port();
    let cap = inner.admission.load().port_cap;
    let port = port_id.as_deref().map(|id| Port { id, cap });
    let admit_new = || {
        inner
            .admit_new_lease(&subnet.id, req.giaddr, port)
            .inspect_err(|r| {
                if *r == DropReason::PortCap {
                    inner.port_full(&req);
                }
            })
    };
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
                if let Err(reason) = admit_new() {
                    return inner.refuse(&job.key, job.kind, reason);
                }
            }
            let offered = inner
                .ipam
                .offer_via(&subnet.id, &req.client, requested, port, now);
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
                if let Err(reason) = admit_new() {
                    return inner.refuse(&job.key, job.kind, reason);
                }
            }
            Pending::Bind { ip, rapid: false }
        }
        Action::Renew { ip, rapid } => Pending::Renew { ip, rapid },
        Action::Release { ip } | Action::Forget { ip } => Pending::Release { ip },
        Action::Decline { ip } => Pending::Decline { ip },
    };
    start(inner, shard, job, req, subnet, pending, ops);
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

/// Starts `op` for the client of `job` unless it has one in flight (then
/// the packet is a duplicate, or waits for it).
fn start(
    inner: &Arc<Inner>,
    shard: usize,
    job: Job,
    req: Request,
    subnet: Arc<SubnetSpec>,
    op: Pending,
    ops: &mut Ops,
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
    // Counts the operation for the server's drain at shutdown.
    let token = inner.tasks.token();
    ops.push(Box::pin(async move {
        let done = perform(&inner, &req, &subnet, op).await;
        let next = guard.leave();
        drop(guard);
        drop(permit);
        finish(&inner, &job, &req, done).await;
        Ended { next, token }
    }));
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
            let port = req.port();
            let cap = inner.admission.load().port_cap;
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
        Done::Drop(reason) => {
            if reason == DropReason::PortCap {
                inner.port_full(req);
            }
            inner.refuse(&job.key, job.kind, reason)
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use futures::stream::FuturesUnordered;
    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;

    use super::{serve, Handler, FAIR_SHARE};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        /// Job `n` taken from the queue (it started its operation).
        Job(u32),
        /// The operation of job `n` ended and was handed to the worker.
        End(u32),
    }

    /// A job's number and its operation, which ends when its sender sends
    /// that number.
    type TestJob = (u32, oneshot::Receiver<u32>);
    type TestOps = FuturesUnordered<oneshot::Receiver<u32>>;

    /// Starts each job's operation and records what [`serve`] hands it;
    /// cancels once `stop` holds for the trace.
    struct Tracer {
        trace: Vec<Event>,
        stop: fn(&[Event]) -> bool,
        cancel: CancellationToken,
    }

    impl Tracer {
        fn note(&mut self, event: Event) {
            self.trace.push(event);
            if (self.stop)(&self.trace) {
                self.cancel.cancel();
            }
        }
    }

    impl Handler for Tracer {
        type Job = TestJob;
        type Op = oneshot::Receiver<u32>;

        async fn job(&mut self, (n, op): TestJob, ops: &mut TestOps) {
            self.note(Event::Job(n));
            ops.push(op);
        }

        async fn ended(&mut self, ended: Result<u32, oneshot::error::RecvError>, _: &mut TestOps) {
            self.note(Event::End(
                ended.expect("every operation is ended by a send"),
            ));
        }
    }

    /// Serves `rx` until `stop` holds for the trace; a worker that stalls
    /// instead fails the test after 5 s.
    async fn serve_until(
        rx: &mut mpsc::Receiver<TestJob>,
        ops: &mut TestOps,
        stop: fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let cancel = CancellationToken::new();
        let mut tracer = Tracer {
            trace: Vec::new(),
            stop,
            cancel: cancel.clone(),
        };
        let served = serve(rx, ops, &cancel, &mut tracer);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the worker stalled");
        tracer.trace
    }

    /// Job `n`, whose operation ends as soon as it starts.
    fn ended(n: u32) -> TestJob {
        let (end, op) = oneshot::channel();
        end.send(n).expect("the receiver is alive");
        (n, op)
    }

    fn ends(trace: &[Event]) -> usize {
        trace.iter().filter(|e| matches!(e, Event::End(_))).count()
    }

    /// A flood: the queue holds 200 jobs from the start and each job's
    /// operation ends at once. The queue goes first, yet no ended operation
    /// waits while FAIR_SHARE more jobs are taken (the job that started it
    /// counts toward the share).
    #[tokio::test]
    async fn a_full_queue_does_not_starve_ended_operations() {
        const JOBS: usize = 200;
        // `tx` stays open to the end: a closed queue would stop the worker.
        let (tx, mut rx) = mpsc::channel(JOBS);
        for n in 0..JOBS as u32 {
            tx.try_send(ended(n)).expect("room for every job");
        }
        let mut ops = TestOps::new();
        let trace = serve_until(&mut rx, &mut ops, |t| ends(t) == JOBS).await;

        // Jobs taken so far; the count when each job was taken.
        let mut taken = 0;
        let mut started = HashMap::new();
        for &event in &trace {
            match event {
                Event::Job(n) => {
                    taken += 1;
                    started.insert(n, taken);
                }
                Event::End(n) => {
                    let waited = taken - started[&n];
                    assert!(
                        waited < FAIR_SHARE,
                        "operation {n} ended, then waited while {waited} jobs were taken"
                    );
                }
            }
        }
        assert_eq!(taken, JOBS);
        // Whatever FAIR_SHARE is: operations were finished during the
        // flood, not only once the queue had emptied.
        let first_end = trace.iter().position(|e| matches!(e, Event::End(_)));
        let last_job = trace.iter().rposition(|e| matches!(e, Event::Job(_)));
        assert!(
            first_end < last_job,
            "no operation finished during the flood"
        );
    }

    /// An operation that ends while the queue is empty is finished then,
    /// without waiting for another job.
    #[tokio::test]
    async fn an_operation_that_ends_on_an_empty_queue_is_finished_at_once() {
        let (tx, mut rx) = mpsc::channel(1);
        let (end, op) = oneshot::channel();
        tx.try_send((0, op)).expect("room for the job");
        let mut ops = TestOps::new();
        let worker = serve_until(&mut rx, &mut ops, |t| t.len() == 2);
        let ender = async {
            // Lets the worker take the job (and empty the queue) first.
            tokio::task::yield_now().await;
            end.send(0).expect("the operation is in flight");
        };
        let (trace, ()) = tokio::join!(worker, ender);
        assert_eq!(trace, [Event::Job(0), Event::End(0)]);
    }

    /// Cancel goes before queued jobs and ended operations alike: both are
    /// left to the caller.
    #[tokio::test]
    async fn cancel_leaves_queued_jobs_and_ended_operations() {
        let (tx, mut rx) = mpsc::channel(10);
        for n in 0..10 {
            tx.try_send(ended(n)).expect("room for every job");
        }
        let mut ops = TestOps::new();
        // Cancelled while job 3 is handled.
        let trace = serve_until(&mut rx, &mut ops, |t| t.len() == 4).await;
        assert_eq!(trace, (0..4).map(Event::Job).collect::<Vec<_>>());
        assert_eq!(rx.len(), 6);
        assert_eq!(ops.len(), 4);
    }
}
