//! Pure handler tests: every message type and client state, `now` passed
//! in ([`handler`]), and reply encoding ([`reply`]). Shared helpers here.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{self, DhcpOption as O, MessageType as M, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::handler::{after, handle, Action, Ctx, Done, Op};
use super::ipam::{DhcpOption, IpamError, Lease, LeaseState, PoolRange, StaticRoute, SubnetSpec};
use super::reply::{Dest, Reply};
use super::request::Request;
use super::wire::peek;
use crate::client::ClientKey;
use crate::stats::{DhcpOutcome, DropReason};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn subnet() -> SubnetSpec {
    SubnetSpec {
        id: "lab".into(),
        cidr: "10.0.0.0/24".parse().unwrap(),
        pools: vec![PoolRange {
            start: Ipv4Addr::new(10, 0, 0, 100),
            end: Ipv4Addr::new(10, 0, 0, 199),
        }],
        exclude: vec![],
        gateway: Some(SERVER),
        dns: vec![SERVER, Ipv4Addr::new(10, 0, 0, 2)],
        domain: Some("lab.internal".into()),
        lease_time: Duration::from_secs(3600),
        renew_time: None,
        rebind_time: None,
        mtu: Some(1500),
        routes: vec![StaticRoute {
            dest: "10.1.0.0/16".parse().unwrap(),
            via: SERVER,
        }],
        options: vec![DhcpOption {
            code: 42,
            data: vec![10, 0, 0, 5],
        }],
        relays: vec![],
    }
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

mod handler;
mod reply;
