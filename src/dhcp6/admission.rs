//! Admission: every check a DHCPv6 datagram meets before it costs work, in
//! the order it meets them, cheapest first. Adding a limit is adding a step.
//!
//! On arrival, in the receive loop, never blocking ([`admit`]); a
//! datagram refused before step 5 costs no allocation but its client key
//! (for its client's counters):
//! 1. [`for_this_socket`]: a client message (not relayed) must arrive on
//!    one of `[dhcp6] interfaces` (not counted otherwise);
//! 2. [`peek`]: framing through the relay levels to the DUID and option 79,
//!    no allocation (malformed: dropped, counted by reason, charged to nobody);
//! 3. [`not_isolated`] by `duid:HEX`, then by option 79's MAC;
//! 4. [`own_quota`]: the DUID's own rate, by the borrowed DUID (a flooding
//!    DUID stops here);
//! 5. [`framing`]: the whole decode (malformed: counted by reason);
//! 6. [`trusted_relay`]: a Relay-Forw only from a configured relay, whose
//!    link-address names the subnet; a direct client's subnet is its
//!    interface's;
//! 7. [`this_node`]: in a cluster, the live node the client's `duid:HEX`
//!    hashes to answers it; the others drop it (`other_node`);
//! 8. [`global_quota`]: `[dhcp] global_rate`, spent only by what got here;
//! 9. [`enqueue`]: the bounded queue.
//!
//! In the worker: [`in_time`] (the deadline), and [`new_lease`] (not while
//! the memory governor sheds load) before the IPAM hands out anything.

use std::net::{IpAddr, SocketAddrV6};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::error::Malformed6;
use super::handler::Via;
use super::inbound::{self, peek, Peek6};
use super::limits::Who;
use super::link;
use super::relay::RelayChain;
use super::request::Request6;
use super::socket::Iface6;
use super::state::{source_for, via_of, Job6, State6};
use crate::client::ClientKey;
use crate::config::Subnet6Config;
use crate::stats::{DhcpKind, DhcpOutcome, DropReason};

/// Why a datagram goes no further; [`refuse`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not this server's to answer: not counted.
    NotMine,
    /// Counted by its reason, and as a malformed packet.
    Malformed(Malformed6),
    /// Counted for its client only.
    Isolated,
    /// Counted for its client and as a dropped packet of its kind.
    Drop(DropReason),
}

pub(super) type Step<T = ()> = Result<T, Refused>;

/// A datagram as received at `now`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival<'a> {
    pub buf: &'a [u8],
    pub from: SocketAddrV6,
    pub ifindex: u32,
    pub dst: std::net::Ipv6Addr,
    pub now: Instant,
}

/// Runs the arrival steps and queues the job, or counts why not. Never blocks.
pub(super) fn admit(s: &State6, a: Arrival<'_>, queue: &mpsc::Sender<Job6>) {
    let relayed = a.buf.first() == Some(&12);
    let Ok(iface) = for_this_socket(s, &a, relayed) else {
        return;
    };
    let p = match peek(a.buf) {
        Ok(p) => p,
        Err(m) => return refuse_anonymous(s, m, relayed),
    };
    let kind = kind_of(p.msg_type);
    let key = client_key(&p, &a);
    if let Err(r) = identified(s, &p) {
        return refuse_at(s, &key, kind, relayed, r, a.now);
    }
    // Every arrival past isolation, dropped or not: the rates show what a
    // client sends.
    s.stats.clients.request(&key, a.now);
    if let Err(r) = own_quota(s, &p, &a) {
        return refuse_at(s, &key, kind, relayed, r, a.now);
    }
    let (chain, req) = match framing(a.buf) {
        Ok(decoded) => decoded,
        Err(r) => return refuse_at(s, &key, DhcpKind::Malformed, relayed, r, a.now),
    };
    let subnets = s.ipam.subnets6_shared();
    let addrs = iface.as_ref().map(|(all, i)| all[*i].addrs.as_slice());
    let subnet = match trusted_relay(&subnets, &chain, &a, addrs) {
        Ok(i) => i,
        Err(r) => return refuse_at(s, &key, kind, relayed, r, a.now),
    };
    if let Err(r) = this_node(s, &key) {
        return refuse_at(s, &key, kind, relayed, r, a.now);
    }
    if let Err(r) = global_quota(s) {
        return refuse_at(s, &key, kind, relayed, r, a.now);
    }
    let via = match chain.is_relayed() {
        true => Via::Relayed,
        false => via_of(a.dst),
    };
    let src = source_for(a.dst, *a.from.ip(), addrs);
    let job = Job6 {
        chain,
        req,
        key,
        kind,
        via,
        subnets,
        subnet,
        from: a.from,
        src,
        at: a.now,
    };
    enqueue(s, job, queue);
}

