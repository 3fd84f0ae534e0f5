//! A client message decoded (with dhcproto) into the fields the handler uses.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

use super::wire::{Malformed, Peek};
use crate::client::ClientKey;

/// The broadcast bit of `flags`.
pub const BROADCAST: u16 = 0x8000;
/// Longest hostname (option 12) we record; longer ones are cut.
pub const MAX_HOSTNAME: usize = 63;

/// A decoded client message. Owns its data so it can move into a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub htype: u8,
    pub hlen: u8,
    pub chaddr: [u8; 16],
    /// Option 61 if present, else `chaddr` (see [`ClientKey::dhcp`]).
    pub client: ClientKey,
    /// Option 61 verbatim, echoed in replies (RFC 6842).
    pub client_id: Option<Vec<u8>>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 55, in the client's order.
    pub prl: Option<Vec<u8>>,
    /// Option 57.
    pub max_size: Option<u16>,
    /// Option 12, printable ASCII only, at most [`MAX_HOSTNAME`] bytes.
    pub hostname: Option<String>,
    /// Option 80 present.
    pub rapid_commit: bool,
    /// Option 82's value verbatim, from a relayed packet only: a client's
    /// own option 82 (giaddr 0) is ignored, never echoed.
    pub relay_info: Option<Vec<u8>>,
}

impl Request {
    /// Decodes a datagram that [`super::wire::peek`] accepted as `peek`.
    pub fn decode(buf: &[u8], peek: &Peek) -> Result<Self, Malformed> {
        // Defence in depth: a panic in the decoder on some input we did not
        // foresee costs this packet, not the worker.
        let msg = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(buf)))
            .map_err(|_| Malformed::Undecodable)?
            .map_err(|_| Malformed::Undecodable)?;
        let kind = msg.opts().msg_type().ok_or(Malformed::NoMessageType)?;
        // dhcproto silently stops at the first option it cannot decode; a
        // skipped option 54 would turn SELECTING into INIT-REBOOT. Every
        // option seen raw must have been decoded.
        let opts = msg.opts();
        if u8::from(kind) != peek.msg_type
            || peek
                .seen_codes()
                .any(|c| opts.get(OptionCode::from(c)).is_none())
        {
            return Err(Malformed::Undecodable);
        }
        let client_id = peek.client_id(buf).map(<[u8]>::to_vec);
        let client =
            ClientKey::dhcp(client_id.as_deref(), peek.mac).ok_or(Malformed::BadClientId)?;
        let opts = msg.opts();
        let ip = |code| match opts.get(code) {
            Some(DhcpOption::RequestedIpAddress(a) | DhcpOption::ServerIdentifier(a)) => Some(*a),
            _ => None,
        };
        let prl = match opts.get(OptionCode::ParameterRequestList) {
            // An empty list counts as none (dhcproto drops it on encode).
            Some(DhcpOption::ParameterRequestList(l)) if !l.is_empty() => {
                Some(l.iter().map(|&c| u8::from(c)).collect())
            }
            _ => None,
        };
        let max_size = match opts.get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(n)) => Some(*n),
            _ => None,
        };
        let hostname = match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => clean_hostname(h),
            _ => None,
        };
        // Raw, not `msg.chaddr()`: that slices by `hlen` (checked by peek).
        let chaddr: [u8; 16] = buf
            .get(28..44)
            .and_then(|b| b.try_into().ok())
            .ok_or(Malformed::TooShort)?;
        Ok(Self {
            kind,
            xid: msg.xid(),
            flags: u16::from(msg.flags()),
            ciaddr: msg.ciaddr(),
            giaddr: msg.giaddr(),
            htype: u8::from(msg.htype()),
            hlen: msg.hlen(),
            chaddr,
            client,
            client_id,
            requested_ip: ip(OptionCode::RequestedIpAddress),
            server_id: ip(OptionCode::ServerIdentifier),
            prl,
            max_size,
            hostname,
            rapid_commit: opts.get(OptionCode::RapidCommit).is_some(),
            relay_info: peek
                .relay_info(buf)
                .filter(|_| !msg.giaddr().is_unspecified())
                .map(<[u8]>::to_vec),
        })
    }

    pub fn wants_broadcast(&self) -> bool {
        self.flags & BROADCAST != 0
    }

    pub fn is_relayed(&self) -> bool {
        !self.giaddr.is_unspecified()
    }

    /// The relay port the client asks through: giaddr, then option 82's
    /// circuit-id (sub-option 1). `None` if not relayed or without one: one
    /// cap over a whole relay would let a few spoofed MACs starve it.
    pub fn port(&self) -> Option<Vec<u8>> {
        if !self.is_relayed() {
            return None;
        }
        let circuit = self.relay_info.as_deref().and_then(circuit_id)?;
        let mut id = self.giaddr.octets().to_vec();
        id.extend_from_slice(circuit);
        Some(id)
    }
}

/// Sub-option 1 (circuit-id) of an option 82 value (RFC 3046); `None` if
/// absent or if the sub-options run past the end.
pub fn circuit_id(info: &[u8]) -> Option<&[u8]> {
    let mut rest = info;
    while let [code, len, tail @ ..] = rest {
        let (value, next) = tail.split_at_checked(usize::from(*len))?;
        if *code == 1 {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// Keeps hostnames that are plain DNS labels (letters, digits, `-`, `.`,
/// `_`), cut at [`MAX_HOSTNAME`] bytes; anything else is not recorded.
fn clean_hostname(h: &str) -> Option<String> {
    let h = h.trim_end_matches('\0');
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| h[..h.len().min(MAX_HOSTNAME)].to_owned())
}
