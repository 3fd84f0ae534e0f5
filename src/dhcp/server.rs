//! The server: binds the sockets, then serves on a thread of its own: one
//! receive loop (see [`super::receive`]) feeding a bounded queue per worker
//! ([`super::worker`]), and the housekeeping of the limiters.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::DhcpError;
use super::handle::{DhcpHandle, Fail};
use super::handler::Ctx;
use super::limits::{Limits, HOUSEKEEPING};
use super::outbox::Outbox;
use super::receive::receive;
use super::socket;
use super::state::{Job, State, DRAIN};
use super::thread::on_own_thread;
use crate::config::Config;
use crate::ipam::Ipam;

/// The DHCPv4 server, its sockets bound, not yet serving.
pub struct DhcpServer {
    state: State,
    updates: watch::Receiver<Arc<Config>>,
    workers: usize,
    queue: usize,
    /// Stops the server.
    cancel: CancellationToken,
    /// Stops the appliance if the DHCP thread dies.
    fail: Fail,
}

impl std::fmt::Debug for DhcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpServer")
            .field("listeners", &self.state.listeners)
            .finish_non_exhaustive()
    }
}

impl DhcpServer {
    /// Binds the listen socket (`dhcp.listen`) and one socket per
    /// `dhcp.interfaces` entry. Must be called inside a tokio runtime.
    /// `handle` is a [`DhcpHandle`] or anything it is built from (`&Shared`).
    /// Errors: [`DhcpError::Bind`] (exit 69; EACCES on a port < 1024 says
    /// "needs CAP_NET_BIND_SERVICE"), [`DhcpError::Interface`] (exit 69),
    /// [`DhcpError::NoServerId`] (a config error).
    pub fn bind(handle: impl Into<DhcpHandle>, ipam: Arc<Ipam>) -> Result<Self, DhcpError> {
        let h: DhcpHandle = handle.into();
        let cfg = &h.config;
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
        let state = State {
            stats: h.stats,
            isolation: h.isolation,
            ipam,
            limits: ArcSwap::from_pointee(Limits::new(cfg)),
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
            events: h.events,
            port_notes: Mutex::default(),
        };
        Ok(Self {
            state,
            updates: h.updates,
            workers,
            queue,
            cancel: h.cancel,
            fail: h.fail,
        })
    }

    /// The bound addresses (listen socket first), e.g. to learn port 0's pick.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.state
            .listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    /// Serves until the handle's cancel token fires, then stops receiving,
    /// discards what is queued (no new IPAM operation starts) and waits up
    /// to [`DRAIN`] for in-flight ones, which reply once durable. The IPAM's
    /// committer must outlive this future: cancel it only after `run`
    /// returns. Cancel-safety: stop it with the token, not by dropping this
    /// future; if dropped, the loops still stop on the token and the
    /// operations still finish.
    pub async fn run(mut self) {
        // A thread of our own (see `on_own_thread`); the sockets move to
        // its reactor.
        let moved: Result<Vec<_>, _> = std::mem::take(&mut self.state.listeners)
            .into_iter()
            .map(|l| l.socket.into_std().map(|s| (s, l.iface)))
            .collect();
        let fail = self.fail.clone();
        let cancel = self.cancel.clone();
        let moved = match moved {
            Ok(m) => m,
            Err(e) => return fail(format!("the dhcp sockets cannot move to their thread: {e}")),
        };
        let served = on_own_thread("dhcp", move || async move {
            match socket::adopt(moved) {
                Ok(listeners) => {
                    self.state.listeners = listeners;
                    self.serve().await;
                }
                Err(e) => tracing::error!(error = %e, "dhcp sockets cannot join their thread"),
            }
        })
        .await;
        match served {
            Err(why) => fail(why),
            Ok(()) if !cancel.is_cancelled() => fail("the dhcp server stopped on its own".into()),
            Ok(()) => {}
        }
    }

    async fn serve(self) {
        let Self {
            state,
            updates,
            workers,
            queue,
            cancel,
            ..
        } = self;
        let per_worker = (queue / workers).max(1);
        state
            .stats
            .dhcp
            .queue_capacity
            .store((per_worker * workers) as u64, Relaxed);
        let state = Arc::new(state);
        let loops = TaskTracker::new();
        let mut senders = Vec::with_capacity(workers);
        for shard in 0..workers {
            let (tx, rx) = mpsc::channel(per_worker);
            senders.push(tx);
            loops.spawn(super::worker::run(state.clone(), shard, rx, cancel.clone()));
        }
        let senders: Arc<[mpsc::Sender<Job>]> = senders.into();
        loops.spawn(receive(state.clone(), senders, cancel.clone()));
        loops.spawn(housekeeping(state.clone(), updates, cancel.clone()));
        loops.close();
        loops.wait().await;
        state.tasks.close();
        let left = state.tasks.len();
        if tokio::time::timeout(DRAIN, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = state.tasks.len(),
                "dhcp: in-flight IPAM operations did not finish; their clients get no reply"
            );
        }
        tracing::info!(drained = left, "dhcp server stopped");
    }
}

/// Trims the keyed limiters every [`HOUSEKEEPING`], and swaps in new ones
/// when a reloaded config changes the `[dhcp]` rates.
async fn housekeeping(
    state: Arc<State>,
    mut updates: watch::Receiver<Arc<Config>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let limits = state.limits.load();
                let tracked = limits.tracked() as u64;
                state.stats.dhcp.tracked_clients.store(tracked, Relaxed);
                limits.housekeeping();
            }
            Ok(()) = updates.changed() => {
                let dhcp = updates.borrow_and_update().dhcp.clone();
                state.limits.store(Arc::new(Limits::new(&dhcp)));
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