/// A client message (not relayed) must come in on one of our interfaces,
/// whose addresses pick its subnet: the interfaces and that one's index
/// (None for a relayed message).
fn for_this_socket(s: &State6, a: &Arrival<'_>, relayed: bool) -> Step<Option<(Ifaces, usize)>> {
    if relayed {
        return Ok(None);
    }
    let ifaces = s.ifaces.load_full();
    let at = ifaces.iter().position(|i| i.index == a.ifindex);
    at.map(|i| Some((ifaces, i))).ok_or(Refused::NotMine)
}

type Ifaces = Arc<Vec<Iface6>>;

/// The DUID's key; without one (an Information-Request may omit it), the
/// datagram's source.
fn client_key(p: &Peek6<'_>, a: &Arrival<'_>) -> ClientKey {
    p.duid
        .and_then(ClientKey::duid)
        .unwrap_or(ClientKey::Ip(IpAddr::V6(*a.from.ip())))
}

/// Isolation by the DUID, then by the relay's option 79 (the client's MAC),
/// before anything past them is decoded. Nothing to look up (and no key
/// to build) while no client is isolated.
fn identified(s: &State6, p: &Peek6<'_>) -> Step {
    if s.isolation.is_empty() {
        return Ok(());
    }
    if let Some(duid) = p.duid.and_then(ClientKey::duid) {
        not_isolated(s, &duid)?;
    }
    // Option 79 as `type(2) address`: Ethernet (type 1) gives a MAC; no allocation.
    let mac = p.lladdr.and_then(|v| match v {
        [0, 1, mac @ ..] => <[u8; 6]>::try_from(mac).ok(),
        _ => None,
    });
    if let Some(mac) = mac {
        not_isolated(s, &ClientKey::Mac(mac))?;
    }
    Ok(())
}

fn not_isolated(s: &State6, key: &ClientKey) -> Step {
    match s.isolation.is_isolated(key) {
        true => Err(Refused::Isolated),
        false => Ok(()),
    }
}

/// The whole datagram decoded: relay levels and the client message.
fn framing(buf: &[u8]) -> Step<(RelayChain, Request6)> {
    inbound::decode(buf).map_err(Refused::Malformed)
}

/// A relayed message is trusted only from a configured relay, and its
/// innermost link-address picks the subnet; a direct client's subnet is the
/// one holding an address of its interface (None: no subnet serves it).
fn trusted_relay(
    subnets: &[Subnet6Config],
    chain: &RelayChain,
    a: &Arrival<'_>,
    iface_addrs: Option<&[std::net::Ipv6Addr]>,
) -> Step<Option<usize>> {
    let found = match iface_addrs {
        None => Some(link::for_relay(subnets, chain, *a.from.ip()).map_err(Refused::Drop)?),
        Some(addrs) => link::for_interface(subnets, addrs),
    };
    Ok(found.and_then(|f| subnets.iter().position(|s| s.id == f.id)))
}

/// Cluster mode: every node hears the client, the one its key hashes to
/// among the live nodes (the same rendezvous as v4's) answers it; always
/// this one alone.
fn this_node(s: &State6, key: &ClientKey) -> Step {
    match s.ipam.answers(key) {
        true => Ok(()),
        false => Err(Refused::Drop(DropReason::OtherNode)),
    }
}

