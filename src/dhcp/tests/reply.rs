//! Reply encoding: option order and selection, size limits, echoes.

use super::*;

#[test]
fn parameter_request_list_sets_order_and_selection() {
    let r = req(M::Discover, |m| {
        let prl = [6u8, 3, 1].map(OptionCode::from).to_vec();
        m.opts_mut().insert(O::ParameterRequestList(prl));
    });
    let l = lease(LeaseState::Offered, IP, 30);
    let reply = done_reply(after(&r, &subnet(), &ctx(), Op::Offer, Ok(l), now()));
    assert_eq!(codes(&reply), [53, 54, 51, 58, 59, 6, 3, 1]);
}

#[test]
fn replies_fit_the_clients_maximum_message_size() {
    let mut s = subnet();
    s.options.push(DhcpOption {
        code: 43,
        data: vec![7; 400],
    });
    let l = lease(LeaseState::Offered, IP, 30);
    let small = req(M::Discover, |_| {});
    let reply = done_reply(after(&small, &s, &ctx(), Op::Offer, Ok(l.clone()), now()));
    assert!(reply.bytes.len() <= 548, "{}", reply.bytes.len());
    assert!(!codes(&reply).contains(&43) && codes(&reply).contains(&42));
    let big = req(M::Discover, |m| {
        m.opts_mut().insert(O::MaxMessageSize(1500));
    });
    let reply = done_reply(after(&big, &s, &ctx(), Op::Offer, Ok(l), now()));
    assert!(codes(&reply).contains(&43) && reply.bytes.len() <= 1472);
    // Over 255 bytes: split into two instances (RFC 3396).
    s.options = vec![DhcpOption {
        code: 43,
        data: vec![7; 300],
    }];
    let mut out = vec![];
    crate::dhcp::options::put_optional(&mut out, &s, Some(&[43]), 1000);
    assert_eq!((out[0], out[1], out[257], out[258]), (43, 255, 43, 45));
}

#[test]
fn relayed_replies_go_to_the_relay_with_option_82_verbatim() {
    let gi = Ipv4Addr::new(10, 0, 0, 2);
    let r = req(M::Discover, |m| {
        m.set_giaddr(gi);
    });
    // dhcproto re-encodes option 82 in its own way; splice it in raw.
    let mut buf = packet(M::Discover, |m| {
        m.set_giaddr(gi);
    });
    let end = buf.iter().rposition(|&b| b == 255).unwrap();
    buf.splice(end..end, [82, 6, 1, 4, 0xde, 0xad, 0xbe, 0xef]);
    let r82 = Request::decode(&buf, &peek(&buf).unwrap()).unwrap();
    assert_eq!(
        r82.relay_info.as_deref(),
        Some(&[1, 4, 0xde, 0xad, 0xbe, 0xef][..])
    );
    let l = lease(LeaseState::Offered, IP, 30);
    let reply = done_reply(after(&r82, &subnet(), &ctx(), Op::Offer, Ok(l), now()));
    assert_eq!(reply.to, Dest::Relay(gi));
    assert_eq!(*codes(&reply).last().unwrap(), 82);
    assert!(reply
        .bytes
        .windows(8)
        .any(|w| w == [82, 6, 1, 4, 0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(decode(&reply).giaddr(), gi);
    // A relayed NAK sets the broadcast bit.
    let nak = crate::dhcp::handler::nak(&r, &ctx());
    assert!(decode(&nak).flags().broadcast() && nak.to == Dest::Relay(gi));
}

#[test]
fn client_identifier_keys_the_client_and_is_echoed() {
    let r = req(M::Discover, |m| {
        m.opts_mut().insert(O::ClientIdentifier(vec![0, 9, 9, 9]));
    });
    assert_eq!(r.client, "id:00090909".parse().unwrap());
    let mut l = lease(LeaseState::Offered, IP, 30);
    l.client = r.client.clone();
    let reply = done_reply(after(&r, &subnet(), &ctx(), Op::Offer, Ok(l), now()));
    assert_eq!(
        decode(&reply).opts().get(OptionCode::ClientIdentifier),
        Some(&O::ClientIdentifier(vec![0, 9, 9, 9]))
    );
}

#[test]
fn rapid_commit_when_configured() {
    let r = req(M::Discover, |m| {
        m.opts_mut().insert(O::RapidCommit);
    });
    assert!(
        matches!(run(&r, None), Action::Offer { rapid: false, .. }),
        "off by default"
    );
    let on = Ctx {
        rapid_commit: true,
        ..ctx()
    };
    assert_eq!(
        handle(&r, &subnet(), None, &on, now()),
        Action::Offer {
            requested: None,
            new: true,
            rapid: true
        }
    );
    let held = lease(LeaseState::Bound, IP, 100);
    assert_eq!(
        handle(&r, &subnet(), Some(&held), &on, now()),
        Action::Renew {
            ip: IP,
            rapid: true
        }
    );
    let ack = done_reply(after(
        &r,
        &subnet(),
        &on,
        Op::Commit { rapid: true },
        Ok(held),
        now(),
    ));
    assert_eq!(decode(&ack).opts().msg_type(), Some(M::Ack));
    assert!(codes(&ack).contains(&80));
}

#[test]
fn ipam_refusals_become_naks_or_drops() {
    let r = init_reboot(IP);
    let nak = after(
        &r,
        &subnet(),
        &ctx(),
        Op::Commit { rapid: false },
        Err(IpamError::AddressTaken { ip: IP }),
        now(),
    );
    assert!(matches!(
        nak,
        Done::Reply(Reply {
            outcome: DhcpOutcome::Nak,
            ..
        })
    ));
    let full = IpamError::PoolExhausted {
        subnet: "lab".into(),
    };
    assert_eq!(
        after(&r, &subnet(), &ctx(), Op::Offer, Err(full), now()),
        Done::Drop(DropReason::PoolExhausted)
    );
    let io = IpamError::Storage("disk".into());
    assert_eq!(
        after(
            &r,
            &subnet(),
            &ctx(),
            Op::Commit { rapid: false },
            Err(io),
            now()
        ),
        Done::Drop(DropReason::Storage)
    );
}
