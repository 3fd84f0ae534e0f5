//! The DHCPv6 server: binds its socket, then serves on the appliance's
//! runtime: one receive loop admitting datagrams into a bounded queue
//! ([`super::admission`]), one worker ([`super::worker`]), and the
//! housekeeping of the limiters, interfaces and reloaded subnets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{admit, Arrival};
use super::handle::{Dhcp6Handle, Fail6};
use super::handler::Ctx6;
use super::limits::Limits6;
use super::server_error::Dhcp6Error;
use super::socket::{self, try_recv};
use super::state::State6;
use super::wire::MAX_DATAGRAM;
use crate::config::Config;
use crate::ipam::Ipam;

/// How often the limiters forget idle keys and interface addresses are re-read.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Datagrams taken per wake-up before the loop yields to the worker.
const BUDGET: usize = 256;

/// Messages handled at once (most wait for a group commit): with the
/// queue, this bounds the decoded messages held, each under a few KiB.
const MAX_IN_FLIGHT: usize = 1024;

/// The DHCPv6 server, its socket bound, not yet serving.
pub struct Dhcp6Server {
    state: State6,
    interfaces: Vec<String>,
    updates: watch::Receiver<Arc<Config>>,
    queue: usize,
    cancel: CancellationToken,
    fail: Fail6,
}

impl std::fmt::Debug for Dhcp6Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dhcp6Server")
            .field("listen", &self.state.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Dhcp6Server {
    /// Binds `[dhcp6] listen` and joins ff02::1:2 on each interface. Must
    /// be called inside a tokio runtime. Errors: [`Dhcp6Error::Socket`]
    /// (exit 69, "needs CAP_NET_BIND_SERVICE" on port 547 without it), or
    /// the store cannot give the server DUID.
    pub fn bind(handle: impl Into<Dhcp6Handle>, ipam: Arc<Ipam>) -> Result<Self, Dhcp6Error> {
        let h: Dhcp6Handle = handle.into();
        let cfg = &h.config;
        let duid = ipam.server_duid().map_err(Dhcp6Error::ServerDuid)?;
        let (sock, ifaces) = socket::bind(cfg.listen, &cfg.interfaces)?;
        let port = cfg.listen.port();
        let port = match port {
            0 => sock.local_addr().map_or(0, |a| a.port()),
            p => p,
        };
        let state = State6 {
            stats: h.stats,
            isolation: h.isolation,
            ipam,
            limits: ArcSwap::from_pointee(Limits6::new(cfg, &h.dhcp)),
            subnets: ArcSwap::from_pointee(h.subnets),
            ifaces: ArcSwap::from_pointee(ifaces),
            ctx: Ctx6::new(cfg, duid),
            socket: sock,
            server_port: port,
            // 546 for 547; a test server on port p answers clients on p - 1.
            client_port: port.wrapping_sub(1),
            deadline: h.dhcp.deadline,
            inflight: Default::default(),
        };
        Ok(Self {
            state,
            interfaces: cfg.interfaces.clone(),
            updates: h.updates,
            queue: h.dhcp.queue.max(1),
            cancel: h.cancel,
            fail: h.fail,
        })
    }

    /// The bound address (to learn port 0's pick).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.state.socket.local_addr()
    }

    /// Serves until the cancel token fires, then stops receiving, discards
    /// what is queued and waits up to [`super::state::DRAIN`] for the
    /// operations in flight. The IPAM's committer must outlive this future.
    pub async fn run(self) {
        let Self {
            state,
            interfaces,
            updates,
            queue,
            cancel,
            fail,
        } = self;
        let state = Arc::new(state);
        let (tx, rx) = mpsc::channel(queue);
        let loops = TaskTracker::new();
        let in_flight = queue.min(MAX_IN_FLIGHT);
        loops.spawn(super::worker::run(
            state.clone(),
            rx,
            in_flight,
            cancel.clone(),
        ));
        loops.spawn(housekeeping(
            state.clone(),
            interfaces,
            updates,
            cancel.clone(),
        ));
        let received = receive(&state, tx, &cancel).await;
        loops.close();
        loops.wait().await;
        match received {
            Err(e) if !cancel.is_cancelled() => fail(format!("the dhcp6 socket failed: {e}")),
            _ => tracing::info!("dhcp6 server stopped"),
        }
    }
}

/// The receive loop: every datagram the socket holds, admitted in turn.
/// Returns when `cancel` fires, or on an error the socket cannot recover from.
async fn receive(
    state: &State6,
    queue: mpsc::Sender<super::state::Job6>,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    // One byte over the limit, so oversize datagrams are seen as such.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            ready = state.socket.readable() => ready?,
        }
        {
            // What admission keeps (the decoded jobs) is the DHCP server's memory.
            let _owner = crate::heap::scope(crate::heap::Owner::Dhcp);
            for _ in 0..BUDGET {
                match try_recv(&state.socket, &mut buf) {
                    Ok(r) => {
                        let a = Arrival {
                            buf: &buf[..r.len.min(buf.len())],
                            from: r.from,
                            ifindex: r.ifindex,
                            dst: r.dst,
                            now: Instant::now(),
                        };
                        admit(state, a, &queue);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP errors of earlier sends surface here; the socket is fine.
                    Err(e) => tracing::debug!(error = %e, "dhcp6 recv"),
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Trims the limiters and re-reads the interfaces' addresses every
/// [`HOUSEKEEPING`]; swaps in new limits and subnets on reload.
async fn housekeeping(
    state: Arc<State6>,
    interfaces: Vec<String>,
    mut updates: watch::Receiver<Arc<Config>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                state.limits.load().housekeeping();
                let fresh: Result<Vec<_>, _> = interfaces.iter().map(|n| socket::iface(n)).collect();
                if let Ok(fresh) = fresh {
                    if **state.ifaces.load() != fresh {
                        state.ifaces.store(Arc::new(fresh));
                    }
                }
            }
            Ok(()) = updates.changed() => {
                let cfg = updates.borrow_and_update().clone();
                state.limits.store(Arc::new(Limits6::new(&cfg.dhcp6, &cfg.dhcp)));
                state.subnets.store(Arc::new(cfg.subnets6.clone()));
                tracing::info!(per_client_rate = %cfg.dhcp6.per_client_rate, "dhcp6 quotas and subnets reloaded");
            }
        }
    }
}
