//! Client identity: the key every admission point, quota, statistic and isolation uses.
//!
//! Text forms are stable (operators type them, the store persists them):
//! `mac:02:00:00:00:00:01` (DHCP hardware address, or a client identifier of
//! type 1 carrying one), `id:0a0b0c` (any other DHCP client identifier, hex),
//! `duid:000100011c39cf88080027fe8f95` (a DHCPv6 client's DUID, hex),
//! `ip:192.0.2.7` (API client address), `token:0123456789abcdef` (an API
//! client's bearer token: the first 8 bytes of its SHA-256, in hex — the
//! token itself is never stored, logged or shown).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;

/// The longest client identifier kept verbatim; longer ones are rejected as
/// malformed (RFC 2132 caps option 61 at 255 bytes, real clients use < 32).
pub const MAX_CLIENT_ID: usize = 64;
/// The longest DHCPv6 DUID: a 2-byte type and at most 128 bytes (RFC 9915 11.1).
pub const MAX_DUID: usize = 130;
/// The shortest: a type and one byte.
pub const MIN_DUID: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientKey {
    Mac([u8; 6]),
    Id(Box<[u8]>),
    /// A DHCPv6 client's DUID ([`MIN_DUID`]..=[`MAX_DUID`] bytes).
    Duid(Box<[u8]>),
    Ip(IpAddr),
    /// An API token identity: a SHA-256 prefix of the bearer token. The
    /// gateway makes a token a client only once it has verified it (the
    /// admin token); the operator may isolate any token by this name.
    Token([u8; TOKEN_ID_LEN]),
}

/// Bytes of the token hash kept as its identity (16 hex characters): enough
/// that two live tokens never collide, too few to brute-force the token.
pub const TOKEN_ID_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a client key (expected mac:xx:xx:xx:xx:xx:xx, id:HEX, duid:HEX, ip:ADDR or token:16 HEX)"
)]
pub struct ParseClientKeyError(pub String);

/// A MAC key hashes as one word: a DHCP packet's key is hashed in half a
/// dozen maps (quota, statistics, shard, in-flight, leases), and SipHash
/// over the derived form (discriminant, length, six bytes) costs twice as
/// much. Equal keys still hash equal; the variants are told apart by a tag.
impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Self::Mac([a, b, c, d, e, f]) => {
                h.write_u64(u64::from_be_bytes([0, 0, *a, *b, *c, *d, *e, *f]))
            }
            Self::Id(id) => {
                h.write_u8(1);
                id.hash(h);
            }
            Self::Ip(ip) => {
                h.write_u8(2);
                ip.hash(h);
            }
            Self::Token(t) => {
                h.write_u8(3);
                t.hash(h);
            }
            Self::Duid(d) => {
                h.write_u8(4);
                d.hash(h);
            }
        }
    }
}

impl ClientKey {
    /// The DHCP client key: option 61 takes precedence over `chaddr`; an
    /// option 61 of hardware type 1 with a 6-byte address is the same client
    /// as that MAC, so a client keeps one identity either way.
    pub fn dhcp(client_id: Option<&[u8]>, chaddr: [u8; 6]) -> Option<Self> {
        match client_id {
            None | Some([]) => Some(Self::Mac(chaddr)),
            Some([1, a, b, c, d, e, f]) => Some(Self::Mac([*a, *b, *c, *d, *e, *f])),
            Some(id) if id.len() <= MAX_CLIENT_ID => Some(Self::Id(id.into())),
            Some(_) => None,
        }
    }

    /// The DHCPv6 client key of a DUID; `None` outside [`MIN_DUID`]..=[`MAX_DUID`].
    pub fn duid(duid: &[u8]) -> Option<Self> {
        (MIN_DUID..=MAX_DUID)
            .contains(&duid.len())
            .then(|| Self::Duid(duid.into()))
    }

    /// The identity of an API bearer token (see [`TOKEN_ID_LEN`]).
    pub fn token(token: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token);
        let mut id = [0u8; TOKEN_ID_LEN];
        id.copy_from_slice(&digest[..TOKEN_ID_LEN]);
        Self::Token(id)
    }

    /// The token identity of an `Authorization: Bearer <token>` header
    /// value; `None` for any other scheme or an empty token.
    pub fn bearer(authorization: &[u8]) -> Option<Self> {
        let (scheme, rest) = authorization.split_at_checked(7)?;
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        let token = rest.trim_ascii();
        (!token.is_empty()).then(|| Self::token(token))
    }

    pub fn is_dhcp(&self) -> bool {
        matches!(self, Self::Mac(_) | Self::Id(_))
    }
}

impl ClientKey {
    /// Appends the text form (as [`fmt::Display`] writes it) to `out`.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let hex = self.hex_text(|piece| {
            out.extend_from_slice(piece);
            Ok::<(), std::convert::Infallible>(())
        });
        if hex.is_none() {
            use std::io::Write as _;
            // A Vec takes every write.
            let _ = write!(out, "{self}");
        }
    }

    /// Puts the text of a hex form (all but `ip:`, then `None`) piece by
    /// piece from a table: every lease record carries it, and `write!` per
    /// byte showed in DHCP profiles.
    fn hex_text<E>(&self, mut put: impl FnMut(&[u8]) -> Result<(), E>) -> Option<Result<(), E>> {
        let (prefix, bytes, colons): (&[u8], &[u8], bool) = match self {
            Self::Mac(m) => (b"mac:", m, true),
            Self::Id(id) => (b"id:", id, false),
            Self::Duid(d) => (b"duid:", d, false),
            Self::Token(id) => (b"token:", id, false),
            Self::Ip(_) => return None,
        };
        let mut all = || {
            put(prefix)?;
            for (i, b) in bytes.iter().enumerate() {
                if colons && i > 0 {
                    put(b":")?;
                }
                put(&hex(*b))?;
            }
            Ok(())
        };
        Some(all())
    }
}

