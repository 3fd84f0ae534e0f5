//! Every message type in every client state.

use super::*;

#[test]
fn discover_from_a_new_client_asks_for_an_offer() {
    let r = req(M::Discover, |m| {
        m.opts_mut()
            .insert(O::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
    });
    let want = Action::Offer {
        requested: Some(Ipv4Addr::new(10, 0, 0, 150)),
        new: true,
        rapid: false,
    };
    assert_eq!(run(&r, None), want);
    // A lease in another subnet, or an expired one, is no lease here.
    let mut other = lease(LeaseState::Bound, IP, 100);
    other.subnet = "other".into();
    assert_eq!(run(&r, Some(&other)), want);
    assert_eq!(run(&r, Some(&lease(LeaseState::Bound, IP, 0))), want);
}

#[test]
fn offer_carries_the_subnet_options() {
    let r = req(M::Discover, |_| {});
    let l = lease(LeaseState::Offered, IP, 30);
    let reply = done_reply(after(&r, &subnet(), &ctx(), Op::Offer, Ok(l), now()));
    assert_eq!(
        (reply.outcome, reply.to),
        (DhcpOutcome::Offer, Dest::Broadcast)
    );
    let m = decode(&reply);
    assert_eq!(
        (m.opcode(), m.xid(), m.yiaddr(), m.chaddr()),
        (v4::Opcode::BootReply, 0x1234, IP, &MAC[..])
    );
    let o = m.opts();
    assert_eq!(o.msg_type(), Some(M::Offer));
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&O::ServerIdentifier(SERVER))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&O::AddressLeaseTime(3600))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&O::Renewal(1800)));
    assert_eq!(o.get(OptionCode::Rebinding), Some(&O::Rebinding(3150)));
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&O::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(o.get(OptionCode::Router), Some(&O::Router(vec![SERVER])));
    assert_eq!(
        o.get(OptionCode::DomainName),
        Some(&O::DomainName("lab.internal".into()))
    );
    assert_eq!(
        o.get(OptionCode::InterfaceMtu),
        Some(&O::InterfaceMtu(1500))
    );
    let raw = &reply.bytes;
    let at = raw
        .windows(2)
        .position(|w| w == [121, 7])
        .expect("option 121");
    assert_eq!(raw[at + 2..at + 9], [16, 10, 1, 10, 0, 0, 1]);
    assert!(codes(&reply).contains(&42), "configured raw option");
}

#[test]
fn discover_from_a_holder_is_answered_from_memory() {
    let r = req(M::Discover, |_| {});
    for l in [
        lease(LeaseState::Bound, IP, 2000),
        lease(LeaseState::Offered, IP, 20),
    ] {
        let reply = reply_of(run(&r, Some(&l)));
        let m = decode(&reply);
        assert_eq!((reply.outcome, m.yiaddr()), (DhcpOutcome::Offer, IP));
        let want = if l.state == LeaseState::Bound {
            2000
        } else {
            3600
        };
        assert_eq!(
            m.opts().get(OptionCode::AddressLeaseTime),
            Some(&O::AddressLeaseTime(want))
        );
    }
}

#[test]
fn request_selecting_us_binds_the_offer() {
    let r = req(M::Request, |m| {
        m.opts_mut().insert(O::ServerIdentifier(SERVER));
        m.opts_mut().insert(O::RequestedIpAddress(IP));
        m.opts_mut().insert(O::Hostname("host-1".into()));
    });
    assert_eq!(r.hostname.as_deref(), Some("host-1"));
    assert_eq!(
        run(&r, Some(&lease(LeaseState::Offered, IP, 20))),
        Action::Bind { ip: IP, new: false }
    );
    assert_eq!(
        run(&r, None),
        Action::Bind { ip: IP, new: true },
        "offer forgotten (restart)"
    );
    // A retransmitted REQUEST after the ACK: a renewal, no new write.
    assert_eq!(
        run(&r, Some(&lease(LeaseState::Bound, IP, 3600))),
        Action::Renew {
            ip: IP,
            rapid: false
        }
    );
    let ack = commit(&r, lease(LeaseState::Bound, IP, 3600));
    let m = decode(&ack);
    assert_eq!(
        (ack.outcome, ack.to, m.yiaddr(), m.ciaddr()),
        (DhcpOutcome::Ack, Dest::Broadcast, IP, Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(m.opts().msg_type(), Some(M::Ack));
}

#[test]
fn request_selecting_another_server_is_silent_and_forgets_our_offer() {
    let r = req(M::Request, |m| {
        m.opts_mut()
            .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 254)));
        m.opts_mut()
            .insert(O::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 180)));
    });
    assert_eq!(
        run(&r, Some(&lease(LeaseState::Offered, IP, 20))),
        Action::Forget { ip: IP }
    );
    assert_eq!(
        run(&r, Some(&lease(LeaseState::Bound, IP, 20))),
        Action::Silent
    );
    assert_eq!(run(&r, None), Action::Silent);
}

#[test]
fn request_selecting_outside_the_subnet_is_naked() {
    let r = req(M::Request, |m| {
        m.opts_mut().insert(O::ServerIdentifier(SERVER));
        m.opts_mut()
            .insert(O::RequestedIpAddress(Ipv4Addr::new(192, 168, 1, 5)));
    });
    assert_eq!(reply_of(run(&r, None)).outcome, DhcpOutcome::Nak);
}

