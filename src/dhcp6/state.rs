//! What the DHCPv6 receive loop and worker share: the server's state and
//! the jobs passed between them. A leaf: it imports no file that uses it.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;

use super::handler::{Ctx6, Via};
use super::limits::Limits6;
use super::relay::RelayChain;
use super::request::Request6;
use super::socket::Iface6;
use crate::client::ClientKey;
use crate::config::Subnet6Config;
use crate::dhcp::mmsg::To6;
use crate::dhcp::outbox::Outbox;
use crate::ipam::Ipam;
use crate::isolation::IsolationSet;
use crate::stats::{DhcpKind, Stats};

/// How long the server waits for in-flight IPAM operations at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// A decoded datagram that passed admission, on its way to the worker.
pub(super) struct Job6 {
    pub chain: RelayChain,
    pub req: Request6,
    /// The DUID (or, for an anonymous Information-Request, the source).
    pub key: ClientKey,
    pub kind: DhcpKind,
    pub via: Via,
    /// The subnets as admission saw them, and the client's among them.
    pub subnets: Arc<Vec<Subnet6Config>>,
    pub subnet: Option<usize>,
    pub from: SocketAddrV6,
    /// Our address to answer from: the one it was sent to, or for a
    /// multicast, the interface's nearest the client ([`source_for`];
    /// None: the kernel picks).
    pub src: Option<Ipv6Addr>,
    pub at: Instant,
}

impl Job6 {
    pub fn subnet(&self) -> Option<&Subnet6Config> {
        self.subnets.get(self.subnet?)
    }
}

/// State shared by the receive loop and the worker.
pub(super) struct State6 {
    pub stats: Arc<Stats>,
    pub isolation: Arc<IsolationSet>,
    pub ipam: Arc<Ipam>,
    /// Swapped whole when a reload brings new rates (quotas restart then).
    pub limits: ArcSwap<Limits6>,
    /// `[dhcp6] interfaces`, their addresses refreshed by housekeeping.
    pub ifaces: ArcSwap<Vec<Iface6>>,
    pub ctx: Ctx6,
    pub socket: UdpSocket,
    /// Replies waiting for the end of the receive loop's look (one queue:
    /// one socket).
    pub outbox: Outbox<To6>,
    /// Relays are answered on this port, clients on `client_port`.
    pub server_port: u16,
    pub client_port: u16,
    pub deadline: Duration,
    /// Messages being handled, by client and transaction id: a client's
    /// retransmission meanwhile is a duplicate, not a second IPAM operation.
    /// Bounded by the worker's in-flight limit. std Mutex: one insert or
    /// remove, never held across an await.
    pub inflight: Mutex<crate::hash::Set<(ClientKey, [u8; 3])>>,
}

/// Whether `dst` is the servers' multicast group (else unicast to us).
pub(super) fn via_of(dst: Ipv6Addr) -> Via {
    match dst.is_multicast() {
        true => Via::Multicast,
        false => Via::Unicast,
    }
}

/// Our address to answer a datagram from `from` that came to `dst` on an
/// interface with `addrs` (None when relayed): `dst` if unicast; for a
/// multicast, the interface's address of the client's scope sharing the
/// longest prefix with it (as the kernel's source selection would pick).
pub(super) fn source_for(
    dst: Ipv6Addr,
    from: Ipv6Addr,
    addrs: Option<&[Ipv6Addr]>,
) -> Option<Ipv6Addr> {
    if !dst.is_multicast() {
        return (!dst.is_unspecified()).then_some(dst);
    }
    let local = from.is_unicast_link_local();
    let shared = |a: &Ipv6Addr| (u128::from(*a) ^ u128::from(from)).leading_zeros();
    addrs?
        .iter()
        .filter(|a| a.is_unicast_link_local() == local && !a.is_loopback())
        .max_by_key(|a| shared(a))
        .copied()
}

/// A server state for tests: the embedded config's limits, `subnets`
/// (stored in `ipam`), `ifaces`, a socket on loopback; replies to clients
/// go to `client_port`.
#[cfg(test)]
pub(super) async fn for_tests(
    ipam: Arc<Ipam>,
    subnets: Vec<Subnet6Config>,
    ifaces: Vec<Iface6>,
    client_port: u16,
) -> State6 {
    let cfg = crate::config::Config::embedded().unwrap();
    let (socket, _) = super::socket::bind("[::1]:0".parse().unwrap(), &[]).unwrap();
    let duid = ipam.server_duid().unwrap();
    ipam.apply_config6(&subnets).unwrap();
    State6 {
        stats: Stats::new(16),
        isolation: IsolationSet::in_memory(),
        limits: ArcSwap::from_pointee(Limits6::new(&cfg.dhcp6, &cfg.dhcp)),
        ifaces: ArcSwap::from_pointee(ifaces),
        ctx: Ctx6::new(&cfg.dhcp6, duid),
        ipam,
        socket,
        outbox: Outbox::new(1),
        server_port: client_port.wrapping_add(1),
        client_port,
        deadline: Duration::from_secs(5),
        inflight: Mutex::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply goes from the address the datagram came to; a multicast
    /// one from the interface's address nearest the client, of its scope.
    #[test]
    fn replies_go_from_the_address_the_client_or_relay_used() {
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let addrs = [ip("fd00:77::1"), ip("fe80::1"), ip("fd00:79::1")];
        let (group, client) = (ip("ff02::1:2"), ip("fe80::9"));
        assert_eq!(
            source_for(ip("fd00:79::1"), ip("fd00:79::2"), None),
            Some(ip("fd00:79::1"))
        );
        assert_eq!(source_for(group, client, Some(&addrs)), Some(ip("fe80::1")));
        assert_eq!(
            source_for(group, ip("fd00:77::9"), Some(&addrs)),
            Some(ip("fd00:77::1"))
        );
        assert_eq!(
            source_for(group, ip("fd00:79::2"), Some(&addrs)),
            Some(ip("fd00:79::1"))
        );
        assert_eq!(source_for(group, client, Some(&addrs[..1])), None);
        assert_eq!(source_for(Ipv6Addr::UNSPECIFIED, client, None), None);
    }
}
