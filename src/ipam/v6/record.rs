//! On-disk form of a DHCPv6 binding. Key: the address or prefix as 16
//! bytes big-endian and its length (128 for IA_NA), so scans run in
//! address order. Value: `[1][state][kind][iaid u32][expires u32]
//! [updated u32][port len u8][port][client key text]`.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::types::{Ia6Key, Ia6Kind};
use crate::client::ClientKey;
use crate::ipam::error::IpamError;
use crate::ipam::model::LeaseState;
use crate::ipam::record::{from_json, state_code, state_from_code, to_json};

const VERSION: u8 = 1;

/// An address (`len` 128) or a delegated prefix: its network address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key6 {
    pub addr: u128,
    pub len: u8,
}

impl Key6 {
    pub fn of(net: Ipv6Net) -> Self {
        Self {
            addr: u128::from(net.network()),
            len: net.prefix_len(),
        }
    }

    pub fn net(self) -> Ipv6Net {
        // `len` is at most 128 wherever a key is made.
        Ipv6Net::new(Ipv6Addr::from(self.addr), self.len.min(128))
            .unwrap_or_else(|_| Ipv6Net::from(Ipv6Addr::from(self.addr)))
    }

    pub fn bytes(self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[..16].copy_from_slice(&self.addr.to_be_bytes());
        k[16] = self.len;
        k
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (addr, len) = b.split_first_chunk::<16>()?;
        match len {
            [len] if *len <= 128 => Some(Self {
                addr: u128::from_be_bytes(*addr),
                len: *len,
            }),
            _ => None,
        }
    }
}

/// A stored binding: bound, or declined (in quarantine until `expires`).
/// Released and expired bindings are removed, not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record6 {
    pub state: LeaseState,
    pub ia: Ia6Key,
    /// End of the valid lifetime; for declined: end of the quarantine.
    pub expires: u32,
    pub updated: u32,
    /// The relay port it was given through (for the per-port counts at open).
    pub port: Option<Box<[u8]>>,
}

impl Record6 {
    pub fn encode(&self) -> Vec<u8> {
        let port = self
            .port
            .as_deref()
            .map_or(&[][..], |p| &p[..p.len().min(255)]);
        let mut v = Vec::with_capacity(17 + port.len() + 64);
        v.push(VERSION);
        v.push(state_code(self.state));
        v.push(match self.ia.kind {
            Ia6Kind::Na => 0,
            Ia6Kind::Pd => 1,
        });
        v.extend_from_slice(&self.ia.iaid.to_be_bytes());
        v.extend_from_slice(&self.expires.to_be_bytes());
        v.extend_from_slice(&self.updated.to_be_bytes());
        v.push(port.len() as u8);
        v.extend_from_slice(port);
        self.ia.client.write_text(&mut v);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, IpamError> {
        let bad = |what: &str| IpamError::Storage(format!("bad v6 binding record: {what}"));
        let (&[ver, st, kind], rest) = b.split_first_chunk::<3>().ok_or_else(|| bad("short"))?;
        if ver != VERSION {
            return Err(bad("version"));
        }
        let (iaid, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        let (exp, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        let (upd, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        let (&pl, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
        let (port, client) = rest
            .split_at_checked(usize::from(pl))
            .ok_or_else(|| bad("short"))?;
        let client = std::str::from_utf8(client)
            .map_err(|_| bad("utf-8"))?
            .parse()
            .map_err(|_| bad("client"))?;
        Ok(Self {
            state: state_from_code(st).ok_or_else(|| bad("state"))?,
            ia: Ia6Key {
                client,
                kind: match kind {
                    0 => Ia6Kind::Na,
                    1 => Ia6Kind::Pd,
                    _ => return Err(bad("kind")),
                },
                iaid: u32::from_be_bytes(*iaid),
            },
            expires: u32::from_be_bytes(*exp),
            updated: u32::from_be_bytes(*upd),
            port: (pl > 0).then(|| port.into()),
        })
    }
}

/// A stored v6 key as text: the address (IA_NA), or `prefix/len` (IA_PD).
pub fn key6_to_text(key: &[u8]) -> Option<String> {
    let k = Key6::from_bytes(key)?;
    Some(match k.len {
        128 => Ipv6Addr::from(k.addr).to_string(),
        _ => k.net().to_string(),
    })
}

/// The reverse of [`key6_to_text`] (`None`: neither an address nor a
/// prefix on its network boundary).
pub fn key6_from_text(text: &str) -> Option<Vec<u8>> {
    let net = match text.contains('/') {
        true => text.parse::<Ipv6Net>().ok().filter(|n| n.trunc() == *n)?,
        false => Ipv6Net::from(text.parse::<Ipv6Addr>().ok()?),
    };
    Some(Key6::of(net).bytes().to_vec())
}

/// A v6 binding record as JSON (the cluster's `leases6/<key>` values):
/// what the binary record holds, the relay port as hex.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Lease6Json {
    state: LeaseState,
    client: ClientKey,
    kind: Ia6Kind,
    iaid: u32,
    expires: u32,
    updated: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<String>,
}

/// Encoded v6 binding record → its JSON form.
pub fn lease6_to_json(record: &[u8]) -> Result<Vec<u8>, IpamError> {
    let r = Record6::decode(record)?;
    to_json(&Lease6Json {
        state: r.state,
        client: r.ia.client,
        kind: r.ia.kind,
        iaid: r.ia.iaid,
        expires: r.expires,
        updated: r.updated,
        port: r.port.map(hex::encode),
    })
}

/// JSON form → encoded v6 binding record (refusing what does not decode).
pub fn lease6_from_json(json: &[u8]) -> Result<Vec<u8>, IpamError> {
    let j: Lease6Json = from_json(json)?;
    let port = j
        .port
        .map(hex::decode)
        .transpose()
        .map_err(|_| IpamError::Storage("bad stored v6 lease: port is not hex".into()))?;
    Ok(Record6 {
        state: j.state,
        ia: Ia6Key {
            client: j.client,
            kind: j.kind,
            iaid: j.iaid,
        },
        expires: j.expires,
        updated: j.updated,
        port: port.map(Vec::into_boxed_slice),
    }
    .encode())
}

/// The IA of an encoded v6 binding record and whether it is bound.
pub fn lease6_holder(record: &[u8]) -> Option<(Ia6Key, bool)> {
    Record6::decode(record)
        .ok()
        .map(|r| (r.ia, r.state == LeaseState::Bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_record_round_trip() {
        let k = Key6::of("fd00:78:0:100::/56".parse().unwrap());
        assert_eq!(Key6::from_bytes(&k.bytes()), Some(k));
        assert_eq!(k.net().to_string(), "fd00:78:0:100::/56");
        assert_eq!(Key6::from_bytes(&[0; 16]), None);
        for port in [None, Some(b"relay/eth0".to_vec().into_boxed_slice())] {
            let r = Record6 {
                state: LeaseState::Declined,
                ia: Ia6Key {
                    client: "duid:000300010a0b0c0d0e0f".parse().unwrap(),
                    kind: Ia6Kind::Pd,
                    iaid: 7,
                },
                expires: 1_700_000_000,
                updated: 1_699_999_000,
                port,
            };
            assert_eq!(Record6::decode(&r.encode()).unwrap(), r);
            let text = key6_to_text(&k.bytes()).unwrap();
            assert_eq!(key6_from_text(&text), Some(k.bytes().to_vec()));
            let json = lease6_to_json(&r.encode()).unwrap();
            assert_eq!(lease6_from_json(&json).unwrap(), r.encode());
        }
        assert!(Record6::decode(&[1, 1]).is_err());
    }
}
