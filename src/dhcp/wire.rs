//! Checks on the raw datagram, before any decoding or allocation:
//! [`peek_mac`] (admission's isolation by MAC) and [`peek`] (header, cookie,
//! option framing including overloaded `sname`/`file`, the options admission
//! needs). Whatever [`peek`] accepts is safe to decode and handle.

use std::net::Ipv4Addr;
use std::ops::Range;

use dhcproto::v4::OptionCode as C;

/// Largest datagram we accept (an Ethernet MTU); larger ones are malformed.
pub const MAX_DATAGRAM: usize = 1500;
/// BOOTP header up to and including the magic cookie.
pub const OPTIONS_START: usize = 240;
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
const SNAME: Range<usize> = 44..108;
const FILE: Range<usize> = 108..236;

/// Why a datagram was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a DHCP header")]
    TooShort,
    #[error("longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware address length over 16")]
    BadHlen,
    #[error("bad magic cookie")]
    BadCookie,
    #[error("an option runs past the end of its field")]
    OptionOverrun,
    #[error("an option has the wrong length for its code")]
    BadLength,
    #[error("no end option")]
    NoEnd,
    #[error("bad option overload")]
    BadOverload,
    #[error("no or bad message type")]
    NoMessageType,
    #[error("bad client identifier")]
    BadClientId,
    #[error("undecodable")]
    Undecodable,
}

/// What admission learns from a datagram without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The first six bytes of `chaddr`.
    pub mac: [u8; 6],
    pub giaddr: Ipv4Addr,
    /// Option 53's value (1..=18).
    pub msg_type: u8,
    /// Byte range of option 61's value in the datagram.
    pub client_id: Option<Range<usize>>,
    /// Byte range of option 82's value (echoed back verbatim).
    pub relay_info: Option<Range<usize>>,
    /// Codes present in the main options field (a 256-bit set), so the
    /// decoder's result can be checked for options it skipped.
    pub seen: [u64; 4],
}

impl Peek {
    pub fn client_id<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.client_id.clone().and_then(|r| buf.get(r))
    }
    pub fn relay_info<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.relay_info.clone().and_then(|r| buf.get(r))
    }
    /// Option codes in the main options field.
    /// Walks the set bits only (a packet has a handful of options), not
    /// all 254 codes.
    pub fn seen_codes(&self) -> impl Iterator<Item = u8> + '_ {
        self.seen
            .iter()
            .enumerate()
            .flat_map(|(word, &bits)| {
                let mut rest = bits;
                std::iter::from_fn(move || {
                    let bit = rest.trailing_zeros();
                    (rest != 0).then(|| {
                        rest &= rest - 1;
                        word as u32 * 64 + bit
                    })
                })
            })
            .filter_map(|c| u8::try_from(c).ok())
            .filter(|c| (1..=254).contains(c))
    }
}

/// `chaddr`'s first six bytes, if the datagram is long enough to hold them.
/// The cheapest possible look: admission's isolation check runs on this.
pub fn peek_mac(buf: &[u8]) -> Option<[u8; 6]> {
    buf.get(28..34)?.try_into().ok()
}

