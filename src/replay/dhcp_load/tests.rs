use super::*;
use crate::replay::fake::toy_dhcp as toy_server;
use crate::replay::phases::Phase;

#[test]
fn packets_decode_with_the_right_fields() {
    let gi = Ipv4Addr::new(127, 0, 0, 2);
    let ip = Ipv4Addr::new(10, 200, 1, 9);
    let sid = Ipv4Addr::new(10, 200, 0, 1);
    let p = packet(MessageType::Request, &FLOOD_MAC, 7, gi, Some(ip), Some(sid));
    let m = Message::from_bytes(&p).unwrap();
    assert_eq!(m.xid(), 7);
    assert_eq!(m.giaddr(), gi);
    assert_eq!(m.hops(), 1);
    assert_eq!(&m.chaddr()[..6], &FLOOD_MAC);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(
        m.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ip))
    );
    let r = Message::from_bytes(&packet(
        MessageType::Release,
        &FLOOD_MAC,
        8,
        gi,
        Some(ip),
        Some(sid),
    ))
    .unwrap();
    assert_eq!(r.ciaddr(), ip);
    assert!(r.opts().get(OptionCode::RequestedIpAddress).is_none());
}

#[tokio::test]
async fn legit_clients_complete_dora_through_the_relay_socket() {
    let (server, stop) = toy_server().await;
    let relay = bind_relay(Ipv4Addr::new(127, 0, 0, 2), server.port()).unwrap();
    let rec = Arc::new(Recorder::new());
    rec.set_phase(Phase::Steady);
    let cancel = CancellationToken::new();
    let gi = Ipv4Addr::new(127, 0, 0, 2);
    let task = tokio::spawn(legit(relay, server, gi, 50, rec.clone(), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = rec.phases()[Phase::Steady.index()].get(Kind::Dhcp).clone();
    assert!(s.ok >= 15, "{s:?}");
    assert_eq!(s.err, 0);
    stop.cancel();
}

#[tokio::test]
async fn flood_sends_the_count_and_counts_answers() {
    let (server, stop) = toy_server().await;
    let gi = Ipv4Addr::new(127, 0, 0, 3);
    let relay = bind_relay(gi, server.port()).unwrap();
    let rec = Arc::new(Recorder::new());
    rec.set_phase(Phase::Flood);
    let cancel = CancellationToken::new();
    tokio::spawn(count_replies(relay.clone(), rec.clone(), cancel.clone()));
    let t0 = Instant::now();
    flood(
        relay,
        server,
        gi,
        2000,
        Duration::from_millis(300),
        rec.clone(),
        cancel.clone(),
    )
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(250));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = &rec.phases()[Phase::Flood.index()];
    assert_eq!(p.get(Kind::FloodSent).ok, 2000);
    assert!(
        p.get(Kind::FloodAnswered).ok > 1000,
        "{:?}",
        p.get(Kind::FloodAnswered)
    );
    cancel.cancel();
    stop.cancel();
}