#[test]
fn init_reboot_acks_the_clients_own_address() {
    let r = init_reboot(IP);
    assert_eq!(
        run(&r, Some(&lease(LeaseState::Bound, IP, 100))),
        Action::Renew {
            ip: IP,
            rapid: false
        }
    );
    // Released or expired: the same address back, not a new client.
    for s in [LeaseState::Released, LeaseState::Expired] {
        assert_eq!(
            run(&r, Some(&lease(s, IP, 0))),
            Action::Bind { ip: IP, new: false }
        );
    }
    // A client we have no record of: NAK (RFC 2131 4.3.2), never a new
    // lease for whatever address it names; it starts over with DISCOVER.
    assert_eq!(reply_of(run(&r, None)).outcome, DhcpOutcome::Nak);
}

#[test]
fn init_reboot_naks_wrong_subnet_and_other_addresses() {
    let held = lease(LeaseState::Bound, IP, 100);
    for ip in [Ipv4Addr::new(192, 168, 0, 9), Ipv4Addr::new(10, 0, 0, 150)] {
        let r = init_reboot(ip);
        let nak = reply_of(run(&r, Some(&held)));
        assert_eq!((nak.outcome, nak.to), (DhcpOutcome::Nak, Dest::Broadcast));
        let m = decode(&nak);
        assert_eq!(
            (m.yiaddr(), m.opts().msg_type()),
            (Ipv4Addr::UNSPECIFIED, Some(M::Nak))
        );
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        // Not authoritative: silence.
        let quiet = Ctx {
            authoritative: false,
            ..ctx()
        };
        assert_eq!(
            handle(&r, &subnet(), Some(&held), &quiet, now()),
            Action::Silent
        );
    }
    let quiet = Ctx {
        authoritative: false,
        ..ctx()
    };
    assert_eq!(
        handle(&init_reboot(IP), &subnet(), None, &quiet, now()),
        Action::Silent
    );
}

#[test]
fn renewing_is_unicast_and_rebinding_broadcast() {
    let renewing = req(M::Request, |m| {
        m.set_ciaddr(IP);
    });
    let held = lease(LeaseState::Bound, IP, 1000);
    assert_eq!(
        run(&renewing, Some(&held)),
        Action::Renew {
            ip: IP,
            rapid: false
        }
    );
    let ack = commit(&renewing, lease(LeaseState::Bound, IP, 3600));
    assert_eq!(ack.to, Dest::Unicast(IP));
    assert_eq!(decode(&ack).ciaddr(), IP);
    let rebinding = req(M::Request, |m| {
        m.set_ciaddr(IP);
        m.set_flags(v4::Flags::default().set_broadcast());
    });
    assert_eq!(
        run(&rebinding, Some(&held)),
        Action::Renew {
            ip: IP,
            rapid: false
        }
    );
    assert_eq!(commit(&rebinding, held.clone()).to, Dest::Broadcast);
    // Not theirs: NAK.
    let other = lease(LeaseState::Bound, Ipv4Addr::new(10, 0, 0, 150), 1000);
    assert_eq!(
        reply_of(run(&renewing, Some(&other))).outcome,
        DhcpOutcome::Nak
    );
    assert_eq!(reply_of(run(&renewing, None)).outcome, DhcpOutcome::Nak);
}

#[test]
fn cached_renewal_advertises_the_remaining_time() {
    let r = req(M::Request, |m| {
        m.set_ciaddr(IP);
    });
    let m = decode(&commit(&r, lease(LeaseState::Bound, IP, 2700)));
    assert_eq!(
        m.opts().get(OptionCode::AddressLeaseTime),
        Some(&O::AddressLeaseTime(2700))
    );
    assert_eq!(m.opts().get(OptionCode::Renewal), Some(&O::Renewal(1350)));
}

#[test]
fn decline_and_release() {
    let held = lease(LeaseState::Bound, IP, 1000);
    let decline = req(M::Decline, |m| {
        m.opts_mut().insert(O::ServerIdentifier(SERVER));
        m.opts_mut().insert(O::RequestedIpAddress(IP));
    });
    assert_eq!(run(&decline, Some(&held)), Action::Decline { ip: IP });
    assert_eq!(run(&decline, None), Action::Silent);
    let release = req(M::Release, |m| {
        m.set_ciaddr(IP);
        m.opts_mut().insert(O::ServerIdentifier(SERVER));
    });
    assert_eq!(run(&release, Some(&held)), Action::Release { ip: IP });
    let elsewhere = req(M::Release, |m| {
        m.set_ciaddr(IP);
        m.opts_mut()
            .insert(O::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 9)));
    });
    assert_eq!(run(&elsewhere, Some(&held)), Action::Silent);
}

#[test]
fn inform_answers_options_without_a_lease() {
    let r = req(M::Inform, |m| {
        m.set_ciaddr(Ipv4Addr::new(10, 0, 0, 7));
    });
    let ack = reply_of(run(&r, None));
    let m = decode(&ack);
    assert_eq!(
        (ack.outcome, ack.to),
        (DhcpOutcome::Ack, Dest::Unicast(Ipv4Addr::new(10, 0, 0, 7)))
    );
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(m.opts().get(OptionCode::Router).is_some());
}

#[test]
fn server_messages_from_clients_are_not_for_us() {
    assert_eq!(
        run(&req(M::Offer, |_| {}), None),
        Action::Drop(DropReason::NotForUs)
    );
}