/// The client's own quota: by its DUID as the datagram holds it, or
/// without one by its source.
fn own_quota(s: &State6, p: &Peek6<'_>, a: &Arrival<'_>) -> Step {
    let who = match p.duid {
        Some(duid) => Who::Duid(duid),
        None => Who::Source(*a.from.ip()),
    };
    s.limits.load().check_own(who).map_err(Refused::Drop)
}

/// The global quota, after the client's own (a client over its own quota
/// does not spend it) and after the relay check (nor does an untrusted relay).
fn global_quota(s: &State6) -> Step {
    s.limits.load().check_global().map_err(Refused::Drop)
}

/// Queues `job`; a full queue drops it.
fn enqueue(s: &State6, job: Job6, queue: &mpsc::Sender<Job6>) {
    s.stats.dhcp.queue_depth.fetch_add(1, Relaxed);
    if let Err(e) = queue.try_send(job) {
        s.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
        if let mpsc::error::TrySendError::Full(job) = e {
            refuse(s, &job, Refused::Drop(DropReason::QueueFull));
        }
    }
}

/// In the worker: a message that waited past `dhcp.deadline` is not answered.
pub(super) fn in_time(s: &State6, job: &Job6) -> Step {
    match job.at.elapsed() > s.deadline {
        true => Err(Refused::Drop(DropReason::Deadline)),
        false => Ok(()),
    }
}

/// In the worker, before the IPAM hands out an address or prefix: not
/// while the memory governor sheds load (renewals and releases still go).
pub(super) fn new_lease(s: &State6) -> Step {
    match s.stats.shedding() {
        true => Err(Refused::Drop(DropReason::Overload)),
        false => Ok(()),
    }
}

/// Counts a refused message for its client.
pub(super) fn refuse(s: &State6, job: &Job6, why: Refused) {
    let relayed = job.chain.is_relayed();
    refuse_at(s, &job.key, job.kind, relayed, why, Instant::now());
}

/// Counts a refused datagram for its client (and as relayed if it came in
/// a Relay-Forw).
fn refuse_at(
    s: &State6,
    key: &ClientKey,
    kind: DhcpKind,
    relayed: bool,
    why: Refused,
    now: Instant,
) {
    let (reason, counted_as) = match why {
        Refused::NotMine => return,
        Refused::Malformed(m) => {
            s.stats.dhcp.malformed6(m.name());
            (m.reason(), Some(DhcpKind::Malformed))
        }
        Refused::Isolated => (DropReason::Isolated, None),
        Refused::Drop(reason) => (reason, Some(kind)),
    };
    s.stats.drop_for(key, reason, now);
    if let Some(kind) = counted_as {
        s.stats.dhcp.packet_via(kind, DhcpOutcome::Dropped, relayed);
    }
}

/// A datagram refused before its client is known.
fn refuse_anonymous(s: &State6, m: Malformed6, relayed: bool) {
    s.stats.dhcp.malformed6(m.name());
    s.stats.drop_anonymous(m.reason());
    let (k, o) = (DhcpKind::Malformed, DhcpOutcome::Dropped);
    s.stats.dhcp.packet_via(k, o, relayed);
}

