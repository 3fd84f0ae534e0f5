//! The pure DHCPv6 core (RFC 9915 16 and 18.3): a decoded message, how it
//! arrived, its subnet and the server's settings in; what to do out. No
//! sockets, no clock, no store: the server loop performs the IPAM
//! operation a [`Plan6::Ipam`] names for every IA of the request, then
//! calls [`answer`] with what the IPAM said to build the reply.

use dhcproto::v6::{MessageType as M, OptionCode, Status};

use super::reply::{status_text, Builder, IaReply, Lease6, Reply6};
use super::request::Request6;
use crate::config::{Dhcp6Config, Subnet6Config};
use crate::stats::DropReason;

/// The server's settings the handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx6 {
    /// Our DUID (Server Identifier), persisted in the store.
    pub server_duid: Vec<u8>,
    /// Answer Solicit + Rapid Commit with a committed Reply.
    pub rapid_commit: bool,
    /// Seconds, sent as SOL_MAX_RT (82) and INF_MAX_RT (83).
    pub sol_max_rt: u32,
    pub inf_max_rt: u32,
}

impl Ctx6 {
    /// From `[dhcp6]` and the server's DUID (persisted in the store).
    pub fn new(cfg: &Dhcp6Config, server_duid: Vec<u8>) -> Self {
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Self {
            server_duid,
            rapid_commit: cfg.rapid_commit,
            sol_max_rt: secs(cfg.sol_max_rt),
            inf_max_rt: secs(cfg.inf_max_rt),
        }
    }
}

/// How the message reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To ff02::1:2 on a client's link.
    Multicast,
    /// To one of our addresses, straight from the client (we never send
    /// the Server Unicast option, so clients must not do this).
    Unicast,
    /// Inside a Relay-Forw.
    Relayed,
}

/// The IPAM operation a message asks for, on every IA it carries.
pub use crate::ipam::Ia6Op as Op6;

/// What the handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan6 {
    /// Send this now; no IPAM operation (UseMulticast, Confirm, Information-Request).
    Reply(Reply6),
    /// Run `op` for each IA of the request, then call [`answer`].
    Ipam(Op6),
    /// Handled; no reply is due.
    Silent,
    /// Refused, for this reason.
    Drop(DropReason),
}

/// What the IPAM answered for one IA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IaAnswer {
    /// Addresses (IA_NA) or prefixes (IA_PD), with lifetimes.
    Leases(Vec<Lease6>),
    /// Nothing left to give (NoAddrsAvail / NoPrefixAvail).
    Exhausted,
    /// The client holds no binding for this IA.
    NoBinding,
    /// The IA's addresses do not belong on the client's link.
    NotOnLink,
}

/// The IPAM's answers, by IAID, for the request's IA_NAs and IA_PDs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub na: Vec<(u32, IaAnswer)>,
    pub pd: Vec<(u32, IaAnswer)>,
}

/// Decides what to do with `req`, which came `via`, from a client of
/// `subnet` (None: no subnet serves its link).
pub fn plan(req: &Request6, via: Via, subnet: Option<&Subnet6Config>, ctx: &Ctx6) -> Plan6 {
    let has_ia = !(req.ia_na.is_empty() && req.ia_pd.is_empty());
    let ours = req.server_id.as_deref() == Some(ctx.server_duid.as_slice());
    if req.client.is_none() && req.kind != M::InformationRequest {
        return Plan6::Drop(DropReason::Malformed);
    }
    match req.kind {
        // Sent to all servers: must not name one, must come by multicast or relay.
        M::Solicit | M::Rebind | M::Confirm | M::InformationRequest if via == Via::Unicast => {
            Plan6::Drop(DropReason::NotForUs)
        }
        M::Solicit | M::Rebind | M::Confirm if req.server_id.is_some() => {
            Plan6::Drop(DropReason::Malformed)
        }
        // Sent to one server: must name us.
        M::Request | M::Renew | M::Release | M::Decline if !ours => {
            Plan6::Drop(DropReason::NotForUs)
        }
        M::Request | M::Renew | M::Release | M::Decline if via == Via::Unicast => {
            Plan6::Reply(use_multicast(req, ctx))
        }
        M::InformationRequest if has_ia || (req.server_id.is_some() && !ours) => {
            Plan6::Drop(DropReason::NotForUs)
        }
        M::InformationRequest => Plan6::Reply(information(req, subnet, ctx)),
        _ if subnet.is_none() => Plan6::Drop(DropReason::NoSubnet),
        M::Confirm => confirm(req, subnet, ctx),
        M::Solicit if req.rapid_commit && ctx.rapid_commit => Plan6::Ipam(Op6::Commit),
        M::Solicit => Plan6::Ipam(Op6::Advertise),
        M::Request => Plan6::Ipam(Op6::Commit),
        M::Renew | M::Rebind => Plan6::Ipam(Op6::Extend),
        M::Release => Plan6::Ipam(Op6::Release),
        M::Decline => Plan6::Ipam(Op6::Decline),
        _ => Plan6::Drop(DropReason::NotForUs),
    }
}

