//! The relay envelope (RFC 9915 9): Relay-Forw levels taken off a datagram
//! and Relay-Repl levels put around the reply. Hand-written: dhcproto 0.15
//! decodes option 9 as a relay message even when it holds a client message,
//! and has no public constructor for a Relay-Repl (see the tests below).

use std::net::Ipv6Addr;

use super::error::Malformed6;
use super::request::LinkLayer;
use super::wire::{addr_at, put, walk, Budget, HOP_COUNT_LIMIT, MAX_DATAGRAM, MAX_RELAY_OPTIONS};

const RELAY_FORW: u8 = 12;
const RELAY_REPL: u8 = 13;
/// msg-type, hop-count, link-address, peer-address.
const HEADER: usize = 34;
const OPT_RELAY_MSG: u16 = 9;
const OPT_INTERFACE_ID: u16 = 18;
const OPT_CLIENT_LLADDR: u16 = 79;
/// Longest Interface-Id kept (it becomes part of a per-port key).
pub const MAX_INTERFACE_ID: usize = 255;

/// One Relay-Forw level: what its relay said, and what the Relay-Repl
/// at this level must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLevel {
    pub hop_count: u8,
    pub link: Ipv6Addr,
    pub peer: Ipv6Addr,
    pub interface_id: Option<Box<[u8]>>,
    pub lladdr: Option<LinkLayer>,
}

/// The relay levels of a datagram, outermost (the relay that sent it to
/// us) first. Empty when the client reached us directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayChain {
    pub levels: Vec<RelayLevel>,
}

impl RelayChain {
    pub fn is_relayed(&self) -> bool {
        !self.levels.is_empty()
    }

    /// The relay closest to the client: its link-address names the link.
    pub fn innermost(&self) -> Option<&RelayLevel> {
        self.levels.last()
    }

    /// The client's link-layer address (option 79): the relay closest to
    /// the client adds it (RFC 6939).
    pub fn lladdr(&self) -> Option<&LinkLayer> {
        self.levels.iter().rev().find_map(|l| l.lladdr.as_ref())
    }

    /// The port a relayed client asks through: the innermost relay's
    /// link-address and Interface-Id (the per-port lease cap's key).
    pub fn port(&self) -> Option<Vec<u8>> {
        let l = self.innermost()?;
        let id = l.interface_id.as_deref()?;
        let mut key = l.link.octets().to_vec();
        key.extend_from_slice(id);
        Some(key)
    }
}

/// Takes the Relay-Forw envelopes off `buf`: the chain, and the client
/// message inside them (`buf` itself when not relayed). A Relay-Repl is
/// refused (servers send those), and so is nesting past [`HOP_COUNT_LIMIT`].
pub fn unwrap(buf: &[u8]) -> Result<(RelayChain, &[u8]), Malformed6> {
    if buf.len() > MAX_DATAGRAM {
        return Err(Malformed6::TooLong);
    }
    let mut chain = RelayChain::default();
    let budget = Budget::new(MAX_RELAY_OPTIONS);
    let mut msg = buf;
    loop {
        match msg.first() {
            Some(&RELAY_FORW) => {}
            Some(&RELAY_REPL) => return Err(Malformed6::RelayReply),
            Some(_) => return Ok((chain, msg)),
            None => return Err(Malformed6::TooShort),
        }
        if chain.levels.len() >= HOP_COUNT_LIMIT {
            return Err(Malformed6::HopLimit);
        }
        let (level, inner) = level(msg, &budget)?;
        chain.levels.push(level);
        msg = inner;
    }
}

/// One Relay-Forw: its header and options, and the option 9 it carries.
fn level<'a>(msg: &'a [u8], budget: &Budget) -> Result<(RelayLevel, &'a [u8]), Malformed6> {
    let (Some(&hop_count), Some(link), Some(peer), Some(opts)) = (
        msg.get(1),
        addr_at(msg, 2),
        addr_at(msg, 18),
        msg.get(HEADER..),
    ) else {
        return Err(Malformed6::TooShort);
    };
    if usize::from(hop_count) >= HOP_COUNT_LIMIT {
        return Err(Malformed6::HopLimit);
    }
    let mut level = RelayLevel {
        hop_count,
        link,
        peer,
        interface_id: None,
        lladdr: None,
    };
    let mut inner = None;
    walk(opts, budget, |code, v| {
        let dup = match code {
            OPT_RELAY_MSG => inner.replace(v).is_some(),
            OPT_INTERFACE_ID if v.is_empty() || v.len() > MAX_INTERFACE_ID => {
                return Err(Malformed6::BadLength)
            }
            OPT_INTERFACE_ID => level.interface_id.replace(v.into()).is_some(),
            OPT_CLIENT_LLADDR => level.lladdr.replace(LinkLayer::parse(v)?).is_some(),
            _ => false,
        };
        match dup {
            true => Err(Malformed6::Duplicate),
            false => Ok(()),
        }
    })?;
    let inner = inner.ok_or(Malformed6::NoRelayMessage)?;
    Ok((level, inner))
}

