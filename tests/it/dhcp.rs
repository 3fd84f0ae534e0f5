//! The DHCP server in-process on a real IPAM, over loopback UDP: a relay
//! at 127.0.0.2 (giaddr) talks to the server at 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use dhcproto::v4::{DhcpOption as O, MessageType as M, OptionCode};
use vpcbox::client::ClientKey;
use vpcbox::stats::{DhcpKind, DhcpOutcome, DropReason};

use crate::dhcp_support::*;
use crate::support::free_port;

const RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(2);

fn config(port: u16, dhcp_extra: &str) -> String {
    format!(
        r#"[storage]
path = "./unused"
[dhcp]
listen = "127.0.0.1:{port}"
server_id = "10.0.0.1"
per_client_rate = "20/s"
per_client_burst = 20
{dhcp_extra}
[gateway]
enabled = false
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
lease_time = "1h"
relays = ["127.0.0.2"]
"#
    )
}

struct Rig {
    server: InProcess,
    relay: UdpSocket,
    to: SocketAddr,
}

fn rig(dhcp_extra: &str) -> Rig {
    let port = free_port();
    let server = InProcess::start(&config(port, dhcp_extra));
    // The "relay" listens where the server sends relayed replies: giaddr:server port.
    let relay = UdpSocket::bind((RELAY, port)).expect("bind relay");
    Rig {
        to: server.addrs[0],
        server,
        relay,
    }
}

impl Rig {
    fn send(&self, p: &[u8]) -> Option<dhcproto::v4::Message> {
        exchange(&self.relay, self.to, p, WAIT)
    }
    fn discover(&self, chaddr: [u8; 6]) -> Option<dhcproto::v4::Message> {
        self.send(&packet(M::Discover, chaddr, RELAY, |_| {}))
    }
}

#[test]
fn dora_renew_release_over_a_relay() {
    let r = rig("");
    let offer = r.discover(MAC).expect("offer");
    assert_eq!(msg_type(&offer), Some(M::Offer));
    let ip = offer.yiaddr();
    assert!(ip >= Ipv4Addr::new(10, 0, 0, 100) && ip <= Ipv4Addr::new(10, 0, 0, 199));
    let ack = r
        .send(&packet(M::Request, MAC, RELAY, |m| {
            m.opts_mut()
                .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
            m.opts_mut().insert(O::RequestedIpAddress(ip));
            m.opts_mut().insert(O::Hostname("web-1".into()));
        }))
        .expect("ack");
    assert_eq!((msg_type(&ack), ack.yiaddr()), (Some(M::Ack), ip));
    // Durable before the ACK, with the hostname.
    let lease = r.server.ipam.lookup(ip).expect("lease");
    assert_eq!(
        (lease.client, lease.hostname.as_deref()),
        (ClientKey::Mac(MAC), Some("web-1"))
    );
    // A DISCOVER from the holder: the same address, from memory.
    assert_eq!(r.discover(MAC).expect("offer").yiaddr(), ip);
    // Renewing (relayed: rebinding through the relay).
    let renew = r.send(&packet(M::Request, MAC, RELAY, |m| {
        m.set_ciaddr(ip);
    }));
    assert_eq!(
        renew.map(|m| (msg_type(&m), m.yiaddr())),
        Some((Some(M::Ack), ip))
    );
    // Release, then at once INIT-REBOOT: the REQUEST waits for the release
    // to be durable (not dropped as a duplicate), then gets the same address.
    r.relay
        .send_to(
            &packet(M::Release, MAC, RELAY, |m| {
                m.set_ciaddr(ip);
                m.opts_mut()
                    .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
            }),
            r.to,
        )
        .unwrap();
    let again = r.send(&packet(M::Request, MAC, RELAY, |m| {
        m.opts_mut().insert(O::RequestedIpAddress(ip));
    }));
    assert_eq!(
        again.map(|m| (msg_type(&m), m.yiaddr())),
        Some((Some(M::Ack), ip))
    );
    let s = &r.server.shared.stats;
    assert_eq!(s.dhcp.packets(DhcpKind::Release, DhcpOutcome::Silent), 1);
    assert_eq!(s.drops(DropReason::Duplicate), 0);
    // INIT-REBOOT for someone else's address: NAK.
    let nak = r.send(&packet(M::Request, mac(9), RELAY, |m| {
        m.opts_mut().insert(O::RequestedIpAddress(ip));
    }));
    assert_eq!(nak.map(|m| msg_type(&m)), Some(Some(M::Nak)));
    // Counted just after sending: poll.
    assert!(crate::support::eventually(WAIT, || s
        .dhcp
        .packets(DhcpKind::Request, DhcpOutcome::Ack)
        == 3
        && s.dhcp.packets(DhcpKind::Request, DhcpOutcome::Nak) == 1));
}