/// The `type` label of a client message type.
pub(super) fn kind_of(msg_type: u8) -> DhcpKind {
    match msg_type {
        1 => DhcpKind::Solicit,
        3 => DhcpKind::Request,
        4 => DhcpKind::Confirm,
        5 => DhcpKind::Renew,
        6 => DhcpKind::Rebind,
        8 => DhcpKind::Release,
        9 => DhcpKind::Decline,
        11 => DhcpKind::InformationRequest,
        _ => DhcpKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp6::relay::{forward, RelayLevel};
    use crate::dhcp6::request::LinkLayer;
    use crate::dhcp6::socket::iface;
    use crate::dhcp6::state::for_tests;
    use crate::dhcp6::wire::put;
    use crate::ipam::Ipam;
    use std::net::Ipv6Addr;

    const DUID: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 0x61];
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x79];

    fn solicit() -> Vec<u8> {
        let mut m = vec![1, 0, 0, 1];
        put(&mut m, 1, &DUID);
        put(&mut m, 8, &[0, 0]);
        m
    }

    /// `inner` from relay `link` (option 79: [`MAC`]).
    fn relayed(link: &str, inner: &[u8]) -> Vec<u8> {
        let mut addr = vec![0, 1];
        addr.extend_from_slice(&MAC);
        let chain = RelayChain {
            levels: vec![RelayLevel {
                hop_count: 0,
                link: link.parse().unwrap(),
                peer: "fe80::5".parse().unwrap(),
                interface_id: Some(b"p1".to_vec().into()),
                lladdr: Some(LinkLayer::parse(&addr).unwrap()),
            }],
        };
        forward(&chain, inner)
    }

    fn subnet() -> Subnet6Config {
        Subnet6Config {
            relays: vec!["fd00:77::2".parse().unwrap()],
            ..Subnet6Config::new("lab6", "fd00:77::/64".parse().unwrap())
        }
    }

    /// Each step refuses what it is for, in order, and counts it as such.
    #[tokio::test]
    async fn every_step_refuses_and_counts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ipam =
            Ipam::open(dir.path(), Default::default(), crate::stats::Stats::new(16)).unwrap();
        let mut lo = iface("lo").unwrap();
        lo.addrs = vec!["fd00:77::1".parse().unwrap()];
        let index = lo.index;
        let s = for_tests(ipam, vec![subnet()], vec![lo], 9).await;
        let (tx, mut rx) = mpsc::channel(1);
        let at = |buf: &[u8], from: &str, ifindex| {
            let from = SocketAddrV6::new(from.parse::<Ipv6Addr>().unwrap(), 546, 0, 0);
            let a = Arrival {
                buf,
                from,
                ifindex,
                dst: "ff02::1:2".parse().unwrap(),
                now: Instant::now(),
            };
            admit(&s, a, &tx);
        };
        let drops = |r| s.stats.drops(r);
        // Framed well (peek reads it), but an IA_NA too short to decode.
        let mut broken = solicit();
        put(&mut broken, 3, &[0, 0, 0, 1, 0]);
        let duid = ClientKey::duid(&DUID).unwrap();

        // Not on one of our interfaces: not ours, not counted.
        at(&solicit(), "fe80::5", index + 1000);
        assert_eq!(s.stats.dhcp.total(), 0);
        // Isolated by its DUID: refused before the broken IA is read.
        s.isolation.isolate(&duid, "test").unwrap();
        at(&broken, "fe80::5", index);
        assert_eq!(drops(DropReason::Isolated), 1);
        assert!(s.stats.dhcp.malformed6_counts().is_empty());
        s.isolation.release(&duid, "test").unwrap();
        // Not isolated: the decode refuses it, counted by its reason.
        at(&broken, "fe80::5", index);
        assert_eq!(s.stats.dhcp.malformed6_counts(), vec![("bad_length", 1)]);
        assert_eq!(drops(DropReason::Malformed), 1);
        // Relayed: isolated by option 79's MAC; then an untrusted relay.
        s.isolation.isolate(&ClientKey::Mac(MAC), "test").unwrap();
        at(&relayed("fd00:77::2", &solicit()), "fd00:77::2", 0);
        assert_eq!(drops(DropReason::Isolated), 2);
        s.isolation.release(&ClientKey::Mac(MAC), "test").unwrap();
        at(&relayed("fd00:77::9", &solicit()), "fd00:77::9", 0);
        assert_eq!(drops(DropReason::UntrustedRelay), 1);
        // Trusted: queued, with its subnet; the next finds the queue full.
        at(&relayed("fd00:77::2", &solicit()), "fd00:77::2", 0);
        at(&solicit(), "fe80::5", index);
        assert_eq!(drops(DropReason::QueueFull), 1);
        let job = rx.try_recv().unwrap();
        assert_eq!(
            (job.via, job.key, job.subnet),
            (Via::Relayed, duid, Some(0))
        );
        assert_eq!(
            job.chain.port(),
            Some([&[0xfd, 0, 0, 0x77], &[0; 11][..], &[2, b'p', b'1']].concat())
        );
    }
}
