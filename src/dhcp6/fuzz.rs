//! Entry points for the fuzz targets (`fuzz/`) and the tests that run the
//! same code in CI: arbitrary bytes through the relay envelope, the
//! decoder, the handler and every kind of IPAM answer (must not panic,
//! every reply decodable), and relay chain round trips.

use dhcproto::v6::Message;
use dhcproto::{Decodable, Decoder};

use super::handler::{answer, plan, Answer, Ctx6, IaAnswer, Plan6, Via};
use super::inbound::{decode, peek};
use super::relay::{forward, unwrap, wrap, RelayChain};
use super::reply::Lease6;
use super::request::{LinkLayer, Request6};
use super::wire::{walk, Budget, HOP_COUNT_LIMIT, MAX_HINTS, MAX_IAS, MAX_ORO};
use crate::config::Subnet6Config;

fn subnet() -> Subnet6Config {
    Subnet6Config {
        dns: vec![std::net::Ipv6Addr::LOCALHOST; 3],
        domain: Some("fuzz.internal".into()),
        ..Subnet6Config::new("fuzz6", "fd00:77::/64".parse().unwrap_or_default())
    }
}

/// Arbitrary bytes → relay envelope → decode → handler → every answer.
/// Returns the number of replies built (so the work is not optimised away).
pub fn packet(data: &[u8]) -> usize {
    let peeked = peek(data);
    let Ok((chain, req)) = decode(data) else {
        return 0;
    };
    // Whatever decodes, peek saw the same identity.
    let p = peeked.unwrap_or_else(|e| panic!("decoded, but peek refused: {e:?}"));
    assert_eq!(p.duid, req.client_duid(), "peek's DUID");
    assert_eq!(p.hops, chain.levels.len());
    let lladdr = p.lladdr.and_then(|v| LinkLayer::parse(v).ok());
    assert_eq!(lladdr, req.lladdr, "peek's link-layer address");
    bounded(&req, &chain);
    let _ = (req.mac(), chain.port());
    let subnet = subnet();
    let mut replies = 0;
    for rapid_commit in [false, true] {
        let ctx = Ctx6 {
            server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1],
            rapid_commit,
            sol_max_rt: 3600,
            inf_max_rt: 3600,
        };
        for via in [Via::Multicast, Via::Unicast, Via::Relayed] {
            for s in [None, Some(&subnet)] {
                match plan(&req, via, s, &ctx) {
                    Plan6::Reply(r) => replies += check(&chain, &r.bytes),
                    Plan6::Ipam(op) => {
                        for ans in answers(&req) {
                            replies += check(&chain, &answer(&req, s, &ctx, op, &ans).bytes);
                        }
                    }
                    Plan6::Silent | Plan6::Drop(_) => {}
                }
            }
        }
    }
    replies
}

/// Whatever decodes stays inside the wire bounds.
fn bounded(req: &Request6, chain: &RelayChain) {
    assert!(chain.levels.len() <= HOP_COUNT_LIMIT);
    assert!(req.ia_na.len() + req.ia_pd.len() <= MAX_IAS);
    let hints = req.ia_na.iter().map(|i| i.hints.len());
    assert!(hints
        .chain(req.ia_pd.iter().map(|i| i.hints.len()))
        .all(|n| n <= MAX_HINTS));
    assert!(req.oro.len() <= MAX_ORO);
}

/// Every kind of answer for every IA of `req`: leases (one each, the
/// client's own hints), exhausted, no binding, not on link, none.
fn answers(req: &Request6) -> Vec<Answer> {
    let lease = |p| Lease6 {
        prefix: p,
        preferred: 1800,
        valid: 3600,
    };
    let leases = Answer {
        na: req
            .ia_na
            .iter()
            .map(|ia| {
                let ls = ia.hints.iter().map(|&a| lease(a.into())).collect();
                (ia.iaid, IaAnswer::Leases(ls))
            })
            .collect(),
        pd: req
            .ia_pd
            .iter()
            .map(|ia| {
                (
                    ia.iaid,
                    IaAnswer::Leases(ia.hints.iter().map(|&p| lease(p)).collect()),
                )
            })
            .collect(),
    };
    let all = |a: IaAnswer| Answer {
        na: req.ia_na.iter().map(|ia| (ia.iaid, a.clone())).collect(),
        pd: req.ia_pd.iter().map(|ia| (ia.iaid, a.clone())).collect(),
    };
    vec![
        leases,
        all(IaAnswer::Exhausted),
        all(IaAnswer::NoBinding),
        all(IaAnswer::NotOnLink),
        Answer::default(),
    ]
}

/// Our reply must decode with dhcproto, and its Relay-Repl envelope must
/// peel back to it.
fn check(chain: &RelayChain, reply: &[u8]) -> usize {
    assert!(
        Message::decode(&mut Decoder::new(reply)).is_ok(),
        "undecodable reply"
    );
    peel(chain, reply);
    1
}

