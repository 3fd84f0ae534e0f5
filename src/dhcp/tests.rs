//! Pure handler tests: every message type and client state, `now` passed
//! in ([`handler`]), and reply encoding ([`reply`]). Shared helpers here.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{self, DhcpOption as O, MessageType as M, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::handler::{after, handle, Action, Ctx, Done, Op};
use super::reply::{Dest, Reply};
use super::request::Request;
use super::wire::peek;
use crate::client::ClientKey;
use crate::ipam::{DhcpOption, IpamError, Lease, LeaseState, PoolRange, StaticRoute, SubnetSpec};
use crate::stats::{DhcpOutcome, DropReason};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn subnet() -> SubnetSpec {
    let pool = PoolRange {
        start: Ipv4Addr::new(10, 0, 0, 100),
        end: Ipv4Addr::new(10, 0, 0, 199),
    };
    let mut s = SubnetSpec::new("lab", "10.0.0.0/24".parse().unwrap(), pool)
        .with_lease_time(Duration::from_secs(3600));
    s.gateway = Some(SERVER);
    s.dns = vec![SERVER, Ipv4Addr::new(10, 0, 0, 2)];
    s.domain = Some("lab.internal".into());
    s.mtu = Some(1500);
    s.routes = vec![StaticRoute {
        dest: "10.1.0.0/16".parse().unwrap(),
        via: SERVER,
    }];
    s.options = vec![DhcpOption {
        code: 42,
        data: vec![10, 0, 0, 5],
    }];
    s
}

fn ctx() -> Ctx {
    Ctx {
        server_id: SERVER,
        authoritative: true,
        rapid_commit: false,
    }
}

/// A client datagram built with dhcproto, as a real client would send it.
pub(super) fn packet(kind: M, edit: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
    let mut m = v4::Message::new_with_id(
        0x1234,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.opts_mut().insert(O::MessageType(kind));
    edit(&mut m);
    m.to_vec().unwrap()
}

fn req(kind: M, edit: impl FnOnce(&mut v4::Message)) -> Request {
    let buf = packet(kind, edit);
    Request::decode(&buf, &peek(&buf).unwrap()).unwrap()
}

fn lease(state: LeaseState, ip: Ipv4Addr, left: u64) -> Lease {
    Lease {
        ip,
        subnet: "lab".into(),
        client: ClientKey::Mac(MAC),
        state,
        expires_at: now() + Duration::from_secs(left),
        updated_at: now(),
        hostname: None,
    }
}

fn run(r: &Request, l: Option<&Lease>) -> Action {
    handle(r, &subnet(), l, &ctx(), now())
}

fn decode(reply: &Reply) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(&reply.bytes)).unwrap()
}

/// Option codes of a reply in wire order.
fn codes(reply: &Reply) -> Vec<u8> {
    let b = &reply.bytes[240..];
    let (mut i, mut out) = (0, vec![]);
    while b[i] != 255 {
        out.push(b[i]);
        i += 2 + usize::from(b[i + 1]);
    }
    out
}

fn reply_of(a: Action) -> Reply {
    match a {
        Action::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn done_reply(d: Done) -> Reply {
    match d {
        Done::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn commit(r: &Request, l: Lease) -> Reply {
    done_reply(after(
        r,
        &subnet(),
        &ctx(),
        Op::Commit { rapid: false },
        Ok(l),
        now(),
    ))
}

fn init_reboot(ip: Ipv4Addr) -> Request {
    req(M::Request, |m| {
        m.opts_mut().insert(O::RequestedIpAddress(ip));
    })
}

mod handler {
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
}

mod reply {
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
}
