//! `vpcbox run --demo`: real traffic against the appliance's own sockets,
//! so a newcomer sees the dashboard move and can isolate the flooder:
//! 50 well-behaved relayed DHCP clients (each on a relay port of its own),
//! 10 API clients on distinct loopback addresses, and one flooding MAC
//! (`mac:02:00:00:00:00:01`). Relayed DHCP completes only when the relay
//! address is a subnet's trusted relay (the shipped config's is).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::net::loopback_if_unspecified;
use crate::shared::Shared;

/// Well-behaved DHCP clients.
pub const DHCP_CLIENTS: u8 = 50;
/// API clients, from 127.0.0.10 on.
pub const API_CLIENTS: u8 = 10;
/// The flooder's hardware address.
pub const FLOODER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Flood packets per 10 ms tick: about 2,000/s.
const FLOOD_BURST: u32 = 20;
/// Each API client's request interval (3 requests a second).
const API_EVERY: Duration = Duration::from_millis(333);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("demo packet: {0}")]
    Encode(String),
}

/// What the demo needs of the appliance: the relay its DHCP clients come
/// through, the server identifier they request from, and when to stop.
#[derive(Debug, Clone)]
pub struct DemoHandle {
    giaddr: Ipv4Addr,
    server_id: Ipv4Addr,
    cancel: CancellationToken,
}

impl From<&Shared> for DemoHandle {
    fn from(s: &Shared) -> Self {
        Self {
            giaddr: relay_address(&s.config),
            server_id: s
                .config
                .dhcp
                .server_id
                .unwrap_or(Ipv4Addr::new(10, 0, 0, 1)),
            cancel: s.cancel.clone(),
        }
    }
}

/// Runs until `demo.cancel`. `dhcp_addr` and `api_addr` are the bound
/// addresses of the DHCP and HTTP listeners (an unspecified IP means
/// loopback). Cancel-safe.
pub async fn run(
    demo: DemoHandle,
    dhcp_addr: SocketAddr,
    api_addr: SocketAddr,
) -> Result<(), DemoError> {
    let dhcp = loopback_if_unspecified(dhcp_addr);
    let api = loopback_if_unspecified(api_addr);
    let DemoHandle {
        giaddr,
        server_id,
        cancel,
    } = demo;
    tracing::info!(%dhcp, %api, %giaddr, "demo traffic starting");
    let api_clients =
        futures::future::join_all((0..API_CLIENTS).map(|i| api_client(i, api, cancel.clone())));
    let (dhcp_result, flood_result, _) = tokio::join!(
        well_behaved(dhcp, giaddr, server_id, cancel.clone()),
        flooder(dhcp, giaddr, cancel.clone()),
        api_clients,
    );
    dhcp_result.and(flood_result)
}

/// The first subnet's first listed relay, else its second host address
/// (`10.0.0.2` in `10.0.0.0/24`; not a relay the server trusts).
fn relay_address(config: &Config) -> Ipv4Addr {
    let Some(s) = config.subnets.first() else {
        return Ipv4Addr::new(10, 0, 0, 2);
    };
    s.relays
        .first()
        .copied()
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(s.cidr.network()).saturating_add(2)))
}

/// The hardware address of well-behaved client `i` (1-based).
pub fn client_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, i]
}

/// Sends relayed packets from `giaddr` itself when it is a loopback
/// address (a relay's source is its own address; the server trusts only
/// listed relays), else from 127.0.0.1.
async fn relay_socket(giaddr: Ipv4Addr) -> std::io::Result<UdpSocket> {
    if giaddr.is_loopback() {
        if let Ok(s) = UdpSocket::bind((giaddr, 0)).await {
            return Ok(s);
        }
    }
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await
}

fn packet(
    mac: [u8; 6],
    xid: u32,
    kind: MessageType,
    giaddr: Ipv4Addr,
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Result<Vec<u8>, DemoError> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = v4::Message::new_with_id(xid, u, u, u, giaddr, &mac);
    m.set_hops(1);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    // The relay's port: one per client, as an access switch's would be.
    let mut info = v4::relay::RelayAgentInformation::default();
    info.insert(v4::relay::RelayInfo::AgentCircuitId(
        format!("demo-{}", mac[5]).into_bytes(),
    ));
    m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
    if let Some((ip, server)) = request {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    }
    m.to_vec().map_err(|e| DemoError::Encode(e.to_string()))
}