/// `wrap(chain, reply)` taken apart level by level: each level's header
/// and Interface-Id echoed, `reply` inside.
fn peel(chain: &RelayChain, reply: &[u8]) {
    let mut msg = wrap(chain, reply);
    for level in &chain.levels {
        assert_eq!(msg.first(), Some(&13), "Relay-Repl");
        assert_eq!(msg.get(1), Some(&level.hop_count));
        let mut inner = None;
        let mut id = None;
        let walked = walk(
            msg.get(34..).unwrap_or_default(),
            &Budget::new(4),
            |c, v| {
                match c {
                    9 => inner = Some(v.to_vec()),
                    18 => id = Some(v.to_vec()),
                    _ => {}
                }
                Ok(())
            },
        );
        assert!(walked.is_ok(), "Relay-Repl framing");
        assert_eq!(
            id.as_deref(),
            level.interface_id.as_deref(),
            "Interface-Id echoed"
        );
        msg = inner.unwrap_or_default();
    }
    assert_eq!(msg, reply);
}

/// A decoded chain, put back around its message, decodes to the same.
pub fn relay_round_trip(data: &[u8]) {
    let Ok((chain, inner)) = unwrap(data) else {
        return;
    };
    let again = forward(&chain, inner);
    let got = unwrap(&again);
    assert_eq!(got, Ok((chain.clone(), inner)), "relay round trip");
    peel(&chain, inner);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dhcp6::relay::RelayLevel;
    use crate::dhcp6::request::LinkLayer;
    use crate::dhcp6::wire::put;

    /// A Solicit with two IAs, hints, ORO and rapid commit.
    fn solicit() -> Vec<u8> {
        let mut m = vec![1, 1, 2, 3];
        put(&mut m, 1, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9]);
        let mut na = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut addr = vec![0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5];
        addr.extend_from_slice(&[0; 8]);
        put(&mut na, 5, &addr);
        put(&mut m, 3, &na);
        let mut pd = vec![0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut p = vec![0; 8];
        p.push(56);
        p.extend_from_slice(&[0; 16]);
        put(&mut pd, 26, &p);
        put(&mut m, 25, &pd);
        put(&mut m, 6, &[0, 23, 0, 24, 0, 82]);
        put(&mut m, 14, &[]);
        m
    }

    fn level() -> impl Strategy<Value = RelayLevel> {
        (
            0u8..32,
            any::<u128>(),
            any::<u128>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
            proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 1..=20))),
        )
            .prop_map(|(hop_count, link, peer, id, ll)| RelayLevel {
                hop_count,
                link: link.into(),
                peer: peer.into(),
                interface_id: id.map(Into::into),
                lladdr: ll.map(|(htype, addr)| LinkLayer {
                    htype,
                    addr: addr.into(),
                }),
            })
    }

    #[test]
    fn the_good_solicit_is_answered_directly_and_relayed() {
        assert!(packet(&solicit()) > 0);
        let chain = RelayChain {
            levels: vec![RelayLevel {
                hop_count: 0,
                link: "fd00:77::1".parse().unwrap(),
                peer: "fe80::9".parse().unwrap(),
                interface_id: Some(b"eth1".to_vec().into()),
                lladdr: Some(LinkLayer {
                    htype: 1,
                    addr: vec![2, 0, 0, 0, 0, 9].into(),
                }),
            }],
        };
        let relayed = forward(&chain, &solicit());
        assert!(packet(&relayed) > 0);
        relay_round_trip(&relayed);
    }

    /// Truncations and corruptions of a good relayed Solicit at every byte.
    #[test]
    fn every_truncation_and_byte_flip_is_handled() {
        let chain = RelayChain {
            levels: vec![RelayLevel {
                hop_count: 1,
                link: "fd00:77::1".parse().unwrap(),
                peer: "fe80::9".parse().unwrap(),
                interface_id: Some(b"x".to_vec().into()),
                lladdr: None,
            }],
        };
        let good = forward(&chain, &solicit());
        for n in 0..good.len() {
            packet(&good[..n]);
            relay_round_trip(&good[..n]);
            for flip in [0x00, 0xff, 0x80] {
                let mut b = good.clone();
                b[n] = flip;
                packet(&b);
                relay_round_trip(&b);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn random_relay_chains_round_trip(
            levels in proptest::collection::vec(level(), 0..=HOP_COUNT_LIMIT),
        ) {
            let chain = RelayChain { levels };
            let bytes = forward(&chain, &solicit());
            match unwrap(&bytes) {
                Ok((got, inner)) => {
                    prop_assert_eq!(&got, &chain);
                    prop_assert_eq!(inner, &solicit()[..]);
                    check(&chain, b"\x07\x01\x02\x03");
                    prop_assert!(packet(&bytes) > 0);
                }
                // Only a chain too big for one datagram may be refused.
                Err(e) => prop_assert!(bytes.len() > super::super::wire::MAX_DATAGRAM, "{e:?}"),
            }
        }

        #[test]
        fn random_bytes_do_not_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            packet(&data);
            relay_round_trip(&data);
        }

        /// Random bytes after a valid header get much further than random bytes.
        #[test]
        fn random_options_do_not_panic(
            kind in prop_oneof![Just(1u8), Just(3), Just(5), Just(11), Just(12)],
            opts in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut b = vec![kind, 0, 0, 0];
            if kind == 12 {
                b.extend_from_slice(&[0; 30]);
            }
            b.extend_from_slice(&opts);
            packet(&b);
            relay_round_trip(&b);
        }
    }
}
