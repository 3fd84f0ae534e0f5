//! The handler, message type by message type: each reply is decoded with
//! dhcproto and checked field by field.

use std::net::Ipv6Addr;

use dhcproto::v6::{
    self, DhcpOption as O, DhcpOptions, Message, MessageType as M, OptionCode as C, Status, IANA,
    IAPD,
};
use dhcproto::{Decodable, Decoder, Encodable};

use super::handler::{answer, plan, Answer, Ctx6, IaAnswer, Op6, Plan6, Via};
use super::reply::Lease6;
use super::request::Request6;
use crate::config::Subnet6Config;
use crate::stats::DropReason;

const CLIENT: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 9];
const SERVER: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 1];
const OTHER: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0, 2];

fn ctx() -> Ctx6 {
    let text = "[dhcp6]\nrapid_commit = true\ninf_max_rt = \"2h\"";
    let cfg = crate::config::Config::parse(text, "t").unwrap();
    let ctx = Ctx6::new(&cfg.dhcp6, SERVER.to_vec());
    assert_eq!((ctx.sol_max_rt, ctx.inf_max_rt), (3600, 7200));
    ctx
}

fn subnet() -> Subnet6Config {
    Subnet6Config {
        dns: vec!["fd00:77::1".parse().unwrap()],
        domain: Some("lab.internal".into()),
        ..Subnet6Config::new("lab6", "fd00:77::/64".parse().unwrap())
    }
}

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A client message: client id, IA_NA 1 (hint `hint`), IA_PD 2, ORO 23/24,
/// plus `more`.
fn msg(kind: M, hint: Option<&str>, more: Vec<O>) -> Request6 {
    let mut m = Message::new_with_id(kind, [7, 8, 9]);
    let mut na = DhcpOptions::new();
    if let Some(h) = hint {
        na.insert(O::IAAddr(v6::IAAddr {
            addr: ip(h),
            preferred_life: 0,
            valid_life: 0,
            opts: DhcpOptions::new(),
        }));
    }
    let o = m.opts_mut();
    o.insert(O::ClientId(CLIENT.to_vec()));
    o.insert(O::IANA(IANA {
        id: 1,
        t1: 0,
        t2: 0,
        opts: na,
    }));
    o.insert(O::IAPD(IAPD {
        id: 2,
        t1: 0,
        t2: 0,
        opts: DhcpOptions::new(),
    }));
    o.insert(O::ORO(v6::ORO {
        opts: vec![C::DomainNameServers, C::DomainSearchList],
    }));
    for x in more {
        o.insert(x);
    }
    Request6::decode(&m.to_vec().unwrap()).unwrap()
}

fn granted() -> Answer {
    Answer {
        na: vec![(
            1,
            IaAnswer::Leases(vec![Lease6::addr(ip("fd00:77::105"), 1800, 3600)]),
        )],
        pd: vec![(
            2,
            IaAnswer::Leases(vec![Lease6 {
                prefix: "fd00:78:0:100::/56".parse().unwrap(),
                preferred: 1000,
                valid: 3600,
            }]),
        )],
    }
}

fn both(a: IaAnswer) -> Answer {
    Answer {
        na: vec![(1, a.clone())],
        pd: vec![(2, a)],
    }
}

/// The plan, and (for an IPAM plan) the reply built from `ans`, decoded.
fn run(req: &Request6, via: Via, ctx: &Ctx6, ans: &Answer) -> (Plan6, Option<Message>) {
    let s = subnet();
    let p = plan(req, via, Some(&s), ctx);
    let bytes = match &p {
        Plan6::Reply(r) => Some(r.bytes.clone()),
        Plan6::Ipam(op) => Some(answer(req, Some(&s), ctx, *op, ans).bytes),
        _ => None,
    };
    let m = bytes.map(|b| Message::decode(&mut Decoder::new(&b)).expect("decodable reply"));
    (p, m)
}

fn status(opts: &DhcpOptions) -> Option<Status> {
    match opts.get(C::StatusCode) {
        Some(O::StatusCode(s)) => Some(s.status),
        _ => None,
    }
}

fn iana(m: &Message) -> &IANA {
    match m.opts().get(C::IANA) {
        Some(O::IANA(ia)) => ia,
        other => panic!("no IA_NA: {other:?}"),
    }
}

fn iapd(m: &Message) -> &IAPD {
    match m.opts().get(C::IAPD) {
        Some(O::IAPD(ia)) => ia,
        other => panic!("no IA_PD: {other:?}"),
    }
}

