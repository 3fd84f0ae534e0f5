//! The pure core: a decoded message, its subnet, the client's current lease
//! and `now` in; what to do out. No sockets, no clock, no store: the worker
//! performs the IPAM operation an [`Action`] names, then calls [`after`] to
//! turn its result into a reply.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use dhcproto::v4::MessageType;

use super::reply::{build, Grant, Reply, ACK, NAK, OFFER};
use super::request::Request;
use crate::ipam::{IpamError, Lease, LeaseState, SubnetSpec};
use crate::stats::DropReason;

/// The server's settings the handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub server_id: Ipv4Addr,
    /// NAK requests for addresses that are not the client's (else stay silent).
    pub authoritative: bool,
    /// Answer DISCOVER + option 80 with an ACK (RFC 4039).
    pub rapid_commit: bool,
}

/// What the handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this now; no IPAM operation (answered from memory, NAK, INFORM).
    Reply(Reply),
    /// `ipam.offer(..)`, then [`after`] builds the OFFER (or, with `rapid`,
    /// `ipam.bind(..)` of the offered address first, then an ACK).
    Offer {
        requested: Option<Ipv4Addr>,
        new: bool,
        rapid: bool,
    },
    /// `ipam.bind(..)` (durable), then ACK. `new`: the client holds no live
    /// lease or offer here (the new-lease cap applies).
    Bind { ip: Ipv4Addr, new: bool },
    /// `ipam.renew(..)` (no write inside the cache threshold), then ACK.
    Renew { ip: Ipv4Addr, rapid: bool },
    /// `ipam.release(..)`; no reply.
    Release { ip: Ipv4Addr },
    /// `ipam.decline(..)` (quarantine); no reply.
    Decline { ip: Ipv4Addr },
    /// The client chose another server: release our offer; no reply.
    Forget { ip: Ipv4Addr },
    /// Handled; no reply is due.
    Silent,
    /// Refused, for this reason.
    Drop(DropReason),
}

/// Decides what to do with `req` from a client in `subnet` whose current
/// lease (any subnet, any state) is `lease`.
pub fn handle(
    req: &Request,
    subnet: &SubnetSpec,
    lease: Option<&Lease>,
    ctx: &Ctx,
    now: SystemTime,
) -> Action {
    let mine = lease.filter(|l| l.subnet == subnet.id && l.client == req.client);
    let case = Case {
        req,
        subnet,
        mine,
        ctx,
        now,
    };
    match req.kind {
        MessageType::Discover => discover(case),
        MessageType::Request => request(case),
        MessageType::Decline => match (ours(req, ctx), req.requested_ip, mine) {
            (true, Some(ip), Some(l)) if l.ip == ip => Action::Decline { ip },
            _ => Action::Silent,
        },
        MessageType::Release => match (ours(req, ctx), mine) {
            (true, Some(l)) if l.ip == req.ciaddr => Action::Release { ip: l.ip },
            _ => Action::Silent,
        },
        MessageType::Inform => {
            Action::Reply(build(req, ACK, ctx.server_id, None, Some(subnet), false))
        }
        _ => Action::Drop(DropReason::NotForUs),
    }
}

/// One message to decide on: the client's lease in this subnet, if any, is
/// `mine`.
#[derive(Clone, Copy)]
struct Case<'a> {
    req: &'a Request,
    subnet: &'a SubnetSpec,
    mine: Option<&'a Lease>,
    ctx: &'a Ctx,
    now: SystemTime,
}

/// The server identifier, if present, names us.
fn ours(req: &Request, ctx: &Ctx) -> bool {
    req.server_id.is_none_or(|s| s == ctx.server_id)
}

fn live(l: &Lease, state: LeaseState, now: SystemTime) -> bool {
    l.state == state && l.expires_at > now
}

fn discover(c: Case<'_>) -> Action {
    let rapid = c.ctx.rapid_commit && c.req.rapid_commit;
    match c.mine {
        Some(l) if live(l, LeaseState::Bound, c.now) && rapid => Action::Renew { ip: l.ip, rapid },
        // A client holding a lease or a fresh offer: answered from memory.
        Some(l)
            if (live(l, LeaseState::Bound, c.now) || live(l, LeaseState::Offered, c.now))
                && !rapid =>
        {
            Action::Reply(offer(c.req, c.subnet, c.ctx, l, c.now))
        }
        Some(l) if live(l, LeaseState::Offered, c.now) => Action::Offer {
            requested: Some(l.ip),
            new: false,
            rapid,
        },
        _ => Action::Offer {
            requested: c.req.requested_ip,
            new: true,
            rapid,
        },
    }
}