/// Wraps `reply` in one Relay-Repl per level of `chain`, innermost first,
/// each echoing its level's hop count, addresses and Interface-Id. The
/// result goes to the outermost relay (its source address, port 547).
pub fn wrap(chain: &RelayChain, reply: &[u8]) -> Vec<u8> {
    // Sizes from the inside out, so the bytes are written once, outside in.
    let mut sizes = Vec::with_capacity(chain.levels.len());
    let mut inner = reply.len();
    for l in chain.levels.iter().rev() {
        inner += HEADER + 4 + l.interface_id.as_ref().map_or(0, |i| 4 + i.len());
        sizes.push(inner);
    }
    let mut out = Vec::with_capacity(inner);
    for (l, size) in chain.levels.iter().zip(sizes.iter().rev()) {
        out.push(RELAY_REPL);
        out.push(l.hop_count);
        out.extend_from_slice(&l.link.octets());
        out.extend_from_slice(&l.peer.octets());
        if let Some(id) = &l.interface_id {
            put(&mut out, OPT_INTERFACE_ID, id);
        }
        let payload = size - HEADER - 4 - l.interface_id.as_ref().map_or(0, |i| 4 + i.len());
        out.extend_from_slice(&OPT_RELAY_MSG.to_be_bytes());
        out.extend_from_slice(&(payload.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    }
    out.extend_from_slice(reply);
    out
}

/// A Relay-Forw chain around `inner`, outermost level first: what relays
/// send (tests, fuzzing, the replay lab).
pub fn forward(chain: &RelayChain, inner: &[u8]) -> Vec<u8> {
    let mut msg = inner.to_vec();
    for l in chain.levels.iter().rev() {
        let mut out = vec![RELAY_FORW, l.hop_count];
        out.extend_from_slice(&l.link.octets());
        out.extend_from_slice(&l.peer.octets());
        if let Some(id) = &l.interface_id {
            put(&mut out, OPT_INTERFACE_ID, id);
        }
        if let Some(ll) = &l.lladdr {
            let mut v = ll.htype.to_be_bytes().to_vec();
            v.extend_from_slice(&ll.addr);
            put(&mut out, OPT_CLIENT_LLADDR, &v);
        }
        put(&mut out, OPT_RELAY_MSG, &msg);
        msg = out;
    }
    msg
}

#[cfg(test)]
mod tests {
    use dhcproto::v6::{DhcpOption, Message, MessageType, RelayMessage};
    use dhcproto::{Decodable, Decoder};

    use super::*;

    /// A Solicit with a client id and one IA_NA, as dhclient sends it.
    pub(crate) fn solicit() -> Vec<u8> {
        let mut m = vec![1, 0xab, 0xcd, 0xef];
        put(&mut m, 1, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 7]);
        put(&mut m, 3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut m, 8, &[0, 0]);
        m
    }

    fn level(hop: u8, link: u16, id: Option<&[u8]>) -> RelayLevel {
        RelayLevel {
            hop_count: hop,
            link: Ipv6Addr::new(0xfd00, link, 0, 0, 0, 0, 0, 1),
            peer: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(hop) + 2),
            interface_id: id.map(Into::into),
            lladdr: None,
        }
    }

    /// What the brief claims of dhcproto 0.15, checked: option 9 holding a
    /// client message is decoded as if it were a relay message.
    #[test]
    fn dhcproto_misreads_a_client_message_inside_option_9() {
        let chain = RelayChain {
            levels: vec![level(0, 77, Some(b"eth0"))],
        };
        let bytes = forward(&chain, &solicit());
        let msg = RelayMessage::decode(&mut Decoder::new(&bytes)).unwrap();
        let Some(DhcpOption::RelayMsg(inner)) = msg.opts().get(dhcproto::v6::OptionCode::RelayMsg)
        else {
            panic!("no option 9 in {msg:?}");
        };
        // The Solicit's first xid byte read as a hop count, its client id
        // as addresses; its Client Identifier and IA_NA are gone.
        assert_eq!(inner.msg_type(), MessageType::Solicit);
        assert_eq!(inner.hop_count(), 0xab);
        assert!(inner
            .opts()
            .get(dhcproto::v6::OptionCode::ClientId)
            .is_none());
        assert!(inner.opts().get(dhcproto::v6::OptionCode::IANA).is_none());
        // Ours keeps the level and hands back the Solicit untouched.
        let (got, inner) = unwrap(&bytes).unwrap();
        assert_eq!(got, chain);
        assert_eq!(inner, solicit());
    }

    /// dhcproto's option list stops silently at a bad option: a message
    /// with a truncated IA_NA decodes "fine" without it.
    #[test]
    fn dhcproto_drops_a_truncated_option_silently() {
        let mut m = solicit();
        m.extend_from_slice(&[0, 3, 0, 40, 0, 0]);
        let msg = Message::decode(&mut Decoder::new(&m)).unwrap();
        assert!(msg.opts().get(dhcproto::v6::OptionCode::ClientId).is_some());
        assert_eq!(
            super::super::Request6::decode(&m),
            Err(Malformed6::OptionOverrun)
        );
    }

    /// And a Status Code shorter than its 2-byte code makes it subtract
    /// past zero: a panic in debug builds. Untrusted bytes never reach it.
    #[cfg(debug_assertions)]
    #[test]
    fn dhcproto_panics_on_a_short_status_code() {
        let m = [1u8, 1, 2, 3, 0, 13, 0, 0, 0, 8, 0, 2, 0, 0];
        let r = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(&m)));
        assert!(r.is_err());
        assert!(
            super::super::Request6::decode(&m).is_ok(),
            "ignored by ours"
        );
    }

    #[test]
    fn nested_levels_round_trip_and_repl_echoes_each_interface_id() {
        let chain = RelayChain {
            levels: vec![
                level(2, 1, Some(b"uplink")),
                level(1, 2, None),
                level(0, 3, Some(b"port7")),
            ],
        };
        let fwd = forward(&chain, &solicit());
        let (got, inner) = unwrap(&fwd).unwrap();
        assert_eq!(got, chain);
        assert_eq!(inner, solicit());
        assert_eq!(got.port().unwrap()[16..], *b"port7");
        // The Relay-Repl, read back by dhcproto level by level.
        let reply = [7u8, 0xab, 0xcd, 0xef];
        let repl = wrap(&chain, &reply);
        let mut bytes = repl.clone();
        for l in &chain.levels {
            let m = RelayMessage::decode(&mut Decoder::new(&bytes)).unwrap();
            assert_eq!(m.msg_type(), MessageType::RelayRepl);
            assert_eq!(
                (m.hop_count(), m.link_addr(), m.peer_addr()),
                (l.hop_count, l.link, l.peer)
            );
            let id = match m.opts().get(dhcproto::v6::OptionCode::InterfaceId) {
                Some(DhcpOption::InterfaceId(id)) => Some(id.clone().into_boxed_slice()),
                _ => None,
            };
            assert_eq!(id, l.interface_id);
            // Option 9's raw value is the next level (dhcproto would misread it).
            let at = bytes.len() - (bytes.len() - HEADER)
                + l.interface_id.as_ref().map_or(0, |i| 4 + i.len());
            assert_eq!(bytes[at..at + 2], OPT_RELAY_MSG.to_be_bytes());
            bytes = bytes[at + 4..].to_vec();
        }
        assert_eq!(bytes, reply);
    }

    #[test]
    fn nesting_past_the_hop_limit_is_refused() {
        let deep = |n: usize| RelayChain {
            levels: (0..n).rev().map(|h| level(h as u8, 1, None)).collect(),
        };
        assert!(unwrap(&forward(&deep(HOP_COUNT_LIMIT), &solicit())).is_ok());
        let mut too_deep = forward(&deep(HOP_COUNT_LIMIT), &solicit());
        too_deep = forward(&deep(1), &too_deep);
        assert_eq!(unwrap(&too_deep).map(|_| ()), Err(Malformed6::HopLimit));
        let mut hop = forward(&deep(1), &solicit());
        hop[1] = HOP_COUNT_LIMIT as u8;
        assert_eq!(unwrap(&hop).map(|_| ()), Err(Malformed6::HopLimit));
    }

    #[test]
    fn malformed_envelopes_are_refused_with_their_reason() {
        let one = RelayChain {
            levels: vec![level(0, 1, Some(b"x"))],
        };
        let good = forward(&one, &solicit());
        let mut repl = good.clone();
        repl[0] = RELAY_REPL;
        assert_eq!(unwrap(&repl).map(|_| ()), Err(Malformed6::RelayReply));
        assert_eq!(unwrap(&good[..20]).map(|_| ()), Err(Malformed6::TooShort));
        assert_eq!(
            unwrap(&good[..HEADER + 3]).map(|_| ()),
            Err(Malformed6::TruncatedOption)
        );
        assert_eq!(
            unwrap(&good[..good.len() - 1]).map(|_| ()),
            Err(Malformed6::OptionOverrun)
        );
        assert_eq!(
            unwrap(&good[..HEADER]).map(|_| ()),
            Err(Malformed6::NoRelayMessage)
        );
        let mut two = good.clone();
        two.extend_from_slice(&good[HEADER..HEADER + 5]);
        assert_eq!(unwrap(&two).map(|_| ()), Err(Malformed6::Duplicate));
        assert_eq!(unwrap(&[]).map(|_| ()), Err(Malformed6::TooShort));
    }
}
