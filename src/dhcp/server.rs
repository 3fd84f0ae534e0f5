//! The server: binds the sockets, runs one receive loop over them
//! (admission, cheapest check first) feeding a bounded queue per worker.
//!
//! Packets are sharded to workers by client key, so one client's packets
//! are handled in order by one worker; a worker never waits on the store:
//! durable operations run alongside (bounded by a semaphore), and at most one
//! per client at a time (see [`super::worker`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{Admission, HOUSEKEEPING};
use super::handler::Ctx;
use super::mmsg::{RecvBatch, BATCH};
use super::outbox::{self, Outbox};
use super::request::Request;
use super::socket::{self, Listener};
use super::wire::{peek, peek_giaddr, peek_mac, Peek, MAX_DATAGRAM};
use super::DhcpError;
use crate::client::ClientKey;
use crate::config::Config;
use crate::events::{EventKind, EventLog};
use crate::ipam::{Ipam, Port};
use crate::isolation::IsolationSet;
use crate::shared::Shared;
use crate::stats::{DhcpKind, DhcpOutcome, DropReason, Stats};
use arc_swap::ArcSwap;
use tokio::sync::watch;

/// How long `run` waits for in-flight IPAM operations after the token fires.
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

/// State shared by the receive loops, the workers and their operations.
pub(super) struct Inner {
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub ipam: Arc<Ipam>,
    /// Swapped whole when SIGHUP brings new rates (quotas restart then).
    pub admission: ArcSwap<Admission>,
    pub ctx: Ctx,
    pub listeners: Vec<Listener>,
    pub server_port: u16,
    pub client_port: u16,
    pub deadline: Duration,
    /// Clients with an IPAM operation in flight, one map per worker shard.
    /// Bounded by `permits`: an entry is made only by an operation that
    /// holds one, and removed before it gives it back (plus at most one
    /// waiting packet per entry). std Mutex: held for one insert/remove,
    /// never across an await.
    pub inflight: Box<[Mutex<HashMap<ClientKey, super::worker::Busy>>]>,
    /// Bounds the operations (durable writes waiting for a commit).
    pub permits: Arc<Semaphore>,
    /// Counts the operations in flight (a token each), waited for at
    /// shutdown.
    pub tasks: TaskTracker,
    /// Replies waiting for the end of the receive loop's look.
    pub outbox: Outbox,
    /// The operator's event log (port-cap refusals).
    pub events: Arc<EventLog>,
    /// Port-cap refusals not yet reported as an event.
    pub port_notes: Mutex<PortNotes>,
}

/// Port-cap refusals since the last event: one event per
/// [`PORT_EVENT_EVERY`] at most, naming the latest port refused and how many
/// clients were refused meanwhile (ports are attacker-chosen: an event per
/// port would flood the log).
#[derive(Debug, Default)]
pub(super) struct PortNotes {
    last: Option<Instant>,
    refused: u64,
}

/// The least time between two port-cap events.
pub const PORT_EVENT_EVERY: Duration = Duration::from_secs(1);

/// The DHCPv4 server, its sockets bound, not yet serving.
pub struct DhcpServer {
    inner: Inner,
    updates: watch::Receiver<Arc<Config>>,
    workers: usize,
    queue: usize,
    /// Its cancel token stops the server; `fail` stops the appliance if
    /// the DHCP thread dies.
    shared: Shared,
}

impl std::fmt::Debug for DhcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpServer")
            .field("listeners", &self.inner.listeners)
            .finish_non_exhaustive()
    }
}