fn seconds(m: &Message, code: C) -> Option<u32> {
    match m.opts().get(code) {
        Some(O::Unknown(u)) => u.data().try_into().ok().map(u32::from_be_bytes),
        _ => None,
    }
}

/// The identifiers every reply carries, and the transaction id.
fn ids(m: &Message, client: bool) {
    assert_eq!(m.xid(), [7, 8, 9]);
    assert_eq!(
        m.opts().get(C::ServerId),
        Some(&O::ServerId(SERVER.to_vec()))
    );
    let want = client.then(|| O::ClientId(CLIENT.to_vec()));
    assert_eq!(m.opts().get(C::ClientId), want.as_ref());
}

fn granted_ias(m: &Message) {
    let na = iana(m);
    assert_eq!((na.id, na.t1, na.t2), (1, 900, 1440));
    match na.opts.get(C::IAAddr) {
        Some(O::IAAddr(a)) => {
            assert_eq!(
                (a.addr, a.preferred_life, a.valid_life),
                (ip("fd00:77::105"), 1800, 3600)
            )
        }
        other => panic!("no IAADDR: {other:?}"),
    }
    let pd = iapd(m);
    assert_eq!((pd.id, pd.t1, pd.t2), (2, 500, 800));
    match pd.opts.get(C::IAPrefix) {
        Some(O::IAPrefix(p)) => {
            assert_eq!((p.prefix_ip, p.prefix_len), (ip("fd00:78:0:100::"), 56));
            assert_eq!((p.preferred_lifetime, p.valid_lifetime), (1000, 3600));
        }
        other => panic!("no IAPREFIX: {other:?}"),
    }
}

fn config_options(m: &Message) {
    assert_eq!(
        m.opts().get(C::DomainNameServers),
        Some(&O::DomainNameServers(vec![ip("fd00:77::1")]))
    );
    match m.opts().get(C::DomainSearchList) {
        Some(O::DomainSearchList(names)) => {
            assert_eq!(names.len(), 1);
            assert!(names[0].to_ascii().starts_with("lab.internal"), "{names:?}");
        }
        other => panic!("no domain list: {other:?}"),
    }
}

#[test]
fn solicit_gets_an_advertise_or_with_rapid_commit_a_reply() {
    let no_rapid = Ctx6 {
        rapid_commit: false,
        ..ctx()
    };
    let rows: [(&str, Request6, &Ctx6, M, bool); 3] = [
        (
            "plain",
            msg(M::Solicit, None, vec![]),
            &ctx(),
            M::Advertise,
            false,
        ),
        (
            "rapid",
            msg(M::Solicit, None, vec![O::RapidCommit]),
            &ctx(),
            M::Reply,
            true,
        ),
        (
            "rapid off",
            msg(M::Solicit, None, vec![O::RapidCommit]),
            &no_rapid,
            M::Advertise,
            false,
        ),
    ];
    for (name, req, ctx, kind, rapid) in rows {
        let (p, m) = run(&req, Via::Multicast, ctx, &granted());
        let op = if rapid { Op6::Commit } else { Op6::Advertise };
        assert_eq!(p, Plan6::Ipam(op), "{name}");
        let m = m.unwrap();
        assert_eq!(m.msg_type(), kind, "{name}");
        ids(&m, true);
        granted_ias(&m);
        config_options(&m);
        assert_eq!(m.opts().get(C::RapidCommit).is_some(), rapid, "{name}");
        let sol = (kind == M::Advertise).then_some(3600);
        assert_eq!(
            seconds(&m, C::SolMaxRt),
            sol,
            "{name}: SOL_MAX_RT on Advertise"
        );
    }
    // Nothing left: each IA says so with its own status.
    let (_, m) = run(
        &msg(M::Solicit, None, vec![]),
        Via::Relayed,
        &ctx(),
        &both(IaAnswer::Exhausted),
    );
    let m = m.unwrap();
    assert_eq!(status(&iana(&m).opts), Some(Status::NoAddrsAvail));
    assert_eq!(status(&iapd(&m).opts), Some(Status::NoPrefixAvail));
    assert_eq!((iana(&m).t1, iana(&m).t2), (0, 0));
    // An IA the IPAM did not answer for counts as exhausted.
    let (_, m) = run(
        &msg(M::Solicit, None, vec![]),
        Via::Multicast,
        &ctx(),
        &Answer::default(),
    );
    assert_eq!(status(&iana(&m.unwrap()).opts), Some(Status::NoAddrsAvail));
}

