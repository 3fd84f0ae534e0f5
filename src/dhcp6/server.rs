//! The DHCPv6 server: binds its socket, then serves on a thread of its own
//! (as v4: [`crate::dhcp::thread`]): one receive loop admitting datagrams
//! into a bounded queue ([`super::receive`]), one worker
//! ([`super::worker`]), and the housekeeping of the limiters and
//! interfaces. Its subnets are the IPAM's (config and API ones), read per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::Dhcp6Handle;
use super::handler::Ctx6;
use super::limits::Limits6;
use super::receive::receive;
use super::server_error::Dhcp6Error;
use super::socket::{self, Iface6};
use super::state::State6;
use crate::config::Config;
use crate::dhcp::outbox::Outbox;
use crate::dhcp::thread::on_own_thread;
use crate::ipam::Ipam;

/// How often the limiters forget idle keys and interface addresses are re-read.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Messages handled at once (most wait for a group commit): with the
/// queue, this bounds the decoded messages held, each under a few KiB.
const MAX_IN_FLIGHT: usize = 1024;

/// The DHCPv6 server, its socket bound, not yet serving.
pub struct Dhcp6Server {
    handle: Dhcp6Handle,
    ipam: Arc<Ipam>,
    duid: Vec<u8>,
    /// Out of any runtime until it joins the server thread's reactor.
    socket: std::net::UdpSocket,
    ifaces: Vec<Iface6>,
    port: u16,
}

impl std::fmt::Debug for Dhcp6Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dhcp6Server")
            .field("listen", &self.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Dhcp6Server {
    /// Binds `[dhcp6] listen` and joins ff02::1:2 on each interface. Must
    /// be called inside a tokio runtime. Errors: [`Dhcp6Error::Socket`]
    /// (exit 69, "needs CAP_NET_BIND_SERVICE" on port 547 without it), or
    /// the store cannot give the server DUID.
    pub fn bind(handle: impl Into<Dhcp6Handle>, ipam: Arc<Ipam>) -> Result<Self, Dhcp6Error> {
        let handle: Dhcp6Handle = handle.into();
        let cfg = &handle.config;
        let duid = ipam.server_duid().map_err(Dhcp6Error::ServerDuid)?;
        let (sock, ifaces) = socket::bind(cfg.listen, &cfg.interfaces)?;
        let port = match cfg.listen.port() {
            0 => sock.local_addr().map_or(0, |a| a.port()),
            p => p,
        };
        let socket = sock
            .into_std()
            .map_err(|e| crate::dhcp::DhcpError::bind(cfg.listen, None, &e))?;
        Ok(Self {
            handle,
            ipam,
            duid,
            socket,
            ifaces,
            port,
        })
    }

    /// The bound address (to learn port 0's pick).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until the cancel token fires, then stops receiving, discards
    /// what is queued and waits up to [`super::state::DRAIN`] for the
    /// operations in flight. The IPAM's committer must outlive this future.
    pub async fn run(self) {
        let fail = self.handle.fail.clone();
        let cancel = self.handle.cancel.clone();
        match on_own_thread("dhcp6", move || self.serve()).await {
            Err(why) | Ok(Err(why)) => fail(why),
            Ok(Ok(())) if !cancel.is_cancelled() => {
                fail("the dhcp6 server stopped on its own".into())
            }
            Ok(Ok(())) => tracing::info!("dhcp6 server stopped"),
        }
    }

    /// On the server's thread: the socket joins its reactor, the loops run.
    async fn serve(self) -> Result<(), String> {
        let Self {
            handle: h,
            ipam,
            duid,
            socket,
            ifaces,
            port,
        } = self;
        let socket = UdpSocket::from_std(socket)
            .map_err(|e| format!("the dhcp6 socket cannot join its thread: {e}"))?;
        let cfg = &h.config;
        let state = Arc::new(State6 {
            stats: h.stats,
            isolation: h.isolation,
            ipam,
            limits: ArcSwap::from_pointee(Limits6::new(cfg, &h.dhcp)),
            ifaces: ArcSwap::from_pointee(ifaces),
            ctx: Ctx6::new(cfg, duid),
            socket,
            outbox: Outbox::new(1),
            server_port: port,
            // 546 for 547; a test server on port p answers clients on p - 1.
            client_port: port.wrapping_sub(1),
            deadline: h.dhcp.deadline,
            inflight: Default::default(),
        });
        let cancel = h.cancel;
        let queue = h.dhcp.queue.max(1);
        let (tx, rx) = mpsc::channel(queue);
        let loops = TaskTracker::new();
        loops.spawn(super::worker::run(
            state.clone(),
            rx,
            queue.min(MAX_IN_FLIGHT),
            cancel.clone(),
        ));
        loops.spawn(housekeeping(
            state.clone(),
            h.config.interfaces.clone(),
            h.updates,
            cancel.clone(),
        ));
        let received = receive(&state, tx, &cancel).await;
        loops.close();
        loops.wait().await;
        match received {
            Err(e) if !cancel.is_cancelled() => Err(format!("the dhcp6 socket failed: {e}")),
            _ => Ok(()),
        }
    }
}

/// Trims the limiters and re-reads the interfaces' addresses every
/// [`HOUSEKEEPING`]; swaps in new limits on reload (the subnets are the
/// IPAM's, which the reload updates).
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
                tracing::info!(per_client_rate = %cfg.dhcp6.per_client_rate, "dhcp6 quotas reloaded");
            }
        }
    }
}
