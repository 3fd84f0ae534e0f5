//! A small DHCP client for many MACs, speaking as a relay agent: it binds
//! `giaddr:67` (an address of its namespace, configured as a subnet's
//! relay), sends every message to each server it knows (a relay listing
//! every node, as a cluster expects) and takes the first answer with its
//! xid. Relayed, the servers answer every step (DORA, renewal with ciaddr,
//! INIT-REBOOT) to the relay, so one socket serves any number of clients.
//! One `Relay` per thread: exchanges are synchronous.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption as O, MessageType as M};
use dhcproto::{Decodable, Decoder, Encodable};

/// What a server said to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `ip` for `lease` from the server `node` (its server id).
    Ack {
        ip: Ipv4Addr,
        lease: Duration,
        node: Ipv4Addr,
    },
    Nak {
        node: Ipv4Addr,
    },
    /// Nothing in time.
    Silence,
}

/// An offer: the address and who offered it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Offer {
    pub ip: Ipv4Addr,
    pub node: Ipv4Addr,
}

pub struct Relay {
    sock: UdpSocket,
    giaddr: Ipv4Addr,
    servers: Vec<SocketAddr>,
    wait: Duration,
    xid: u32,
}

impl Relay {
    /// Binds `giaddr:67` (in the calling thread's namespace).
    pub fn bind(giaddr: Ipv4Addr, servers: Vec<SocketAddr>, wait: Duration) -> Self {
        let sock =
            UdpSocket::bind((giaddr, 67)).unwrap_or_else(|e| panic!("bind relay {giaddr}:67: {e}"));
        let xid = u32::from(giaddr).rotate_left(16) ^ std::process::id();
        Self {
            sock,
            giaddr,
            servers,
            wait,
            xid,
        }
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.giaddr
    }

    /// DISCOVER → the first OFFER.
    pub fn discover(&mut self, mac: [u8; 6]) -> Option<Offer> {
        let m = self.exchange(M::Discover, mac, |_| {})?;
        let node = server_id(&m)?;
        (m.opts().msg_type() == Some(M::Offer)).then_some(Offer {
            ip: m.yiaddr(),
            node,
        })
    }

    /// REQUEST in SELECTING state: the offered address from its server.
    pub fn select(&mut self, mac: [u8; 6], offer: Offer) -> Answer {
        self.request(mac, |m| {
            m.opts_mut().insert(O::ServerIdentifier(offer.node));
            m.opts_mut().insert(O::RequestedIpAddress(offer.ip));
        })
    }

    /// REQUEST with ciaddr (RENEWING or REBINDING: relayed, the same).
    pub fn renew(&mut self, mac: [u8; 6], ip: Ipv4Addr) -> Answer {
        self.request(mac, |m| {
            m.set_ciaddr(ip);
        })
    }

    /// REQUEST in INIT-REBOOT: option 50, no server id, no ciaddr.
    pub fn reboot(&mut self, mac: [u8; 6], ip: Ipv4Addr) -> Answer {
        self.request(mac, |m| {
            m.opts_mut().insert(O::RequestedIpAddress(ip));
        })
    }

    /// DHCPRELEASE to every server (no answer comes).
    pub fn release(&mut self, mac: [u8; 6], ip: Ipv4Addr, node: Ipv4Addr) {
        let p = self.packet(M::Release, mac, |m| {
            m.set_ciaddr(ip);
            m.opts_mut().insert(O::ServerIdentifier(node));
        });
        for s in &self.servers {
            let _ = self.sock.send_to(&p, s);
        }
    }

    fn request(&mut self, mac: [u8; 6], edit: impl FnOnce(&mut v4::Message)) -> Answer {
        let Some(m) = self.exchange(M::Request, mac, edit) else {
            return Answer::Silence;
        };
        let Some(node) = server_id(&m) else {
            return Answer::Silence;
        };
        match m.opts().msg_type() {
            Some(M::Ack) => Answer::Ack {
                ip: m.yiaddr(),
                lease: lease_time(&m).unwrap_or_default(),
                node,
            },
            Some(M::Nak) => Answer::Nak { node },
            _ => Answer::Silence,
        }
    }

    fn packet(&mut self, kind: M, mac: [u8; 6], edit: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
        self.xid = self.xid.wrapping_add(1);
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = v4::Message::new_with_id(self.xid, u, u, u, self.giaddr, &mac);
        m.opts_mut().insert(O::MessageType(kind));
        edit(&mut m);
        m.to_vec().expect("encode")
    }

    /// Sends to every server, then waits for the first reply with the xid.
    fn exchange(
        &mut self,
        kind: M,
        mac: [u8; 6],
        edit: impl FnOnce(&mut v4::Message),
    ) -> Option<v4::Message> {
        let p = self.packet(kind, mac, edit);
        for s in &self.servers {
            let _ = self.sock.send_to(&p, s);
        }
        let deadline = Instant::now() + self.wait;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let n = match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            let Ok(m) = v4::Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if m.xid() == self.xid && m.chaddr().get(..6) == Some(&mac[..]) {
                return Some(m);
            }
        }
    }
}

fn server_id(m: &v4::Message) -> Option<Ipv4Addr> {
    match m.opts().get(v4::OptionCode::ServerIdentifier) {
        Some(O::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn lease_time(m: &v4::Message) -> Option<Duration> {
    match m.opts().get(v4::OptionCode::AddressLeaseTime) {
        Some(O::AddressLeaseTime(s)) => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    }
}

/// The client key the server files a MAC under.
pub fn key(mac: [u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("mac:{}", hex.join(":"))
}
