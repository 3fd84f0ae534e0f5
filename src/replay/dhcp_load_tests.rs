use super::*;
use crate::replay::phases::Phase;

/// A toy relay-aware server: OFFER for DISCOVER, ACK for REQUEST, each sent
/// to giaddr:<own port>, as the real one does; ignores RELEASE.
async fn toy_server() -> (SocketAddr, CancellationToken) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = sock.recv_from(&mut buf) => r.unwrap(),
            };
            let req = Message::from_bytes(&buf[..len]).unwrap();
            let reply = match req.opts().msg_type() {
                Some(MessageType::Discover) => MessageType::Offer,
                Some(MessageType::Request) => MessageType::Ack,
                _ => continue,
            };
            let mut m = req.clone();
            m.set_opcode(dhcproto::v4::Opcode::BootReply);
            m.set_yiaddr(Ipv4Addr::new(10, 200, 1, 7));
            m.opts_mut().clear();
            m.opts_mut().insert(DhcpOption::MessageType(reply));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 200, 0, 1)));
            let to = SocketAddr::from((req.giaddr(), addr.port()));
            let _ = sock.send_to(&m.to_vec().unwrap(), to).await;
        }
    });
    (addr, cancel)
}

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
