//! DHCP clients that lie about who they are or where they are, attacking
//! from other network namespaces with crafted frames on real sockets:
//! forged relays, an option 61 naming an isolated MAC, a thousand spoofed
//! MACs behind one relay port (by DISCOVER and by INIT-REBOOT), and a
//! client's own option 82.
//!
//! ```text
//!  ns cli: vc<t> 10.90.0.50 ──veth── vs<t> 10.90.0.1   ns srv   vr<t> 10.92.0.1 ──veth── vq<t>  ns rel
//!                                    vpcbox :67, interfaces = [vs<t>]                10.92.0.2, 10.92.0.66 (attacker)
//!                                                                                     10.91.0.1 (the relay, giaddr)
//! ```
//!
//! The server runs in-process inside `srv` (its stats and IPAM are read
//! directly); every packet reaches it over a veth from another namespace.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
use dhcproto::v4::{self, DhcpOption as O, MessageType as M, OptionCode};
use vpcbox::client::ClientKey;
use vpcbox::ipam::{LeaseFilter, LeaseState};
use vpcbox::stats::{DhcpKind, DhcpOutcome, DropReason};

use crate::dhcp_support::{decode, mac, msg_type, packet, topo as relay_topo, InProcess, Topo};
use crate::netns::{require_root, Netns};

/// The configured relay: giaddr, and the source of its datagrams.
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);
/// An attacker on the relay's segment: not a configured relay.
const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 66);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 1);
const SERVER_ID: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// The relayed subnet's pool: 100 addresses.
const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 91, 1, 1), Ipv4Addr::new(10, 91, 1, 100));
const CAP: u32 = 10;

/// The shared topology, plus a client address, an attacker beside the
/// relay (10.92.0.66) and a second relay address (10.93.0.1).
fn topo() -> Topo {
    let t = relay_topo();
    t.srv
        .ip(&["route", "add", "10.93.0.0/16", "via", "10.92.0.2"]);
    t.cli
        .ip(&["addr", "add", "10.90.0.50/24", "dev", &t.cli_if]);
    t.rel
        .ip(&["addr", "add", "10.92.0.66/24", "dev", &t.rel_if]);
    t.rel.ip(&["addr", "add", "10.93.0.1/32", "dev", &t.rel_if]);
    t
}

/// The server and its data directory (removed after the server stops:
/// fields drop in order).
struct Server {
    s: InProcess,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = InProcess;
    fn deref(&self) -> &InProcess {
        &self.s
    }
}

fn start(t: &Topo, cap: u32) -> Server {
    let config = format!(
        r#"[storage]
path = "./unused"
[dhcp]
listen = "0.0.0.0:67"
interfaces = ["{srv_if}"]
server_id = "{SERVER_ID}"
max_leases_per_port = {cap}
[gateway]
enabled = false
[[subnet]]
id = "direct"
cidr = "10.90.0.0/24"
pools = ["10.90.0.100-10.90.0.199"]
lease_time = "1h"
[[subnet]]
id = "relayed"
cidr = "10.91.0.0/16"
pools = ["{}-{}"]
lease_time = "1h"
relays = ["{RELAY}"]
[[subnet]]
id = "other"
cidr = "10.93.0.0/16"
pools = ["10.93.1.1-10.93.1.100"]
lease_time = "1h"
relays = ["10.93.0.1"]
"#,
        POOL.0,
        POOL.1,
        srv_if = t.srv_if
    );
    let dir = tempfile::tempdir().expect("tempdir");
    Server {
        s: InProcess::start_in(&config, dir.path(), Some(&t.srv)),
        _dir: dir,
    }
}

/// Option 82 with circuit-id `circuit`.
fn circuit(circuit: &[u8]) -> O {
    let mut info = RelayAgentInformation::default();
    info.insert(RelayInfo::AgentCircuitId(circuit.to_vec()));
    O::RelayAgentInformation(info)
}

/// A socket bound to `at` with room for a burst of replies.
fn socket(at: SocketAddr) -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.set_recv_buffer_size(4 << 20).unwrap();
    s.bind(&at.into()).unwrap();
    s.into()
}