/// `giaddr`, read raw.
pub fn peek_giaddr(buf: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = buf.get(24..28)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Validates the framing of a client datagram and finds the options
/// admission needs. Never panics, never allocates.
pub fn peek(buf: &[u8]) -> Result<Peek, Malformed> {
    if buf.len() > MAX_DATAGRAM {
        return Err(Malformed::TooLong);
    }
    if buf.len() < OPTIONS_START + 1 {
        return Err(Malformed::TooShort);
    }
    if buf[0] != 1 {
        return Err(Malformed::NotRequest);
    }
    if buf[2] > 16 {
        return Err(Malformed::BadHlen);
    }
    if buf[236..240] != MAGIC {
        return Err(Malformed::BadCookie);
    }
    let mut p = Peek {
        mac: peek_mac(buf).ok_or(Malformed::TooShort)?,
        giaddr: peek_giaddr(buf).ok_or(Malformed::TooShort)?,
        msg_type: 0,
        client_id: None,
        relay_info: None,
        seen: [0; 4],
    };
    let seen = std::cell::Cell::new([0u64; 4]);
    let overload = std::cell::Cell::new(0u8);
    let mut visit = |code: u8, r: Range<usize>| -> Result<(), Malformed> {
        let len = r.len();
        match C::from(code) {
            C::MessageType if len == 1 => p.msg_type = buf[r.start],
            C::MessageType => return Err(Malformed::NoMessageType),
            C::OptionOverload if len == 1 => overload.set(buf[r.start]),
            C::OptionOverload => return Err(Malformed::BadOverload),
            C::ClientIdentifier if len == 0 => return Err(Malformed::BadClientId),
            C::ClientIdentifier => p.client_id = Some(r),
            C::RelayAgentInformation => p.relay_info = Some(r),
            c if !length_ok(c, len) => return Err(Malformed::BadLength),
            _ => {}
        }
        Ok(())
    };
    walk(buf, OPTIONS_START..buf.len(), true, &mut |code, r| {
        let mut set = seen.get();
        set[usize::from(code / 64)] |= 1 << (code % 64);
        seen.set(set);
        visit(code, r)
    })?;
    match overload.get() {
        0 => {}
        1 => walk(buf, FILE, false, &mut visit)?,
        2 => walk(buf, SNAME, false, &mut visit)?,
        3 => {
            walk(buf, FILE, false, &mut visit)?;
            walk(buf, SNAME, false, &mut visit)?;
        }
        _ => return Err(Malformed::BadOverload),
    }
    if !(1..=18).contains(&p.msg_type) {
        return Err(Malformed::NoMessageType);
    }
    p.seen = seen.get();
    Ok(p)
}

/// Options with a fixed or minimum length: the ones the handler reads, and
/// the ones dhcproto asserts on (a panic in debug builds, a misparse in
/// release ones).
fn length_ok(code: C, len: usize) -> bool {
    match code {
        C::RequestedIpAddress
        | C::AddressLeaseTime
        | C::ServerIdentifier
        | C::BulkLeaseQueryBaseTime
        | C::BulkLeasQueryStartTimeOfState
        | C::BulkLeaseQueryQueryStartTime
        | C::BulkLeaseQueryQueryEndTime => len == 4,
        C::MaxMessageSize => len == 2,
        C::RapidCommit => len == 0,
        C::ClientNetworkInterface => len == 3,
        C::ClientFQDN => len >= 3,
        _ => true,
    }
}

/// Walks the options in `area` of `buf`, calling `visit(code, value range)`.
/// The main options field must end with END (255); an overloaded field may
/// instead run out in padding.
fn walk(
    buf: &[u8],
    area: Range<usize>,
    need_end: bool,
    visit: &mut impl FnMut(u8, Range<usize>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let mut i = area.start;
    while i < area.end {
        let code = buf[i];
        match C::from(code) {
            C::Pad => i += 1,
            C::End => return Ok(()),
            _ => {
                let len = usize::from(*buf.get(i + 1).ok_or(Malformed::OptionOverrun)?);
                let value = i + 2..i + 2 + len;
                if value.end > area.end {
                    return Err(Malformed::OptionOverrun);
                }
                visit(code, value.clone())?;
                i = value.end;
            }
        }
    }
    if need_end {
        Err(Malformed::NoEnd)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The set codes, ascending, as the plain filter over every code gives
    /// them (0 and 255, pad and end, are never options).
    #[test]
    fn seen_codes_are_the_set_bits_in_order() {
        let mut p = Peek {
            mac: [0; 6],
            giaddr: Ipv4Addr::UNSPECIFIED,
            msg_type: 1,
            client_id: None,
            relay_info: None,
            seen: [0; 4],
        };
        for set in [
            [0, 0, 0, 0],
            [u64::MAX; 4],
            [
                1 | 1 << 53 | 1 << 63,
                1 << 1 | 1 << 19,
                0,
                1 << 62 | 1 << 63,
            ],
        ] {
            p.seen = set;
            let all: Vec<u8> = (1..=254u8)
                .filter(|c| set[usize::from(*c / 64)] & (1 << (c % 64)) != 0)
                .collect();
            assert_eq!(p.seen_codes().collect::<Vec<_>>(), all);
        }
    }
}