/// While a client's durable operation is in flight, a retransmission of
/// its packet is dropped as a duplicate (the answer is on its way), and a
/// different packet waits for the operation and is then answered; of two
/// waiting packets only the latest is kept.
#[test]
fn a_clients_packets_during_its_operation_coalesce_or_wait() {
    let r = rig("");
    let offer = r.discover(MAC).expect("offer");
    let ip = offer.yiaddr();
    let select = packet(M::Request, MAC, RELAY, |m| {
        m.opts_mut()
            .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        m.opts_mut().insert(O::RequestedIpAddress(ip));
    });
    let renew = || {
        packet(M::Request, MAC, RELAY, |m| {
            m.set_ciaddr(ip);
        })
    };
    let (first, last) = (renew(), renew());
    send_burst(
        &r.relay,
        r.to,
        &[select.clone(), select.clone(), first, last.clone()],
    );
    let mut buf = [0u8; 1500];
    r.relay.set_read_timeout(Some(WAIT)).unwrap();
    let mut acks = Vec::new();
    while let Ok((n, _)) = r.relay.recv_from(&mut buf) {
        let m = decode(&buf[..n]);
        assert_eq!((msg_type(&m), m.yiaddr()), (Some(M::Ack), ip));
        acks.push(m.xid());
        r.relay
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    // One ACK for the selecting REQUEST, one for the latest renewal.
    assert_eq!(acks, [decode(&select).xid(), decode(&last).xid()]);
    let s = &r.server.shared.stats;
    assert_eq!(s.drops(DropReason::Duplicate), 2);
}

/// Each malformed datagram is dropped and counted; the server still answers.
#[test]
fn malformed_packets_are_dropped_and_counted() {
    let r = rig("");
    let good = packet(M::Discover, MAC, RELAY, |_| {});
    let end = good.len() - 1;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..100].to_vec()),
        ("header only", good[..240].to_vec()),
        ("oversize", {
            let mut v = good.clone();
            v.resize(1600, 0);
            v
        }),
    ];
    let mut edit = |name: &'static str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        cases.push((name, v));
    };
    edit("bad hlen", &|v| v[2] = 17);
    edit("op=BOOTREPLY", &|v| v[0] = 2);
    edit("bad cookie", &|v| v[236] = 0);
    edit("option past end", &|v| {
        v.truncate(end);
        v.extend_from_slice(&[12, 200, b'x']);
    });
    edit("no end option", &|v| {
        v.truncate(end);
    });
    edit("overload into garbage", &|v| {
        v.truncate(end);
        v.extend_from_slice(&[52, 1, 1, 255]);
        v[108] = 12;
        v[109] = 250; // option in `file` runs past its 128 bytes
    });
    edit("no message type", &|v| {
        v.truncate(240);
        v.push(255);
    });
    let n = cases.len() as u64;
    for (_, c) in &cases {
        r.relay.send_to(c, r.to).unwrap();
    }
    let stats = &r.server.shared.stats;
    let all = crate::support::eventually(WAIT, || stats.drops(DropReason::Malformed) >= n);
    assert!(all, "counted {} of {n}", stats.drops(DropReason::Malformed));
    assert_eq!(
        stats
            .dhcp
            .packets(DhcpKind::Malformed, DhcpOutcome::Dropped),
        n
    );
    assert_eq!(
        msg_type(&r.discover(MAC).expect("still answering")),
        Some(M::Offer)
    );
}

