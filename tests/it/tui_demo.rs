//! `--demo` traffic against stand-in sockets: the flooder floods, the
//! well-behaved clients each send about one packet a second, the API
//! clients come from distinct loopback addresses, and cancel stops it all.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use vpcbox::config::Config;
use vpcbox::demo;
use vpcbox::isolation::IsolationSet;
use vpcbox::shared::Shared;
use vpcbox::stats::Stats;

#[tokio::test]
async fn demo_sends_a_flood_steady_clients_and_api_requests_then_stops() {
    let shared = Shared::new(
        Arc::new(Config::embedded().unwrap()),
        Stats::new(100),
        IsolationSet::in_memory(),
    );
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (dhcp_addr, api_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let demo = tokio::spawn(demo::run(
        demo::DemoHandle::from(&shared),
        dhcp_addr,
        api_addr,
    ));

    let mut per_mac: HashMap<[u8; 6], u32> = HashMap::new();
    let mut peers: HashSet<IpAddr> = HashSet::new();
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = udp.recv_from(&mut buf) => {
                let (len, from) = r.unwrap();
                assert!(len >= 240, "a whole BOOTP header");
                assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 2]), "sent from the relay itself");
                assert_eq!(&buf[24..28], &[127, 0, 0, 2], "giaddr: the shipped subnet's demo relay");
                let mac: [u8; 6] = buf[28..34].try_into().unwrap();
                *per_mac.entry(mac).or_default() += 1;
            }
            r = tcp.accept() => {
                let (_conn, peer) = r.unwrap();
                peers.insert(peer.ip());
            }
        }
    }
    let flood = per_mac.get(&demo::FLOODER).copied().unwrap_or(0);
    assert!(flood > 1_500, "flooder sent only {flood} in 2.5 s");
    let steady: Vec<u32> = (1..=demo::DHCP_CLIENTS)
        .filter_map(|i| per_mac.get(&demo::client_mac(i)).copied())
        .collect();
    assert_eq!(
        steady.len(),
        usize::from(demo::DHCP_CLIENTS),
        "every client sent"
    );
    assert!(steady.iter().all(|&n| n <= 4), "about 1/s each: {steady:?}");
    assert!(peers.len() >= 8, "distinct API source addresses: {peers:?}");

    shared.cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(3), demo).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