/// Sends `packets` from `from` to the server's port 67 at `to`, about
/// 2,000 a second, and returns the replies that reach `listen` until it has
/// been quiet for 700 ms. Runs in `ns`.
fn exchange(
    ns: &Netns,
    from: SocketAddr,
    listen: Option<SocketAddr>,
    to: Ipv4Addr,
    packets: Vec<Vec<u8>>,
) -> Vec<v4::Message> {
    ns.thread(move || {
        let tx = socket(from);
        let rx = match listen {
            Some(l) if l != from => socket(l),
            _ => tx.try_clone().unwrap(),
        };
        for (i, p) in packets.iter().enumerate() {
            tx.send_to(p, (to, 67)).unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        rx.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match rx.recv_from(&mut buf) {
                Ok((n, _)) => out.push(decode(&buf[..n])),
                Err(_) => break,
            }
        }
        out
    })
    .join()
    .expect("client thread")
}

fn relay_addr() -> SocketAddr {
    SocketAddr::from((RELAY, 67))
}

fn of_type(replies: &[v4::Message], t: M) -> Vec<&v4::Message> {
    replies.iter().filter(|m| msg_type(m) == Some(t)).collect()
}

fn bound(server: &Server, subnet: &str) -> usize {
    server
        .ipam
        .leases(&LeaseFilter {
            subnet: Some(subnet.into()),
            state: Some(LeaseState::Bound),
            ..Default::default()
        })
        .len()
}

/// A SELECTING REQUEST for the address `offer` made.
fn select(offer: &v4::Message, edit: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
    let chaddr: [u8; 6] = offer.chaddr()[..6].try_into().unwrap();
    packet(M::Request, chaddr, offer.giaddr(), |m| {
        m.opts_mut().insert(O::ServerIdentifier(SERVER_ID));
        m.opts_mut().insert(O::RequestedIpAddress(offer.yiaddr()));
        edit(m);
    })
}

/// Relayed packets are trusted only from a configured relay: a forged
/// giaddr naming the relay (from a host that is not it), a giaddr merely
/// inside the subnet's CIDR, another subnet's relay named from a rogue
/// source: no OFFER, no lease, not even by a SELECTING REQUEST; each one
/// counted. The real relay is served.
#[test]
fn relayed_packets_are_trusted_only_from_configured_relays() {
    if !require_root("relayed_packets_are_trusted_only_from_configured_relays") {
        return;
    }
    let t = topo();
    let server = start(&t, CAP);
    let rogue = SocketAddr::from((ROGUE, 0));
    let forged = vec![
        packet(M::Discover, mac(1), RELAY, |_| {}),
        packet(M::Discover, mac(2), Ipv4Addr::new(10, 93, 0, 1), |_| {}),
        packet(M::Request, mac(3), RELAY, |m| {
            m.opts_mut().insert(O::ServerIdentifier(SERVER_ID));
            m.opts_mut().insert(O::RequestedIpAddress(POOL.0));
        }),
    ];
    // Replies would go to giaddr: listen there too.
    let got = exchange(&t.rel, rogue, Some(relay_addr()), SERVER, forged);
    assert!(got.is_empty(), "replies to forged relays: {got:?}");
    // From the relay's own address, a giaddr only inside the CIDR.
    let inside = Ipv4Addr::new(10, 91, 5, 5);
    let got = exchange(
        &t.rel,
        relay_addr(),
        None,
        SERVER,
        vec![packet(M::Discover, mac(4), inside, |_| {})],
    );
    assert!(got.is_empty(), "{got:?}");
    let stats = &server.shared.stats;
    assert_eq!(stats.drops(DropReason::UntrustedRelay), 4);
    assert_eq!(
        stats.dhcp.packets(DhcpKind::Discover, DhcpOutcome::Offer),
        0
    );
    assert_eq!(bound(&server, "relayed") + bound(&server, "other"), 0);
    for n in 1..=4 {
        assert!(server.ipam.lease_of(&ClientKey::Mac(mac(n))).is_none());
    }
    // The relay itself is served.
    let got = exchange(
        &t.rel,
        relay_addr(),
        None,
        SERVER,
        vec![packet(M::Discover, mac(5), RELAY, |_| {})],
    );
    assert_eq!(of_type(&got, M::Offer).len(), 1, "{got:?}");
}

