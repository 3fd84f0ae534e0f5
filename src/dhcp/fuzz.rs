//! Entry points for the fuzz target (`fuzz/`) and the tests that run the
//! same code in CI: arbitrary bytes through admission's peek, the decoder
//! and the handler (must not panic), and a decode/encode/decode round trip.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};

use super::handler::{after, handle, Action, Ctx, Done, Op};
use super::request::Request;
use super::wire::{peek, peek_mac};
use crate::ipam::{DhcpOption, IpamError, Lease, LeaseState, PoolRange, StaticRoute, SubnetSpec};

fn subnet() -> SubnetSpec {
    let ip = Ipv4Addr::new;
    SubnetSpec {
        id: "fuzz".into(),
        cidr: ipnet::Ipv4Net::new(ip(10, 0, 0, 0), 24).unwrap_or_default(),
        pools: vec![PoolRange {
            start: ip(10, 0, 0, 10),
            end: ip(10, 0, 0, 250),
        }],
        exclude: vec![],
        gateway: Some(ip(10, 0, 0, 1)),
        dns: vec![ip(10, 0, 0, 1)],
        domain: Some("fuzz.internal".into()),
        lease_time: Duration::from_secs(600),
        renew_time: None,
        rebind_time: None,
        mtu: Some(1400),
        routes: vec![StaticRoute {
            dest: ipnet::Ipv4Net::default(),
            via: ip(10, 0, 0, 1),
        }],
        options: vec![DhcpOption {
            code: 43,
            data: vec![1; 300],
        }],
        relays: vec![],
    }
}

/// Arbitrary bytes → peek → decode → handler → every IPAM outcome. Returns
/// the number of replies built (so the work is not optimised away).
pub fn packet(data: &[u8]) -> usize {
    let _ = peek_mac(data);
    let Ok(p) = peek(data) else { return 0 };
    let Ok(req) = Request::decode(data, &p) else {
        return 0;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let subnet = subnet();
    let mut replies = 0;
    for rapid_commit in [false, true] {
        let ctx = Ctx {
            server_id: Ipv4Addr::new(10, 0, 0, 1),
            authoritative: !rapid_commit,
            rapid_commit,
        };
        for lease in leases(&req, now) {
            let action = handle(&req, &subnet, lease.as_ref(), &ctx, now);
            replies += usize::from(matches!(action, Action::Reply(_)));
            let ok = lease.clone().unwrap_or_else(|| fresh(&req, now));
            for op in [
                Op::Offer,
                Op::Commit { rapid: false },
                Op::Commit { rapid: true },
            ] {
                for res in [
                    Ok(ok.clone()),
                    Err(IpamError::NotOwner { ip: ok.ip }),
                    Err(IpamError::NoLease),
                ] {
                    if let Done::Reply(r) = after(&req, &subnet, &ctx, op, res, now) {
                        check_reply(&r.bytes);
                        replies += 1;
                    }
                }
            }
        }
    }
    replies
}

fn fresh(req: &Request, now: SystemTime) -> Lease {
    Lease {
        ip: req.requested_ip.unwrap_or(Ipv4Addr::new(10, 0, 0, 10)),
        subnet: "fuzz".into(),
        client: req.client.clone(),
        state: LeaseState::Bound,
        expires_at: now + Duration::from_secs(600),
        updated_at: now,
        hostname: None,
    }
}

/// No lease, and one in each state at the requested address or ciaddr.
fn leases(req: &Request, now: SystemTime) -> Vec<Option<Lease>> {
    let mut v = vec![None];
    for state in LeaseState::ALL {
        let mut l = fresh(req, now);
        l.state = state;
        if !req.ciaddr.is_unspecified() {
            l.ip = req.ciaddr;
        }
        v.push(Some(l));
    }
    v
}

/// Our replies must be within the size limit and decodable.
fn check_reply(b: &[u8]) {
    assert!(
        b.len() <= super::options::MAX_PAYLOAD,
        "reply of {} bytes",
        b.len()
    );
    let m = Message::decode(&mut Decoder::new(b));
    assert!(
        m.is_ok_and(|m| m.opts().msg_type().is_some()),
        "undecodable reply"
    );
}

/// Decode → encode → decode must not change what the server reads from a
/// message (option 82 aside: it is echoed from the raw bytes, never
/// re-encoded, because dhcproto normalises its sub-options).
pub fn round_trip(data: &[u8]) {
    let Ok(p) = peek(data) else { return };
    let Ok(first) = Request::decode(data, &p) else {
        return;
    };
    let Ok(msg) = Message::decode(&mut Decoder::new(data)) else {
        return;
    };
    let Ok(bytes) = msg.to_vec() else { return };
    let again = peek(&bytes).and_then(|p2| Request::decode(&bytes, &p2));
    let same = again.is_ok_and(|mut r| {
        r.relay_info.clone_from(&first.relay_info);
        r == first
    });
    assert!(same, "round trip changed the message");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dhcp::tests::packet as client;
    use dhcproto::v4::{DhcpOption as O, MessageType as M};

    fn crafted() -> Vec<Vec<u8>> {
        let good = client(M::Discover, |m| {
            m.opts_mut().insert(O::ParameterRequestList(vec![
                1.into(),
                3.into(),
                43.into(),
                121.into(),
            ]));
        });
        let end = good.len() - 1;
        let mut v = vec![
            vec![],
            vec![1; 20],
            good[..239].to_vec(),
            good[..240].to_vec(),
            good.clone(),
        ];
        for (at, byte) in [(0, 2), (2, 17), (2, 255), (236, 0), (end, 0)] {
            let mut b = good.clone();
            b[at] = byte;
            v.push(b);
        }
        let mut long = good.clone();
        long.resize(4000, 0);
        v.push(long);
        let mut overload = good[..end].to_vec();
        overload.extend_from_slice(&[52, 1, 3, 255]);
        overload[44] = 53;
        overload[45] = 63;
        v.push(overload);
        let mut zero_id = good[..end].to_vec();
        zero_id.extend_from_slice(&[61, 0, 255]);
        v.push(zero_id);
        v
    }

    #[test]
    fn crafted_inputs_do_not_panic() {
        for c in crafted() {
            packet(&c);
            round_trip(&c);
        }
        assert!(packet(&crafted()[4]) > 0, "the good one is answered");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_do_not_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            packet(&data);
            round_trip(&data);
        }

        /// Random mutations of a valid packet get much further than random bytes.
        #[test]
        fn mutated_packets_do_not_panic(edits in proptest::collection::vec((240usize..400, any::<u8>()), 1..8)) {
            let mut b = client(M::Request, |m| {
                m.opts_mut().insert(O::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 20)));
                m.opts_mut().insert(O::Hostname("h".into()));
            });
            b.resize(400, 0);
            for (at, byte) in edits {
                b[at] = byte;
            }
            packet(&b);
            round_trip(&b);
        }
    }
}