/// `b` as two lowercase hex digits.
fn hex(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII is ever put.
        let hex =
            self.hex_text(|piece| f.write_str(std::str::from_utf8(piece).map_err(|_| fmt::Error)?));
        match (hex, self) {
            (Some(written), _) => written,
            (None, Self::Ip(ip)) => write!(f, "ip:{ip}"),
            (None, _) => Err(fmt::Error),
        }
    }
}

impl FromStr for ClientKey {
    type Err = ParseClientKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseClientKeyError(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "mac" => parse_mac(rest).map(Self::Mac).ok_or_else(bad),
            "id" => parse_hex(rest)
                .filter(|v| !v.is_empty() && v.len() <= MAX_CLIENT_ID)
                .map(|v| Self::Id(v.into()))
                .ok_or_else(bad),
            "duid" => parse_hex(rest).and_then(|v| Self::duid(&v)).ok_or_else(bad),
            "ip" => rest.parse().map(Self::Ip).map_err(|_| bad()),
            "token" => parse_hex(rest)
                .and_then(|v| <[u8; TOKEN_ID_LEN]>::try_from(v.as_slice()).ok())
                .map(Self::Token)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for ClientKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `02:00:00:00:00:01` (also with `-` separators).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for s in [
            "mac:02:00:00:00:00:01",
            "id:ff00aa",
            "duid:000100011c39cf88080027fe8f95",
            "ip:10.0.0.1",
            "ip:::1",
            "token:0123456789abcdef",
        ] {
            let k: ClientKey = s.parse().unwrap();
            assert_eq!(k.to_string(), s);
        }
    }

    /// The table-built text is what `write!` made of each form, and a
    /// lease record's client bytes are that text.
    #[test]
    fn text_is_the_formatted_text() {
        let reference = |k: &ClientKey| match k {
            ClientKey::Mac(m) => format!(
                "mac:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            ClientKey::Id(id) => format!(
                "id:{}",
                id.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            ClientKey::Duid(d) => format!(
                "duid:{}",
                d.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            ClientKey::Token(id) => format!(
                "token:{}",
                id.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            ClientKey::Ip(ip) => format!("ip:{ip}"),
        };
        let keys = [
            ClientKey::Mac([0x02, 0xab, 0x00, 0xff, 0x10, 0x9c]),
            ClientKey::Id(vec![0, 0x7f, 0x80, 0xff].into()),
            ClientKey::Id(vec![0xa5; MAX_CLIENT_ID].into()),
            ClientKey::Id(vec![0x5a; MAX_CLIENT_ID + 9].into()),
            ClientKey::Token([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]),
            ClientKey::Ip("192.0.2.7".parse().unwrap()),
            ClientKey::Ip("2001:db8::1".parse().unwrap()),
        ];
        for k in keys {
            assert_eq!(k.to_string(), reference(&k));
            let mut out = b"x".to_vec();
            k.write_text(&mut out);
            assert_eq!(out, [b"x", reference(&k).as_bytes()].concat());
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "mac:",
            "mac:02:00",
            "mac:zz:00:00:00:00:00",
            "id:f",
            "ip:x",
            "foo:1",
            "token:",
            "token:0123456789abcde",
            "token:0123456789abcdef00",
            "token:0123456789abcdeg",
            "duid:0001",
            "duid:",
            &format!("duid:{}", "ab".repeat(MAX_DUID + 1)),
        ] {
            assert!(s.parse::<ClientKey>().is_err(), "{s}");
        }
    }

    #[test]
    fn token_identity_is_a_sha256_prefix_never_the_token() {
        // SHA-256("secret") = 2bb80d53 7b1da3e3 8bd30361 aa855686 ...
        let k = ClientKey::token(b"secret");
        assert_eq!(k.to_string(), "token:2bb80d537b1da3e3");
        assert!(!k.is_dhcp());
        assert_eq!(ClientKey::bearer(b"Bearer secret"), Some(k.clone()));
        assert_eq!(ClientKey::bearer(b"bearer  secret "), Some(k));
        for bad in [
            &b"Basic c2VjcmV0"[..],
            b"Bearer ",
            b"Bearer",
            b"",
            b"Bearer\t",
        ] {
            assert_eq!(ClientKey::bearer(bad), None);
        }
        assert_eq!(
            "token:2BB80D537B1DA3E3".parse::<ClientKey>(),
            Ok(ClientKey::token(b"secret"))
        );
    }

    #[test]
    fn client_id_of_type_1_is_the_mac() {
        let mac = [2, 0, 0, 0, 0, 9];
        assert_eq!(
            ClientKey::dhcp(Some(&[1, 2, 0, 0, 0, 0, 9]), [0; 6]),
            Some(ClientKey::Mac(mac))
        );
        assert_eq!(ClientKey::dhcp(None, mac), Some(ClientKey::Mac(mac)));
        assert!(matches!(
            ClientKey::dhcp(Some(&[0, 1, 2]), mac),
            Some(ClientKey::Id(_))
        ));
        assert_eq!(ClientKey::dhcp(Some(&[7; 65]), mac), None);
    }
}