/// Turns the IPAM's answer to a [`Plan6::Ipam`] into the reply (pure).
/// An IA the answer does not mention gets the status its absence means.
pub fn answer(
    req: &Request6,
    subnet: Option<&Subnet6Config>,
    ctx: &Ctx6,
    op: Op6,
    ans: &Answer,
) -> Reply6 {
    let rapid = req.kind == M::Solicit && op == Op6::Commit;
    let kind = if op == Op6::Advertise {
        M::Advertise
    } else {
        M::Reply
    };
    let mut b = Builder::new(kind, req, &ctx.server_duid);
    if rapid {
        b = b.rapid_commit();
    }
    if matches!(op, Op6::Release | Op6::Decline) {
        b = b.status(Status::Success, status_text(Status::Success));
    }
    b = ias(b, req, op, ans);
    if matches!(op, Op6::Release | Op6::Decline) {
        return b.build();
    }
    b = b.config(req, subnet);
    if kind == M::Advertise || req.wants(OptionCode::SolMaxRt) {
        b = b.seconds(OptionCode::SolMaxRt, ctx.sol_max_rt);
    }
    b.build()
}

/// Each IA of the request, answered (or left out: see [`ia_reply`]).
fn ias(mut b: Builder, req: &Request6, op: Op6, ans: &Answer) -> Builder {
    let find = |list: &[(u32, IaAnswer)], iaid| {
        let found = list.iter().find(|(id, _)| *id == iaid);
        found.map_or_else(|| missing(op), |(_, a)| a.clone())
    };
    // Off-link addresses and prefixes go back with lifetimes 0.
    let zero = |prefix| Lease6 {
        prefix,
        preferred: 0,
        valid: 0,
    };
    for ia in &req.ia_na {
        let echo = || ia.hints.iter().map(|&h| zero(h.into())).collect();
        if let Some(r) = ia_reply(op, find(&ans.na, ia.iaid), Status::NoAddrsAvail, echo) {
            b = b.ia_na(ia.iaid, &r);
        }
    }
    for ia in &req.ia_pd {
        let given = ia.hints.iter().filter(|h| !h.addr().is_unspecified());
        let echo = || given.clone().map(|&p| zero(p)).collect();
        if let Some(r) = ia_reply(op, find(&ans.pd, ia.iaid), Status::NoPrefixAvail, echo) {
            b = b.ia_pd(ia.iaid, &r);
        }
    }
    b
}

/// What an IA the IPAM did not answer for means in `op`.
fn missing(op: Op6) -> IaAnswer {
    match op {
        Op6::Advertise | Op6::Commit => IaAnswer::Exhausted,
        Op6::Extend | Op6::Release | Op6::Decline => IaAnswer::NoBinding,
    }
}

/// One IA's part of the reply (None: the IA is left out). `exhausted` is
/// the type's "none left" status; `echo` gives the client's own addresses
/// with lifetimes 0.
fn ia_reply(
    op: Op6,
    a: IaAnswer,
    exhausted: Status,
    echo: impl Fn() -> Vec<Lease6>,
) -> Option<IaReply> {
    Some(match (op, a) {
        // Released or declined: only IAs without a binding are named
        // (RFC 9915 18.3.7-8).
        (Op6::Release | Op6::Decline, IaAnswer::Leases(_)) => return None,
        (_, IaAnswer::Leases(ls)) if ls.is_empty() => IaReply::Status(exhausted),
        (_, IaAnswer::Leases(ls)) => IaReply::Leases(ls),
        (_, IaAnswer::Exhausted) => IaReply::Status(exhausted),
        (_, IaAnswer::NoBinding) => IaReply::Status(Status::NoBinding),
        // Renew/Rebind of addresses off the link: they are returned with
        // lifetimes 0 so the client stops using them (RFC 9915 18.3.4-5).
        (Op6::Extend, IaAnswer::NotOnLink) => IaReply::Leases(echo()),
        (_, IaAnswer::NotOnLink) => IaReply::Status(Status::NotOnLink),
    })
}

/// The Reply to a message unicast without our leave: its status only.
fn use_multicast(req: &Request6, ctx: &Ctx6) -> Reply6 {
    Builder::new(M::Reply, req, &ctx.server_duid)
        .status(Status::UseMulticast, status_text(Status::UseMulticast))
        .build()
}

/// Information-Request: configuration only, and INF_MAX_RT.
fn information(req: &Request6, subnet: Option<&Subnet6Config>, ctx: &Ctx6) -> Reply6 {
    Builder::new(M::Reply, req, &ctx.server_duid)
        .config(req, subnet)
        .seconds(OptionCode::InfMaxRt, ctx.inf_max_rt)
        .build()
}

/// Confirm: are the client's addresses on its link? No addresses: no
/// reply (RFC 9915 18.3.3).
fn confirm(req: &Request6, subnet: Option<&Subnet6Config>, ctx: &Ctx6) -> Plan6 {
    let Some(s) = subnet else {
        return Plan6::Drop(DropReason::NoSubnet);
    };
    let mut addrs = req.ia_na.iter().flat_map(|ia| ia.hints.iter()).peekable();
    if addrs.peek().is_none() {
        return Plan6::Silent;
    }
    let status = match addrs.all(|a| s.prefix.contains(a)) {
        true => Status::Success,
        false => Status::NotOnLink,
    };
    Plan6::Reply(
        Builder::new(M::Reply, req, &ctx.server_duid)
            .status(status, status_text(status))
            .build(),
    )
}
