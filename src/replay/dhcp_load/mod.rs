//! DHCP load: one MAC flooding DISCOVER/REQUEST, and a trickle of legit
//! clients doing full DORA. Both go through a "relay": packets carry a
//! `giaddr`, and the replay binds `giaddr:<server port>`, where the target
//! sends its replies (see `config_gen` for the loopback addressing).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable as _, Encodable as _};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::phases::{Kind, Recorder};

/// The flooder's MAC.
pub const FLOOD_MAC: [u8; 6] = [0x02, 0xff, 0xff, 0xff, 0xff, 0x01];
/// How long a legit client waits for each reply before retransmitting.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Sends per step (first try + retransmissions) before a DORA counts as failed.
pub const TRIES: u32 = 3;

/// A relay's socket at `ip:port`, with a large receive buffer so the
/// flood's replies are counted rather than dropped by our own kernel.
pub fn bind_relay(ip: Ipv4Addr, port: u16) -> anyhow::Result<Arc<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // The kernel caps this at net.core.rmem_max; best effort.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(ip, port).into())
        .map_err(|e| anyhow::anyhow!("binding the relay socket {ip}:{port}: {e}"))?;
    Ok(Arc::new(UdpSocket::from_std(s.into())?))
}

/// A relayed client message, each client on a relay port of its own
/// (option 82 circuit-id from its MAC), as behind an access switch: the
/// target caps the addresses one port may hold.
pub fn packet(
    kind: MessageType,
    mac: &[u8; 6],
    xid: u32,
    giaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
) -> Vec<u8> {
    let un = Ipv4Addr::UNSPECIFIED;
    let ciaddr = if kind == MessageType::Release {
        requested.unwrap_or(un)
    } else {
        un
    };
    let mut m = Message::new_with_id(xid, ciaddr, un, un, giaddr, mac);
    m.set_hops(1);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    if let (Some(ip), false) = (requested, kind == MessageType::Release) {
        o.insert(DhcpOption::RequestedIpAddress(ip));
    }
    if let Some(s) = server_id {
        o.insert(DhcpOption::ServerIdentifier(s));
    }
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
    ]));
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(mac.to_vec()));
    o.insert(DhcpOption::RelayAgentInformation(info));
    m.to_vec().unwrap_or_default()
}

/// Sends `count` packets from [`FLOOD_MAC`], alternating DISCOVER and
/// REQUEST, evenly over `over`, each with its own xid.
pub async fn flood(
    sock: Arc<UdpSocket>,
    server: SocketAddr,
    giaddr: Ipv4Addr,
    count: u64,
    over: Duration,
    rec: Arc<Recorder>,
    cancel: CancellationToken,
) {
    let templates = [
        packet(MessageType::Discover, &FLOOD_MAC, 0, giaddr, None, None),
        packet(
            MessageType::Request,
            &FLOOD_MAC,
            0,
            giaddr,
            Some(Ipv4Addr::new(10, 200, 1, 1)),
            None,
        ),
    ];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < count {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let frac = (started.elapsed().as_secs_f64() / over.as_secs_f64().max(1e-3)).min(1.0);
        let due = ((count as f64 * frac) as u64).min(count);
        let before = sent;
        while sent < due {
            let mut p = templates[(sent % 2) as usize].clone();
            // xid lives at bytes 4..8 of the BOOTP header.
            if let Some(x) = p.get_mut(4..8) {
                x.copy_from_slice(&(0xF100_0000u32 | sent as u32).to_be_bytes());
            }
            // Our own send buffer may fill: that packet is simply not sent.
            if sock.send_to(&p, server).await.is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
        rec.count(Kind::FloodSent, rec.phase(), sent - before);
    }
}

/// Counts every reply that arrives on the flooder's relay socket.
pub async fn count_replies(sock: Arc<UdpSocket>, rec: Arc<Recorder>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => if r.is_ok() {
                rec.count(Kind::FloodAnswered, rec.phase(), 1);
            },
        }
    }
}

