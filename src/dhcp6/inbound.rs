//! A datagram from port 547 in two steps, cheapest first: [`peek`] finds
//! the client's identity (DUID, link-layer address) without allocating,
//! for admission's isolation and quota checks; [`decode`] then reads all.

use dhcproto::v6::OptionCode as C;

use super::error::Malformed6;
use super::relay::{unwrap, RelayChain};
use super::request::Request6;
use super::wire::{walk, Budget, HOP_COUNT_LIMIT, MAX_DATAGRAM, MAX_OPTIONS, MAX_RELAY_OPTIONS};
use crate::client::{MAX_DUID, MIN_DUID};

/// What admission learns before decoding: borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek6<'a> {
    /// The client message's type byte.
    pub msg_type: u8,
    /// Relay levels around it.
    pub hops: usize,
    /// The Client Identifier's DUID.
    pub duid: Option<&'a [u8]>,
    /// Option 79's value (`type(2) address`) from the relay nearest the client.
    pub lladdr: Option<&'a [u8]>,
}

/// Finds the client's identity: through the Relay-Forw levels (to the hop
/// limit) to the client message's Client Identifier. Checks the framing it
/// walks; never allocates.
pub fn peek(buf: &[u8]) -> Result<Peek6<'_>, Malformed6> {
    if buf.len() > MAX_DATAGRAM {
        return Err(Malformed6::TooLong);
    }
    let budget = Budget::new(MAX_RELAY_OPTIONS);
    let (mut msg, mut hops, mut lladdr) = (buf, 0, None);
    while msg.first() == Some(&12) {
        if hops >= HOP_COUNT_LIMIT {
            return Err(Malformed6::HopLimit);
        }
        let mut inner = None;
        walk(
            msg.get(34..).ok_or(Malformed6::TooShort)?,
            &budget,
            |c, v| {
                match c {
                    9 => inner = Some(v),
                    79 => lladdr = Some(v),
                    _ => {}
                }
                Ok(())
            },
        )?;
        msg = inner.ok_or(Malformed6::NoRelayMessage)?;
        hops += 1;
    }
    let [msg_type, _, _, _, opts @ ..] = msg else {
        return Err(Malformed6::TooShort);
    };
    if *msg_type == 13 {
        return Err(Malformed6::RelayReply);
    }
    let mut duid = None;
    walk(opts, &Budget::new(MAX_OPTIONS), |c, v| {
        if C::from(c) == C::ClientId {
            if !(MIN_DUID..=MAX_DUID).contains(&v.len()) {
                return Err(Malformed6::DuidLength);
            }
            duid = Some(v);
        }
        Ok(())
    })?;
    Ok(Peek6 {
        msg_type: *msg_type,
        hops,
        duid,
        lladdr,
    })
}

/// A datagram decoded: its relay levels and the client message inside,
/// with option 79 (if a relay gave one) as the client's link-layer address.
pub fn decode(buf: &[u8]) -> Result<(RelayChain, Request6), Malformed6> {
    let (chain, inner) = unwrap(buf)?;
    let mut req = Request6::decode(inner)?;
    req.lladdr = chain.lladdr().cloned();
    Ok((chain, req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKey;
    use crate::dhcp6::relay::{forward, RelayLevel};
    use crate::dhcp6::request::LinkLayer;
    use crate::dhcp6::wire::put;

    #[test]
    fn peek_finds_what_decode_finds_through_relays() {
        let duid = [0, 3, 0, 1, 2, 0, 0, 0, 0, 9];
        let mut m = vec![1, 1, 2, 3];
        put(&mut m, 8, &[0, 0]);
        put(&mut m, 1, &duid);
        let ll = LinkLayer {
            htype: 1,
            addr: vec![2, 0, 0, 0, 0, 0x42].into(),
        };
        let level = |lladdr| RelayLevel {
            hop_count: 0,
            link: "fd00::1".parse().unwrap(),
            peer: "fe80::1".parse().unwrap(),
            interface_id: None,
            lladdr,
        };
        let chain = RelayChain {
            levels: vec![level(None), level(Some(ll.clone()))],
        };
        let bytes = forward(&chain, &m);
        let p = peek(&bytes).unwrap();
        assert_eq!((p.msg_type, p.hops, p.duid), (1, 2, Some(&duid[..])));
        assert_eq!(p.lladdr.map(LinkLayer::parse), Some(Ok(ll.clone())));
        let (got, req) = decode(&bytes).unwrap();
        assert_eq!(got, chain);
        assert_eq!(req.client, ClientKey::duid(&duid));
        assert_eq!(req.mac(), Some([2, 0, 0, 0, 0, 0x42]), "option 79 wins");
        assert_eq!(peek(&m).map(|p| p.hops), Ok(0));
        let mut repl = bytes.clone();
        repl[0] = 13;
        assert_eq!(peek(&repl[..30]), Err(Malformed6::RelayReply));
        assert_eq!(peek(&bytes[..30]), Err(Malformed6::TooShort));
        assert_eq!(decode(&repl).map(|_| ()), Err(Malformed6::RelayReply));
    }
}