#[test]
fn messages_in_the_wrong_form_are_dropped_or_told_to_multicast() {
    let mine = || O::ServerId(SERVER.to_vec());
    let theirs = || O::ServerId(OTHER.to_vec());
    let mut anonymous = msg(M::Solicit, None, vec![]);
    anonymous.client = None;
    let mut ir_with_ia = msg(M::InformationRequest, None, vec![]);
    ir_with_ia.client = None;
    let rows: Vec<(&str, Request6, Via, Plan6)> = vec![
        (
            "solicit unicast",
            msg(M::Solicit, None, vec![]),
            Via::Unicast,
            Plan6::Drop(DropReason::NotForUs),
        ),
        (
            "solicit naming a server",
            msg(M::Solicit, None, vec![mine()]),
            Via::Multicast,
            Plan6::Drop(DropReason::Malformed),
        ),
        (
            "solicit without client id",
            anonymous,
            Via::Multicast,
            Plan6::Drop(DropReason::Malformed),
        ),
        (
            "rebind naming a server",
            msg(M::Rebind, None, vec![mine()]),
            Via::Multicast,
            Plan6::Drop(DropReason::Malformed),
        ),
        (
            "confirm unicast",
            msg(M::Confirm, None, vec![]),
            Via::Unicast,
            Plan6::Drop(DropReason::NotForUs),
        ),
        (
            "request for another server",
            msg(M::Request, None, vec![theirs()]),
            Via::Multicast,
            Plan6::Drop(DropReason::NotForUs),
        ),
        (
            "request naming no server",
            msg(M::Request, None, vec![]),
            Via::Multicast,
            Plan6::Drop(DropReason::NotForUs),
        ),
        (
            "renew for another server",
            msg(M::Renew, None, vec![theirs()]),
            Via::Relayed,
            Plan6::Drop(DropReason::NotForUs),
        ),
        (
            "information-request with IAs",
            ir_with_ia,
            Via::Multicast,
            Plan6::Drop(DropReason::NotForUs),
        ),
    ];
    for (name, req, via, want) in rows {
        assert_eq!(plan(&req, via, Some(&subnet()), &ctx()), want, "{name}");
    }
    for kind in [M::Request, M::Renew, M::Release, M::Decline] {
        let (p, m) = run(
            &msg(kind, None, vec![mine()]),
            Via::Unicast,
            &ctx(),
            &granted(),
        );
        assert!(matches!(p, Plan6::Reply(_)), "{kind:?}");
        let m = m.unwrap();
        assert_eq!(m.msg_type(), M::Reply);
        ids(&m, true);
        assert_eq!(status(m.opts()), Some(Status::UseMulticast), "{kind:?}");
        assert!(
            m.opts().get(C::IANA).is_none(),
            "UseMulticast carries nothing else"
        );
    }
    let no_subnet = plan(&msg(M::Solicit, None, vec![]), Via::Multicast, None, &ctx());
    assert_eq!(no_subnet, Plan6::Drop(DropReason::NoSubnet));
}