fn request(c: Case<'_>) -> Action {
    let refuse = || {
        if c.ctx.authoritative {
            Action::Reply(nak(c.req, c.ctx))
        } else {
            Action::Silent
        }
    };
    let bound = |l: &Lease| live(l, LeaseState::Bound, c.now);
    if let Some(sid) = c.req.server_id {
        // SELECTING: option 54 names the chosen server.
        if sid != c.ctx.server_id {
            return match c.mine {
                Some(l) if l.state == LeaseState::Offered => Action::Forget { ip: l.ip },
                _ => Action::Silent,
            };
        }
        let Some(ip) = c
            .req
            .requested_ip
            .or(Some(c.req.ciaddr).filter(|a| !a.is_unspecified()))
        else {
            return Action::Drop(DropReason::Malformed);
        };
        return match c.mine {
            _ if !c.subnet.cidr.contains(&ip) => Action::Reply(nak(c.req, c.ctx)),
            Some(l) if l.ip == ip && bound(l) => Action::Renew { ip, rapid: false },
            Some(l) => Action::Bind {
                ip,
                new: !(l.ip == ip && live(l, LeaseState::Offered, c.now)),
            },
            None => Action::Bind { ip, new: true },
        };
    }
    if c.req.ciaddr.is_unspecified() {
        // INIT-REBOOT: verifying a remembered address.
        let Some(ip) = c.req.requested_ip else {
            return Action::Drop(DropReason::Malformed);
        };
        return match c.mine {
            _ if !c.subnet.cidr.contains(&ip) => refuse(),
            Some(l) if l.ip == ip && bound(l) => Action::Renew { ip, rapid: false },
            Some(l) if l.ip == ip => Action::Bind { ip, new: false },
            // No record of this client (RFC 2131 4.3.2: NAK when
            // authoritative, else silence): a new lease comes only through
            // DISCOVER, where every cap applies; the NAK sends it there.
            Some(_) | None => refuse(),
        };
    }
    // RENEWING (unicast) or REBINDING (broadcast): ciaddr is the address.
    let ip = c.req.ciaddr;
    match c.mine {
        _ if !c.subnet.cidr.contains(&ip) => refuse(),
        Some(l) if l.ip == ip && l.state == LeaseState::Bound => Action::Renew { ip, rapid: false },
        Some(l) if l.ip == ip => Action::Bind { ip, new: false },
        _ => refuse(),
    }
}

/// An OFFER of lease `l`.
fn offer(req: &Request, subnet: &SubnetSpec, ctx: &Ctx, l: &Lease, now: SystemTime) -> Reply {
    let grant = Grant::offer(subnet, l, now);
    build(req, OFFER, ctx.server_id, Some(grant), Some(subnet), false)
}

pub fn nak(req: &Request, ctx: &Ctx) -> Reply {
    build(req, NAK, ctx.server_id, None, None, false)
}

/// What the worker reports back after performing an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Reply(Reply),
    Silent,
    Drop(DropReason),
}

/// Which operation a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Offer,
    /// bind or renew; `rapid` = answering a rapid-commit DISCOVER.
    Commit {
        rapid: bool,
    },
}

/// Turns an IPAM result into the reply (pure).
pub fn after(
    req: &Request,
    subnet: &SubnetSpec,
    ctx: &Ctx,
    op: Op,
    result: Result<Lease, IpamError>,
    now: SystemTime,
) -> Done {
    match (op, result) {
        (Op::Offer, Ok(l)) => Done::Reply(offer(req, subnet, ctx, &l, now)),
        (Op::Commit { rapid }, Ok(l)) => Done::Reply(build(
            req,
            ACK,
            ctx.server_id,
            Some(Grant::ack(subnet, &l, now)),
            Some(subnet),
            rapid,
        )),
        (_, Err(e)) => refused(req, ctx, op, &e),
    }
}

fn refused(req: &Request, ctx: &Ctx, op: Op, e: &IpamError) -> Done {
    match e {
        IpamError::PoolExhausted { .. } => Done::Drop(DropReason::PoolExhausted),
        // No OFFER, no ACK, no NAK: the client's port holds its cap.
        IpamError::PortFull { .. } => Done::Drop(DropReason::PortCap),
        IpamError::UnknownSubnet(_) => Done::Drop(DropReason::NoSubnet),
        IpamError::NotOwner { .. }
        | IpamError::AddressTaken { .. }
        | IpamError::Reserved { .. }
        | IpamError::NotInSubnet { .. }
        | IpamError::NoLease => match op {
            Op::Commit { rapid: false } if ctx.authoritative || req.server_id.is_some() => {
                Done::Reply(nak(req, ctx))
            }
            _ => Done::Silent,
        },
        _ => Done::Drop(DropReason::Storage),
    }
}