/// Per-client address learned from OFFERs/ACKs (only when replies reach us).
type Offers = Arc<Mutex<Vec<Option<Ipv4Addr>>>>;

/// 50 clients, one packet a second each, staggered over 20 ms ticks.
async fn well_behaved(
    dhcp: SocketAddr,
    giaddr: Ipv4Addr,
    server_id: Ipv4Addr,
    cancel: CancellationToken,
) -> Result<(), DemoError> {
    let sock = relay_socket(giaddr).await?;
    // std Mutex: one slot read or written at a time, never held across an await.
    let offers: Offers = Arc::new(Mutex::new(vec![None; usize::from(DHCP_CLIENTS)]));
    if giaddr.is_loopback() {
        match UdpSocket::bind((giaddr, dhcp.port())).await {
            Ok(replies) => {
                tokio::spawn(read_replies(replies, offers.clone(), cancel.clone()));
            }
            Err(e) => tracing::debug!(%giaddr, error = %e, "demo: replies not received"),
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        n = n.wrapping_add(1);
        let i = (n % u32::from(DHCP_CLIENTS)) as u8 + 1;
        let offered = offers.lock().unwrap_or_else(|e| e.into_inner())[usize::from(i - 1)];
        let buf = match offered {
            Some(ip) => packet(
                client_mac(i),
                n,
                MessageType::Request,
                giaddr,
                Some((ip, server_id)),
            )?,
            None => packet(client_mac(i), n, MessageType::Discover, giaddr, None)?,
        };
        if let Err(e) = sock.send_to(&buf, dhcp).await {
            tracing::debug!(error = %e, "demo dhcp send");
        }
    }
}

/// Learns offered addresses; a NAK forgets it.
async fn read_replies(sock: UdpSocket, offers: Offers, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let len = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok((len, _)) => len,
                Err(_) => continue,
            },
        };
        let Ok(msg) = v4::Message::decode(&mut Decoder::new(&buf[..len])) else {
            continue;
        };
        let ch = msg.chaddr();
        if ch.len() < 6 || ch[..5] != client_mac(0)[..5] || ch[5] == 0 || ch[5] > DHCP_CLIENTS {
            continue;
        }
        let slot = usize::from(ch[5] - 1);
        let addr = match msg.opts().msg_type() {
            Some(MessageType::Offer | MessageType::Ack) => Some(msg.yiaddr()),
            _ => None,
        };
        offers.lock().unwrap_or_else(|e| e.into_inner())[slot] = addr;
    }
}

/// About 2,000 DISCOVERs a second from [`FLOODER`].
async fn flooder(
    dhcp: SocketAddr,
    giaddr: Ipv4Addr,
    cancel: CancellationToken,
) -> Result<(), DemoError> {
    let sock = relay_socket(giaddr).await?;
    let mut buf = packet(FLOODER, 0, MessageType::Discover, giaddr, None)?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut xid: u32 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        for _ in 0..FLOOD_BURST {
            xid = xid.wrapping_add(1);
            // xid is bytes 4..8 of the fixed header.
            buf[4..8].copy_from_slice(&xid.to_be_bytes());
            if sock.send_to(&buf, dhcp).await.is_err() {
                break;
            }
        }
    }
}

/// One API client: a GET every [`API_EVERY`] from its own loopback address.
async fn api_client(i: u8, api: SocketAddr, cancel: CancellationToken) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    let mut connector = HttpConnector::new();
    if api.ip().is_loopback() && api.is_ipv4() {
        connector.set_local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i))));
    }
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut tick = tokio::time::interval(API_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = u64::from(i);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let path = if n % 2 == 0 { "/healthz" } else { "/v1/leases" };
        let Ok(uri) = format!("http://{api}{path}").parse::<http::Uri>() else {
            return;
        };
        let get = async {
            let resp = client.get(uri).await.ok()?;
            resp.into_body().collect().await.ok()
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::timeout(Duration::from_secs(2), get) => {}
        }
    }
}