#[test]
fn request_renew_and_rebind_commit_or_say_why_not() {
    let mine = || vec![O::ServerId(SERVER.to_vec())];
    let rows: Vec<(&str, Request6, Op6, Answer)> = vec![
        (
            "request",
            msg(M::Request, None, mine()),
            Op6::Commit,
            granted(),
        ),
        (
            "renew",
            msg(M::Renew, Some("fd00:77::105"), mine()),
            Op6::Extend,
            granted(),
        ),
        (
            "rebind",
            msg(M::Rebind, Some("fd00:77::105"), vec![]),
            Op6::Extend,
            granted(),
        ),
    ];
    for (name, req, op, ans) in rows {
        let (p, m) = run(&req, Via::Relayed, &ctx(), &ans);
        assert_eq!(p, Plan6::Ipam(op), "{name}");
        let m = m.unwrap();
        assert_eq!(m.msg_type(), M::Reply, "{name}");
        ids(&m, true);
        granted_ias(&m);
        config_options(&m);
        assert_eq!(seconds(&m, C::SolMaxRt), None, "{name}: not asked for");
    }
    // Statuses per IA.
    // (case, request, answer, IA_NA status, IA_PD status)
    type Row = (
        &'static str,
        Request6,
        Answer,
        Option<Status>,
        Option<Status>,
    );
    let rows: Vec<Row> = vec![
        (
            "request, none left",
            msg(M::Request, None, mine()),
            both(IaAnswer::Exhausted),
            Some(Status::NoAddrsAvail),
            Some(Status::NoPrefixAvail),
        ),
        (
            "request, off link",
            msg(M::Request, Some("fd00:99::1"), mine()),
            both(IaAnswer::NotOnLink),
            Some(Status::NotOnLink),
            Some(Status::NotOnLink),
        ),
        (
            "renew, no binding",
            msg(M::Renew, Some("fd00:77::105"), mine()),
            both(IaAnswer::NoBinding),
            Some(Status::NoBinding),
            Some(Status::NoBinding),
        ),
        (
            "rebind, no binding",
            msg(M::Rebind, Some("fd00:77::105"), vec![]),
            both(IaAnswer::NoBinding),
            Some(Status::NoBinding),
            Some(Status::NoBinding),
        ),
    ];
    for (name, req, ans, na, pd) in rows {
        let (_, m) = run(&req, Via::Multicast, &ctx(), &ans);
        let m = m.unwrap();
        assert_eq!(status(&iana(&m).opts), na, "{name}");
        assert_eq!(status(&iapd(&m).opts), pd, "{name}");
    }
    // Renewing an address off the link: handed back with lifetimes 0.
    let req = msg(M::Renew, Some("fd00:99::1"), mine());
    let (_, m) = run(&req, Via::Multicast, &ctx(), &both(IaAnswer::NotOnLink));
    match iana(&m.unwrap()).opts.get(C::IAAddr) {
        Some(O::IAAddr(a)) => assert_eq!(
            (a.addr, a.preferred_life, a.valid_life),
            (ip("fd00:99::1"), 0, 0)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn release_and_decline_succeed_naming_only_unbound_ias() {
    for kind in [M::Release, M::Decline] {
        let req = msg(
            kind,
            Some("fd00:77::105"),
            vec![O::ServerId(SERVER.to_vec())],
        );
        let op = if kind == M::Release {
            Op6::Release
        } else {
            Op6::Decline
        };
        let mixed = Answer {
            na: vec![(1, IaAnswer::Leases(vec![]))],
            pd: vec![(2, IaAnswer::NoBinding)],
        };
        let (p, m) = run(&req, Via::Multicast, &ctx(), &mixed);
        assert_eq!(p, Plan6::Ipam(op));
        let m = m.unwrap();
        assert_eq!(m.msg_type(), M::Reply);
        ids(&m, true);
        assert_eq!(status(m.opts()), Some(Status::Success), "{kind:?}");
        assert!(
            m.opts().get(C::IANA).is_none(),
            "{kind:?}: released IA not named"
        );
        assert_eq!(status(&iapd(&m).opts), Some(Status::NoBinding), "{kind:?}");
        assert!(m.opts().get(C::DomainNameServers).is_none());
    }
}

#[test]
fn confirm_answers_from_the_prefix_alone() {
    let rows = [
        ("on link", Some("fd00:77::105"), Some(Status::Success)),
        ("off link", Some("fd00:99::1"), Some(Status::NotOnLink)),
        ("no addresses", None, None),
    ];
    for (name, hint, want) in rows {
        let (p, m) = run(
            &msg(M::Confirm, hint, vec![]),
            Via::Multicast,
            &ctx(),
            &Answer::default(),
        );
        match want {
            None => assert_eq!(p, Plan6::Silent, "{name}"),
            Some(s) => {
                let m = m.unwrap();
                ids(&m, true);
                assert_eq!(status(m.opts()), Some(s), "{name}");
            }
        }
    }
}

#[test]
fn information_request_gets_configuration_and_inf_max_rt() {
    let mut req = msg(M::InformationRequest, None, vec![]);
    req.ia_na.clear();
    req.ia_pd.clear();
    let (p, m) = run(&req, Via::Multicast, &ctx(), &Answer::default());
    assert!(matches!(p, Plan6::Reply(_)));
    let m = m.unwrap();
    assert_eq!(m.msg_type(), M::Reply);
    ids(&m, true);
    config_options(&m);
    assert_eq!(seconds(&m, C::InfMaxRt), Some(7200));
    // Anonymous, and not asking for DNS: identifiers and INF_MAX_RT only.
    req.client = None;
    req.oro.clear();
    let (_, m) = run(&req, Via::Relayed, &ctx(), &Answer::default());
    let m = m.unwrap();
    ids(&m, false);
    assert!(m.opts().get(C::DomainNameServers).is_none());
    assert_eq!(seconds(&m, C::InfMaxRt), Some(7200));
}