/// Isolating `mac:X` cuts off a client whose option 61 (type 1) names X
/// whatever its chaddr, and one whose chaddr is X whatever its option 61.
#[test]
fn isolation_applies_to_the_option_61_mac_and_to_chaddr() {
    if !require_root("isolation_applies_to_the_option_61_mac_and_to_chaddr") {
        return;
    }
    let t = topo();
    let server = start(&t, CAP);
    let x = mac(66);
    server
        .shared
        .isolation
        .isolate(&ClientKey::Mac(x), "test")
        .unwrap();
    let mut id61 = vec![1];
    id61.extend_from_slice(&x);
    let cut_off = vec![
        packet(M::Discover, mac(67), RELAY, |m| {
            m.opts_mut().insert(O::ClientIdentifier(id61.clone()));
        }),
        packet(M::Discover, x, RELAY, |m| {
            m.opts_mut()
                .insert(O::ClientIdentifier(vec![0xff, 1, 2, 3, 4]));
        }),
    ];
    let got = exchange(&t.rel, relay_addr(), None, SERVER, cut_off);
    assert!(got.is_empty(), "{got:?}");
    let stats = &server.shared.stats;
    assert_eq!(stats.drops(DropReason::Isolated), 2);
    assert!(server.ipam.lease_of(&ClientKey::Mac(x)).is_none());
    // The same chaddr without the isolated option 61 is served.
    let got = exchange(
        &t.rel,
        relay_addr(),
        None,
        SERVER,
        vec![packet(M::Discover, mac(67), RELAY, |_| {})],
    );
    assert_eq!(of_type(&got, M::Offer).len(), 1, "{got:?}");
}

/// 1,000 spoofed MACs behind one relay port (same giaddr and circuit-id)
/// doing DISCOVER then REQUEST get at most the port's cap of a 100-address
/// pool; clients on 50 other ports are all served afterwards, and the
/// attacker's bound leases stay bound.
#[test]
fn a_thousand_macs_behind_one_port_get_at_most_the_cap_by_discover() {
    if !require_root("a_thousand_macs_behind_one_port_get_at_most_the_cap_by_discover") {
        return;
    }
    let t = topo();
    let server = start(&t, CAP);
    let evil = |m: &mut v4::Message| {
        m.opts_mut().insert(circuit(b"Gi1/0/7"));
    };
    let discovers = (0..1000)
        .map(|i| packet(M::Discover, mac(10_000 + i), RELAY, evil))
        .collect();
    let got = exchange(&t.rel, relay_addr(), None, SERVER, discovers);
    let offers = of_type(&got, M::Offer);
    let requests = offers.iter().map(|o| select(o, evil)).collect();
    let acks = exchange(&t.rel, relay_addr(), None, SERVER, requests);
    let taken = bound(&server, "relayed");
    eprintln!(
        "attacker: {} offers, {} acks, {taken} of 100 addresses bound",
        offers.len(),
        of_type(&acks, M::Ack).len()
    );
    assert!(
        taken <= CAP as usize,
        "{taken} addresses taken behind one port"
    );
    assert_eq!(taken, CAP as usize, "the port's own cap is served");
    let stats = &server.shared.stats;
    assert!(stats.drops(DropReason::PortCap) >= 900);
    let events = server.shared.events.recent(100);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("circuit-id 'Gi1/0/7'")),
        "the dashboard's events name the port: {events:?}"
    );
    // Many other ports, one client each: all served.
    let others: Vec<_> = (0..50u32)
        .map(|i| {
            packet(M::Discover, mac(20_000 + i), RELAY, |m| {
                m.opts_mut().insert(circuit(format!("port-{i}").as_bytes()));
            })
        })
        .collect();
    let got = exchange(&t.rel, relay_addr(), None, SERVER, others);
    let offers = of_type(&got, M::Offer);
    assert_eq!(offers.len(), 50, "every other port is offered");
    let requests = offers
        .iter()
        .map(|o| {
            let n = u32::from_be_bytes(o.chaddr()[2..6].try_into().unwrap()) - 20_000;
            select(o, |m| {
                m.opts_mut().insert(circuit(format!("port-{n}").as_bytes()));
            })
        })
        .collect();
    let acks = exchange(&t.rel, relay_addr(), None, SERVER, requests);
    assert_eq!(of_type(&acks, M::Ack).len(), 50);
    assert_eq!(bound(&server, "relayed"), taken + 50);
}

