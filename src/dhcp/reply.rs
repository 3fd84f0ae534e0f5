//! Building replies: the BOOTP header, mandatory options, then the optional
//! ones (see [`super::options`]), and where the reply goes. Hand-written,
//! not dhcproto's encoder: that one sorts options by code, while replies
//! follow the client's request order within its size limit and echo option
//! 82 verbatim.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{MessageType, OptionCode as C};

use super::options::{self, payload_limit, put};
use super::request::{Request, BROADCAST};
use super::wire::{MAGIC, OPTIONS_START};
use crate::ipam::{Lease, LeaseState, SubnetSpec};
use crate::stats::DhcpOutcome;

pub const OFFER: MessageType = MessageType::Offer;
pub const ACK: MessageType = MessageType::Ack;
pub const NAK: MessageType = MessageType::Nak;

/// Where a reply goes; the I/O layer turns it into a socket address (the
/// server port for relays, the client port otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// To the relay agent at giaddr, server port.
    Relay(Ipv4Addr),
    /// 255.255.255.255, client port, on the receiving interface.
    Broadcast,
    /// To the client's own address, client port.
    Unicast(Ipv4Addr),
}

/// A built reply, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub outcome: DhcpOutcome,
    pub to: Dest,
    pub bytes: Vec<u8>,
}

/// What the reply says about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub yiaddr: Ipv4Addr,
    /// Lease time, T1, T2 in seconds.
    pub times: (u32, u32, u32),
}

impl Grant {
    /// For an OFFER: a bound lease's remaining time, else the full lease time.
    pub fn offer(subnet: &SubnetSpec, lease: &Lease, now: SystemTime) -> Self {
        let remaining = match lease.state {
            LeaseState::Bound => remaining(lease, now),
            _ => subnet.lease_time,
        };
        Self::new(subnet, lease.ip, remaining)
    }

    /// For an ACK: the lease's remaining time (less than the full time when
    /// answered from the cache; T1/T2 scale with it, as Kea does).
    pub fn ack(subnet: &SubnetSpec, lease: &Lease, now: SystemTime) -> Self {
        Self::new(subnet, lease.ip, remaining(lease, now))
    }

    fn new(subnet: &SubnetSpec, ip: Ipv4Addr, remaining: Duration) -> Self {
        let full = subnet.lease_time.as_secs().max(1);
        let valid = remaining.as_secs().clamp(1, full);
        let scale = |t: Duration| {
            let t = t.as_secs().min(full) * valid / full;
            u32::try_from(t.max(1)).unwrap_or(u32::MAX)
        };
        let t1 = scale(subnet.renew_time());
        let t2 = scale(subnet.rebind_time()).max(t1);
        let valid = u32::try_from(valid).unwrap_or(u32::MAX);
        Self {
            yiaddr: ip,
            times: (valid, t1.min(valid), t2.min(valid)),
        }
    }
}

fn remaining(lease: &Lease, now: SystemTime) -> Duration {
    lease.expires_at.duration_since(now).unwrap_or_default()
}

/// Where a reply to `req` goes (RFC 2131 4.1): relayed → giaddr; a NAK or a
/// client without an address (or asking for it) → broadcast; else unicast.
pub fn dest(req: &Request, msg: MessageType) -> Dest {
    if req.is_relayed() {
        Dest::Relay(req.giaddr)
    } else if msg == NAK || req.ciaddr.is_unspecified() || req.wants_broadcast() {
        Dest::Broadcast
    } else {
        Dest::Unicast(req.ciaddr)
    }
}

/// Builds a reply of type `msg` (OFFER/ACK/NAK) to `req`. `grant` is the
/// lease (none for NAK and INFORM's ACK); `subnet` supplies the optional
/// options (none for NAK); `rapid` adds option 80.
pub fn build(
    req: &Request,
    msg: MessageType,
    server_id: Ipv4Addr,
    grant: Option<Grant>,
    subnet: Option<&SubnetSpec>,
    rapid: bool,
) -> Reply {
    let limit = payload_limit(req.max_size);
    let mut b = Vec::with_capacity(limit);
    header(&mut b, req, msg, grant.map(|g| g.yiaddr));
    put(&mut b, C::MessageType, &[u8::from(msg)]);
    put(&mut b, C::ServerIdentifier, &server_id.octets());
    if let Some(Grant {
        times: (valid, t1, t2),
        ..
    }) = grant
    {
        put(&mut b, C::AddressLeaseTime, &valid.to_be_bytes());
        put(&mut b, C::Renewal, &t1.to_be_bytes());
        put(&mut b, C::Rebinding, &t2.to_be_bytes());
    }
    if rapid {
        b.extend_from_slice(&[C::RapidCommit.into(), 0]);
    }
    if let Some(id) = &req.client_id {
        put(&mut b, C::ClientIdentifier, id);
    }
    let tail = req.relay_info.as_deref().map_or(0, options::size) + 1;
    if let Some(subnet) = subnet {
        let budget = limit.saturating_sub(b.len() + tail);
        options::put_optional(&mut b, subnet, req.prl.as_deref(), budget);
    }
    if let Some(ri) = &req.relay_info {
        put(&mut b, C::RelayAgentInformation, ri); // last before END (RFC 3046)
    }
    b.push(C::End.into());
    let outcome = match msg {
        MessageType::Offer => DhcpOutcome::Offer,
        MessageType::Nak => DhcpOutcome::Nak,
        _ => DhcpOutcome::Ack,
    };
    Reply {
        outcome,
        to: dest(req, msg),
        bytes: b,
    }
}

/// The fixed 240 bytes (RFC 2131 table 3).
fn header(b: &mut Vec<u8>, req: &Request, msg: MessageType, yiaddr: Option<Ipv4Addr>) {
    let mut flags = req.flags & BROADCAST;
    if msg == NAK && req.is_relayed() {
        flags |= BROADCAST; // RFC 2131 4.3.2
    }
    // ciaddr: echoed in ACKs (renewing, rebinding, INFORM), zero otherwise.
    let ciaddr = if msg == ACK {
        req.ciaddr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    b.extend_from_slice(&[2, req.htype, req.hlen, 0]);
    b.extend_from_slice(&req.xid.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&ciaddr.octets());
    b.extend_from_slice(&yiaddr.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
    b.extend_from_slice(&[0; 4]); // siaddr: no next server
    b.extend_from_slice(&req.giaddr.octets());
    b.extend_from_slice(&req.chaddr);
    b.resize(OPTIONS_START - 4, 0); // sname, file
    b.extend_from_slice(&MAGIC);
}