impl DhcpServer {
    /// Binds the listen socket (`dhcp.listen`) and one socket per
    /// `dhcp.interfaces` entry. Must be called inside a tokio runtime.
    /// Errors: [`DhcpError::Bind`] (exit 69; EACCES on a port < 1024 says
    /// "needs CAP_NET_BIND_SERVICE"), [`DhcpError::Interface`] (exit 69),
    /// [`DhcpError::NoServerId`] (a config error).
    pub fn bind(shared: &Shared, ipam: Arc<Ipam>) -> Result<Self, DhcpError> {
        let cfg = &shared.config.dhcp;
        let SocketAddr::V4(listen) = cfg.listen else {
            return Err(DhcpError::Bind {
                addr: cfg.listen.to_string(),
                reason: "failed: DHCPv4 needs an IPv4 address".into(),
            });
        };
        let server_id = cfg
            .server_id
            .or(Some(*listen.ip()).filter(|a| !a.is_unspecified()))
            .ok_or(DhcpError::NoServerId)?;
        let listeners = socket::bind_all(cfg.listen, &cfg.interfaces)?;
        let workers = cfg.workers.max(1);
        let queue = cfg.queue.max(workers);
        let inner = Inner {
            stats: shared.stats.clone(),
            isolation: shared.isolation.clone(),
            ipam,
            admission: ArcSwap::from_pointee(Admission::new(cfg)),
            ctx: Ctx {
                server_id,
                authoritative: cfg.authoritative,
                rapid_commit: cfg.rapid_commit,
            },
            outbox: Outbox::new(listeners.len()),
            listeners,
            server_port: listen.port(),
            client_port: listen.port().wrapping_add(1),
            deadline: cfg.deadline,
            inflight: (0..workers).map(|_| Mutex::default()).collect(),
            permits: Arc::new(Semaphore::new(queue)),
            tasks: TaskTracker::new(),
            events: shared.events.clone(),
            port_notes: Mutex::default(),
        };
        Ok(Self {
            inner,
            updates: shared.updates.subscribe(),
            workers,
            queue,
            shared: shared.clone(),
        })
    }

    /// The bound addresses (listen socket first), e.g. to learn port 0's pick.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    /// Serves until the cancel token of the `Shared` it was bound with
    /// fires, then stops receiving, discards what is queued (no new IPAM
    /// operation starts) and waits up to [`DRAIN`] for in-flight ones, which
    /// reply once durable. The IPAM's committer must outlive this future:
    /// cancel it only after `run` returns (see the report / `app.rs`).
    /// Cancel-safety: stop it with the token, not by dropping this future;
    /// if dropped, the spawned loops still stop on the token and the
    /// operation tasks still finish.
    pub async fn run(mut self) {
        // Serve on a thread of our own, a current-thread runtime: the
        // receive loops, workers and operation tasks then hand packets to
        // each other without cross-thread wake-ups or work stealing. The
        // sockets move to its reactor.
        let moved: Result<Vec<_>, _> = std::mem::take(&mut self.inner.listeners)
            .into_iter()
            .map(|l| l.socket.into_std().map(|s| (s, l.iface)))
            .collect();
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                return self
                    .shared
                    .fail(format!("the dhcp sockets cannot move to their thread: {e}"))
            }
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("vpcbox-dhcp".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(async move {
                        match socket::adopt(moved) {
                            Ok(listeners) => {
                                self.inner.listeners = listeners;
                                self.serve().await;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "dhcp sockets cannot join their thread");
                            }
                        }
                    }),
                    Err(e) => tracing::error!(error = %e, "dhcp thread runtime cannot start"),
                }
                drop(done_tx);
            });
        let t = match spawned {
            Ok(t) => t,
            Err(e) => return shared.fail(format!("the dhcp thread cannot start: {e}")),
        };
        let _ = done_rx.await;
        let joined = tokio::task::spawn_blocking(move || t.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            shared.fail("the dhcp thread panicked");
        } else if !shared.cancel.is_cancelled() {
            shared.fail("the dhcp server stopped on its own");
        }
    }

    async fn serve(self) {
        let Self {
            inner,
            updates,
            workers,
            queue,
            shared,
        } = self;
        let cancel = shared.cancel;
        let per_worker = (queue / workers).max(1);
        inner
            .stats
            .dhcp
            .queue_capacity
            .store((per_worker * workers) as u64, Relaxed);
        let inner = Arc::new(inner);
        let loops = TaskTracker::new();
        let mut senders = Vec::with_capacity(workers);
        for shard in 0..workers {
            let (tx, rx) = mpsc::channel(per_worker);
            senders.push(tx);
            loops.spawn(super::worker::run(inner.clone(), shard, rx, cancel.clone()));
        }
        let senders: Arc<[mpsc::Sender<Job>]> = senders.into();
        loops.spawn(receive(inner.clone(), senders, cancel.clone()));
        loops.spawn(housekeeping(inner.clone(), updates, cancel.clone()));
        loops.close();
        loops.wait().await;
        inner.tasks.close();
        let left = inner.tasks.len();
        if tokio::time::timeout(DRAIN, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = inner.tasks.len(),
                "dhcp: in-flight IPAM operations did not finish; their clients get no reply"
            );
        }
        tracing::info!(drained = left, "dhcp server stopped");
    }
}