/// A relay that inserts no circuit-id cannot tell its clients apart: they
/// belong to no port and are not capped (one cap over them all would let
/// ten spoofed MACs starve the whole relay).
#[test]
fn a_relay_without_circuit_ids_is_not_port_capped() {
    if !require_root("a_relay_without_circuit_ids_is_not_port_capped") {
        return;
    }
    let t = topo();
    let server = start(&t, CAP);
    let discovers = (0..50)
        .map(|i| packet(M::Discover, mac(40_000 + i), RELAY, |_| {}))
        .collect();
    let got = exchange(&t.rel, relay_addr(), None, SERVER, discovers);
    assert_eq!(of_type(&got, M::Offer).len(), 50);
    assert_eq!(server.shared.stats.drops(DropReason::PortCap), 0);
}

/// The same attack without DISCOVER: 1,000 spoofed MACs behind one port
/// each send an INIT-REBOOT REQUEST naming a free address. A client the
/// server has no record of is NAKed (RFC 2131 4.3.2), so none binds.
#[test]
fn a_thousand_macs_behind_one_port_get_nothing_by_init_reboot() {
    if !require_root("a_thousand_macs_behind_one_port_get_nothing_by_init_reboot") {
        return;
    }
    let t = topo();
    let server = start(&t, CAP);
    let pool: Vec<Ipv4Addr> = (u32::from(POOL.0)..=u32::from(POOL.1))
        .map(Ipv4Addr::from)
        .collect();
    let reboots = (0..1000u32)
        .map(|i| {
            packet(M::Request, mac(30_000 + i), RELAY, |m| {
                m.opts_mut()
                    .insert(O::RequestedIpAddress(pool[i as usize % pool.len()]));
                m.opts_mut().insert(circuit(b"Gi1/0/7"));
            })
        })
        .collect();
    let got = exchange(&t.rel, relay_addr(), None, SERVER, reboots);
    let taken = bound(&server, "relayed");
    eprintln!(
        "attacker: {} acks, {} naks, {taken} of 100 addresses bound",
        of_type(&got, M::Ack).len(),
        of_type(&got, M::Nak).len()
    );
    assert_eq!(taken, 0);
    assert!(of_type(&got, M::Ack).is_empty());
    assert!(!of_type(&got, M::Nak).is_empty(), "NAKed, not ignored");
}

/// A directly attached client (giaddr 0) that puts its own option 82 in a
/// DISCOVER gets an OFFER without it: only a relay's option 82 is echoed.
#[test]
fn a_clients_own_option_82_is_not_echoed() {
    if !require_root("a_clients_own_option_82_is_not_echoed") {
        return;
    }
    let t = topo();
    let _server = start(&t, CAP);
    let p = packet(M::Discover, mac(99), Ipv4Addr::UNSPECIFIED, |m| {
        m.set_flags(v4::Flags::default().set_broadcast());
        m.opts_mut().insert(circuit(b"forged"));
    });
    let got = exchange(
        &t.cli,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)),
        None,
        Ipv4Addr::new(10, 90, 0, 1),
        vec![p],
    );
    let offers = of_type(&got, M::Offer);
    assert_eq!(offers.len(), 1, "{got:?} ({})", t.cli_if);
    assert!(offers[0]
        .opts()
        .get(OptionCode::RelayAgentInformation)
        .is_none());
}