/// Replies to legit clients, routed by xid.
type Waiters = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>>;

/// Starts one legit client (full DORA, then RELEASE) every `1/rate` s until
/// `cancel`; each DORA is one result of [`Kind::Dhcp`].
pub async fn legit(
    sock: Arc<UdpSocket>,
    server: SocketAddr,
    giaddr: Ipv4Addr,
    rate: u32,
    rec: Arc<Recorder>,
    cancel: CancellationToken,
) {
    if rate == 0 {
        return;
    }
    // std Mutex: held for a map insert/lookup, never across an `.await`.
    let waiters: Waiters = Arc::default();
    // The reply router outlives the load: exchanges in flight when it stops
    // still finish (or time out) and are counted.
    let router = CancellationToken::new();
    tokio::spawn(route_replies(sock.clone(), waiters.clone(), router.clone()));
    let exchanges = tokio_util::task::TaskTracker::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        n = n.wrapping_add(1);
        let (sock, waiters, rec) = (sock.clone(), waiters.clone(), rec.clone());
        exchanges.spawn(async move {
            let phase = rec.phase();
            let t0 = Instant::now();
            match dora(&sock, server, giaddr, n, &waiters).await {
                Some(_) => rec.ok(Kind::Dhcp, phase, t0.elapsed()),
                None => rec.err(Kind::Dhcp, phase),
            }
        });
    }
    exchanges.close();
    let _ = tokio::time::timeout(RETRY_AFTER * TRIES + RETRY_AFTER, exchanges.wait()).await;
    router.cancel();
}

async fn route_replies(sock: Arc<UdpSocket>, waiters: Waiters, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let got = tokio::select! {
            () = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((len, _)) = got else { continue };
        let Ok(msg) = Message::from_bytes(&buf[..len]) else {
            continue;
        };
        let w = waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = w.get(&msg.xid()) {
            let _ = tx.send(msg);
        }
    }
}

/// One client's DISCOVER → OFFER → REQUEST → ACK, then RELEASE (so a long
/// replay does not drain the pool). Returns the leased address.
async fn dora(
    sock: &UdpSocket,
    server: SocketAddr,
    giaddr: Ipv4Addr,
    n: u32,
    waiters: &Waiters,
) -> Option<Ipv4Addr> {
    let [a, b, c, d] = n.to_be_bytes();
    let mac = [0x02, 0xbb, a, b, c, d];
    let xid = 0xB000_0000 | (n & 0x0fff_ffff);
    let (tx, mut rx) = mpsc::unbounded_channel();
    waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(xid, tx);
    let result = async {
        let discover = packet(MessageType::Discover, &mac, xid, giaddr, None, None);
        let offer = exchange(sock, server, &discover, &mut rx, MessageType::Offer).await?;
        let ip = offer.yiaddr();
        let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        };
        let request = packet(MessageType::Request, &mac, xid, giaddr, Some(ip), sid);
        exchange(sock, server, &request, &mut rx, MessageType::Ack).await?;
        let release = packet(MessageType::Release, &mac, xid, giaddr, Some(ip), sid);
        let _ = sock.send_to(&release, server).await;
        Some(ip)
    }
    .await;
    waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&xid);
    result
}

/// Sends `packet` and waits for a reply of type `want`, retransmitting
/// after [`RETRY_AFTER`] up to [`TRIES`] sends; a NAK ends it at once.
async fn exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    packet: &[u8],
    rx: &mut mpsc::UnboundedReceiver<Message>,
    want: MessageType,
) -> Option<Message> {
    for _ in 0..TRIES {
        sock.send_to(packet, server).await.ok()?;
        let deadline = tokio::time::Instant::now() + RETRY_AFTER;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) if m.opts().msg_type() == Some(want) => return Some(m),
                Ok(Some(m)) if m.opts().msg_type() == Some(MessageType::Nak) => return None,
                Ok(Some(_)) => continue, // a late reply to an earlier step
                Ok(None) => return None,
                Err(_) => break,
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