/// Trims the keyed limiters every [`HOUSEKEEPING`], and swaps in new
/// quotas when a reloaded config changes the `[dhcp]` rates.
async fn housekeeping(
    inner: Arc<Inner>,
    mut updates: watch::Receiver<Arc<Config>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let admission = inner.admission.load();
                let tracked = admission.tracked() as u64;
                inner.stats.dhcp.tracked_clients.store(tracked, Relaxed);
                admission.housekeeping();
            }
            Ok(()) = updates.changed() => {
                let dhcp = updates.borrow_and_update().dhcp.clone();
                inner.admission.store(Arc::new(Admission::new(&dhcp)));
                tracing::info!(
                    per_client_rate = %dhcp.per_client_rate,
                    global_rate = %dhcp.global_rate,
                    new_lease_rate = %dhcp.new_lease_rate,
                    max_leases_per_port = dhcp.max_leases_per_port,
                    "dhcp quotas reloaded"
                );
            }
        }
    }
}

/// Under load the receive loop sleeps this long between looks at the
/// sockets, and takes what gathered meanwhile in one go: a sleeping thread
/// woken for every datagram (and the peer woken for every reply) costs more
/// CPU than answering it. Bounds the extra wait of a packet under load.
/// 500 µs rather than 300: at 6,000 DORA/s the DHCP thread spends ~4 µs
/// less per DORA (fewer sleeps, fuller batches), and the average
/// DISCOVER→OFFER time stays ~0.6 ms, as the replies of a look now go
/// out together at its end.
pub const COALESCE: Duration = Duration::from_micros(500);

/// Datagrams per second from which the loop sleeps [`COALESCE`] between
/// looks: enough that a look finds a few of them; below it, every datagram
/// wakes the loop at once.
const BUSY_RATE: u32 = 5_000;

/// Datagrams taken from one socket per look, so the others get their turn.
const BUDGET: usize = 256;

/// Counts arrivals per 10 ms window: is the loop busy enough to coalesce?
#[derive(Debug)]
struct Pace {
    since: Instant,
    count: u32,
    previous: u32,
}

impl Pace {
    const WINDOW: Duration = Duration::from_millis(10);
    const BUSY: u32 = BUSY_RATE / 100;

    fn new(now: Instant) -> Self {
        Self {
            since: now,
            count: 0,
            previous: 0,
        }
    }

    fn busy(&mut self, got: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Self::WINDOW {
            // A quiet window after a busy one counts as quiet.
            self.previous = if elapsed >= 2 * Self::WINDOW {
                0
            } else {
                self.count
            };
            self.count = 0;
            self.since = now;
        }
        self.count = self.count.saturating_add(got as u32);
        self.count.max(self.previous) >= Self::BUSY
    }
}

/// The receive loop, for every socket: takes what each one holds, admits
/// it, lets the workers answer, sends the replies they queued, and then
/// either waits for the next datagram or, under load, sleeps [`COALESCE`]
/// first (the thread is the DHCP server's own, so nothing else waits on
/// it). Stopping on the token loses no datagram already taken from a
/// socket, and sends the replies still queued.
async fn receive(inner: Arc<Inner>, queues: Arc<[mpsc::Sender<Job>]>, cancel: CancellationToken) {
    // One byte over the limit, so oversize datagrams are seen as such.
    let mut batch = RecvBatch::new(MAX_DATAGRAM + 1);
    let mut spare = Vec::new();
    let mut pace = Pace::new(Instant::now());
    let mut busy = false;
    loop {
        if !busy {
            let ready = futures::future::select_all(
                inner
                    .listeners
                    .iter()
                    .map(|l| Box::pin(l.socket.readable())),
            );
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ready => {}
            }
        } else if cancel.is_cancelled() {
            break;
        }
        let mut got = 0;
        let mut full = false;
        for (idx, l) in inner.listeners.iter().enumerate() {
            let n = take(&inner, idx, &l.socket, &mut batch, &queues);
            full |= n == BUDGET;
            got += n;
        }
        busy = pace.busy(got, Instant::now());
        inner.outbox.set_batching(busy);
        // The workers answer what was admitted before the loop sleeps.
        tokio::task::yield_now().await;
        outbox::flush(&inner, &mut spare).await;
        if busy && !full {
            std::thread::sleep(COALESCE);
        }
    }
    inner.outbox.set_batching(false);
    outbox::flush(&inner, &mut spare).await;
}