/// Receives replies on `sock` until `n` came or none comes for a while.
fn replies(sock: &UdpSocket, n: usize) -> Vec<dhcproto::v4::Message> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while out.len() < n {
        let Ok((len, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        out.push(decode(&buf[..len]));
    }
    out
}

/// A burst well over the coalescing rate (one sendmmsg call, 120
/// datagrams) puts the receive loop in its busy mode: datagrams taken in
/// batches, replies sent in batches (the ACKs after their group commit).
/// Malformed and oversize datagrams in the middle of a batch are each
/// dropped and counted, every good one is answered, every reply counted
/// once, and the server still answers the next DISCOVER.
#[test]
fn bursts_are_answered_in_batches_and_every_packet_counted() {
    let r = rig("");
    socket2::SockRef::from(&r.relay)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    let good = |i: u32| packet(M::Discover, mac(i), RELAY, |_| {});
    let bad = |i: u32| {
        let mut v = good(1000 + i);
        match i % 3 {
            0 => v.truncate(100),
            1 => v.resize(1600, 0),
            _ => v[236] = 0, // magic cookie
        }
        v
    };
    let mut burst = Vec::new();
    for i in 0..30 {
        burst.extend([good(3 * i), good(3 * i + 1), bad(i), good(3 * i + 2)]);
    }
    send_burst(&r.relay, r.to, &burst);
    let offers = replies(&r.relay, 90);
    assert_eq!(offers.len(), 90);
    let stats = &r.server.shared.stats;
    assert_eq!(stats.drops(DropReason::Malformed), 30);
    let requests: Vec<_> = offers
        .iter()
        .map(|o| {
            assert_eq!(msg_type(o), Some(M::Offer));
            let chaddr: [u8; 6] = o.chaddr()[..6].try_into().unwrap();
            packet(M::Request, chaddr, RELAY, |m| {
                m.opts_mut()
                    .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
                m.opts_mut().insert(O::RequestedIpAddress(o.yiaddr()));
            })
        })
        .collect();
    send_burst(&r.relay, r.to, &requests);
    let acks = replies(&r.relay, 90);
    assert_eq!(acks.len(), 90);
    assert!(acks.iter().all(|a| msg_type(a) == Some(M::Ack)));
    let d = &stats.dhcp;
    assert_eq!(d.packets(DhcpKind::Discover, DhcpOutcome::Offer), 90);
    // A reply is counted just after it is sent.
    let acked = || d.packets(DhcpKind::Request, DhcpOutcome::Ack) == 90;
    assert!(crate::support::eventually(WAIT, acked));
    assert_eq!(d.packets(DhcpKind::Malformed, DhcpOutcome::Dropped), 30);
    assert_eq!(
        msg_type(&r.discover(mac(5000)).expect("still answering")),
        Some(M::Offer)
    );
}

#[test]
fn isolated_and_flooding_clients_are_cut_off_others_served() {
    let r = rig("");
    let bad = mac(666);
    r.server
        .shared
        .isolation
        .isolate(&ClientKey::Mac(bad), "test")
        .unwrap();
    assert!(r.discover(bad).is_none());
    let stats = &r.server.shared.stats;
    assert_eq!(stats.drops(DropReason::Isolated), 1);
    // A flood from one MAC: 200 DISCOVERs at once, burst is 20.
    let flooder = mac(7);
    for _ in 0..200 {
        r.relay
            .send_to(&packet(M::Discover, flooder, RELAY, |_| {}), r.to)
            .unwrap();
    }
    assert!(crate::support::eventually(WAIT, || stats
        .drops(DropReason::RateLimited)
        >= 150));
    assert_eq!(
        msg_type(&r.discover(mac(8)).expect("others served")),
        Some(M::Offer)
    );
    // Nothing was written for the flooder beyond one offer (offers are not durable).
    assert!(r.server.ipam.lease_of(&ClientKey::Mac(flooder)).is_some());
}

#[test]
fn new_lease_cap_and_unknown_relays() {
    let r = rig("new_lease_rate = \"5/s\"");
    for i in 0..30 {
        r.relay
            .send_to(&packet(M::Discover, mac(100 + i), RELAY, |_| {}), r.to)
            .unwrap();
    }
    let stats = &r.server.shared.stats;
    assert!(crate::support::eventually(WAIT, || stats
        .drops(DropReason::LeaseCap)
        >= 20));
    let offers = stats.dhcp.packets(DhcpKind::Discover, DhcpOutcome::Offer);
    assert!((5..=7).contains(&offers), "{offers} offers");
    // A relay no subnet names: silence, counted.
    let stray = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 3), 0)).unwrap();
    stray
        .send_to(
            &packet(M::Discover, mac(1), Ipv4Addr::new(127, 0, 0, 3), |_| {}),
            r.to,
        )
        .unwrap();
    assert!(crate::support::eventually(WAIT, || stats
        .drops(DropReason::UntrustedRelay)
        == 1));
}

#[test]
fn replies_honour_the_parameter_request_list() {
    let r = rig("");
    let offer = r
        .send(&packet(M::Discover, MAC, RELAY, |m| {
            m.opts_mut().insert(O::ParameterRequestList(vec![
                OptionCode::DomainNameServer,
                OptionCode::Router,
            ]));
        }))
        .expect("offer");
    assert!(offer.opts().get(OptionCode::Router).is_some());
    assert!(
        offer.opts().get(OptionCode::SubnetMask).is_none(),
        "not requested"
    );
}

/// Option 82 with circuit-id `id`.
fn circuit(id: &[u8]) -> O {
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(id.to_vec()));
    O::RelayAgentInformation(info)
}

/// Clients of a relay port that holds its cap are refused before the
/// subnet's new-lease rate is spent: a full port's flood of new MACs leaves
/// the rate to clients on other ports.
#[test]
fn a_full_ports_clients_spend_none_of_the_new_lease_rate() {
    let r = rig("new_lease_rate = \"20/s\"\nmax_leases_per_port = 2");
    let full: Vec<_> = (0..100)
        .map(|i| {
            packet(M::Discover, mac(300 + i), RELAY, |m| {
                m.opts_mut().insert(circuit(b"full"));
            })
        })
        .collect();
    send_burst(&r.relay, r.to, &full);
    let stats = &r.server.shared.stats;
    assert!(crate::support::eventually(WAIT, || stats
        .drops(DropReason::PortCap)
        == 98));
    assert_eq!(stats.drops(DropReason::LeaseCap), 0);
    let served = (0..10)
        .filter(|i| {
            r.send(&packet(M::Discover, mac(500 + i), RELAY, |m| {
                m.opts_mut().insert(circuit(format!("p{i}").as_bytes()));
            }))
            .is_some_and(|m| msg_type(&m) == Some(M::Offer))
        })
        .count();
    assert_eq!(served, 10, "other ports' clients");
}