/// Takes up to [`BUDGET`] datagrams from listener `idx`'s socket, [`BATCH`]
/// per system call, and admits them; returns how many it took.
fn take(
    inner: &Inner,
    idx: usize,
    socket: &tokio::net::UdpSocket,
    batch: &mut RecvBatch,
    queues: &[mpsc::Sender<Job>],
) -> usize {
    let mut n = 0;
    while n < BUDGET {
        let want = (BUDGET - n).min(BATCH);
        match batch.recv(socket, want) {
            Ok(k) => {
                n += k;
                let now = Instant::now();
                for i in 0..k {
                    inner.admit(batch.get(i), batch.from(i), idx, queues, now);
                }
                if k < want {
                    break; // the socket had no more
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket
                // itself is fine. Counted against the budget, so no error
                // can keep the loop here.
                n += 1;
                tracing::debug!(error = %e, "dhcp recv");
            }
        }
    }
    n
}

pub(super) fn kind_of(msg_type: u8) -> DhcpKind {
    match msg_type {
        1 => DhcpKind::Discover,
        3 => DhcpKind::Request,
        4 => DhcpKind::Decline,
        7 => DhcpKind::Release,
        8 => DhcpKind::Inform,
        _ => DhcpKind::Other,
    }
}

impl Inner {
    /// Admission, cheapest first: isolation by raw `chaddr`, framing and
    /// client key, isolation by that key, the relay's trust, quotas, then
    /// the bounded queue. Never blocks. `from` is the datagram's source,
    /// `now` when it was taken from its socket.
    fn admit(
        &self,
        buf: &[u8],
        from: Option<SocketAddrV4>,
        idx: usize,
        queues: &[mpsc::Sender<Job>],
        now: Instant,
    ) {
        // Broadcasts reach the listen socket too; the interface's own
        // socket answers those.
        let has_ifaces = self.listeners.len() > 1;
        if self.listeners[idx].iface.is_none()
            && has_ifaces
            && peek_giaddr(buf) == Some(Ipv4Addr::UNSPECIFIED)
        {
            return;
        }
        let Some(mac) = peek_mac(buf) else {
            self.stats.drop_anonymous(DropReason::Malformed);
            self.stats
                .dhcp
                .packet(DhcpKind::Malformed, DhcpOutcome::Dropped);
            return;
        };
        if self.isolation.is_isolated_mac(mac) {
            self.stats
                .drop_for(&ClientKey::Mac(mac), DropReason::Isolated, now);
            return;
        }
        let malformed = |key: &ClientKey| {
            self.stats.drop_for(key, DropReason::Malformed, now);
            self.stats
                .dhcp
                .packet(DhcpKind::Malformed, DhcpOutcome::Dropped);
        };
        let Ok(peek) = peek(buf) else {
            return malformed(&ClientKey::Mac(mac));
        };
        let Some(key) = ClientKey::dhcp(peek.client_id(buf), mac) else {
            return malformed(&ClientKey::Mac(mac));
        };
        // The key the operator sees (an option 61 of type 1 names a MAC
        // other than chaddr's), as well as chaddr above.
        if key != ClientKey::Mac(mac) && self.isolation.is_isolated(&key) {
            self.stats.drop_for(&key, DropReason::Isolated, now);
            return;
        }
        // Every arrival past isolation, dropped or not: the rates show what
        // a client sends.
        self.stats.clients.request(&key, now);
        let kind = kind_of(peek.msg_type);
        // A relayed packet is trusted only from a configured relay: its
        // giaddr (which selects the subnet) and the datagram's source.
        let trusted = |a: Ipv4Addr| self.ipam.is_relay(a);
        let relayed = !peek.giaddr.is_unspecified();
        if relayed && !(trusted(peek.giaddr) && from.is_some_and(|f| trusted(*f.ip()))) {
            return self.refuse(&key, kind, DropReason::UntrustedRelay);
        }
        if let Err(reason) = self.admission.load().check_client(&key) {
            return self.refuse(&key, kind, reason);
        }
        let shard = shard_of(&key, queues.len());
        let job = Job {
            buf: buf.to_vec(),
            listener: idx,
            at: now,
            key,
            kind,
            peek,
        };
        self.stats.dhcp.queue_depth.fetch_add(1, Relaxed);
        if let Err(e) = queues[shard].try_send(job) {
            self.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
            if let mpsc::error::TrySendError::Full(job) = e {
                self.refuse(&job.key, job.kind, DropReason::QueueFull);
            }
        }
    }

    /// Whether one more *new* lease may be handed out: not while the memory
    /// governor sheds load (renewals of existing leases still are), not to
    /// a relay port holding its cap (checked before the rates, so a full
    /// port's clients spend none of the subnet's new leases; the IPAM checks
    /// again as it hands the address out), and within the per-subnet /
    /// per-relay rate.
    pub(super) fn admit_new_lease(
        &self,
        subnet: &str,
        giaddr: Ipv4Addr,
        port: Option<Port>,
    ) -> Result<(), DropReason> {
        if self
            .stats
            .memory
            .overload_state
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
        {
            return Err(DropReason::Overload);
        }
        if port.is_some_and(|p| self.ipam.port_full(p)) {
            return Err(DropReason::PortCap);
        }
        if !self.admission.load().check_new_lease(subnet, giaddr) {
            return Err(DropReason::LeaseCap);
        }
        Ok(())
    }

    /// Notes a client refused because its relay port holds its cap; an
    /// event at most every [`PORT_EVENT_EVERY`].
    pub(super) fn port_full(&self, req: &Request) {
        let now = Instant::now();
        let refused = {
            let mut n = self.port_notes.lock().unwrap_or_else(|e| e.into_inner());
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
            .and_then(super::request::circuit_id)
            .map_or_else(|| "none".to_owned(), show_circuit);
        let cap = self.admission.load().port_cap;
        let msg = format!(
            "relay port {} circuit-id {circuit} holds its cap of {cap} addresses: \
             {refused} new client(s) refused (latest {})",
            req.giaddr, req.client
        );
        tracing::warn!("{msg}");
        self.events.push(EventKind::PortCap, msg);
    }

    /// Counts a refused packet by reason, for its client.
    pub(super) fn refuse(&self, key: &ClientKey, kind: DhcpKind, reason: DropReason) {
        self.stats.drop_for(key, reason, Instant::now());
        self.stats.dhcp.packet(kind, DhcpOutcome::Dropped);
    }
}

/// A circuit-id for the operator: quoted if printable ASCII, else hex; cut
/// at 32 bytes.
fn show_circuit(c: &[u8]) -> String {
    let c = &c[..c.len().min(32)];
    if !c.is_empty() && c.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(c))
    } else {
        c.iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub(super) fn shard_of(key: &ClientKey, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop coalesces from BUSY_RATE datagrams a second on, and stops
    /// once a whole window passes below it.
    #[test]
    fn pace_turns_busy_at_the_busy_rate_and_quiet_after_a_quiet_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = Pace::new(t0);
        // 1,000 a second: one every millisecond.
        assert!((0..30).all(|i| !pace.busy(1, ms(i))));
        // 10,000 a second: ten every millisecond.
        assert!(!pace.busy(10, ms(30)));
        assert!(pace.busy(Pace::BUSY as usize, ms(31)));
        assert!(pace.busy(1, ms(41)), "the busy window still counts");
        // Silence for two windows: quiet at once.
        assert!(!pace.busy(1, ms(70)));
    }
}
