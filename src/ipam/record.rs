//! On-disk encodings. Leases are compact binary (many, loaded at open);
//! specs and isolation entries are JSON (few, and readable).
//!
//! Lease record v1: `[1][state][expires u32][updated u32][hostname len u8]
//! [hostname][client key text]`, integers big-endian. v2, for a lease given
//! through a relay port, adds `[port len u8][port]` before the client text.

use std::net::Ipv4Addr;

use super::error::IpamError;
use super::model::{time, Lease, LeaseState};
use crate::client::ClientKey;

const VERSION: u8 = 1;
/// A record that names its relay port.
const VERSION_PORT: u8 = 2;

/// A stored lease (never `Offered`: offers live only in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub state: LeaseState,
    pub client: ClientKey,
    /// Expiry; release time for released, quarantine end for declined.
    pub expires: u32,
    pub updated: u32,
    pub hostname: Option<String>,
    /// The relay port the lease was given through (see [`super::Port`]),
    /// so the per-port counts are rebuilt from the store at open.
    pub port: Option<Box<[u8]>>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let host = self.hostname.as_deref().unwrap_or("");
        // At most 255 bytes, cut on a character boundary (a record that
        // ends mid-character would not decode).
        let mut end = host.len().min(255);
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        let host = &host.as_bytes()[..end];
        // 21 bytes: the text of a MAC key, nearly every client's.
        let port = self.port.as_deref().map(|p| &p[..p.len().min(255)]);
        let mut v = Vec::with_capacity(12 + host.len() + port.map_or(0, <[u8]>::len) + 21);
        v.push(if port.is_some() {
            VERSION_PORT
        } else {
            VERSION
        });
        v.push(state_code(self.state));
        v.extend_from_slice(&self.expires.to_be_bytes());
        v.extend_from_slice(&self.updated.to_be_bytes());
        v.push(host.len() as u8);
        v.extend_from_slice(host);
        if let Some(p) = port {
            v.push(p.len() as u8);
            v.extend_from_slice(p);
        }
        self.client.write_text(&mut v);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, IpamError> {
        let bad = |what: &str| IpamError::Storage(format!("bad lease record: {what}"));
        let (&[ver, st], rest) = b.split_first_chunk::<2>().ok_or_else(|| bad("short"))?;
        if ver != VERSION && ver != VERSION_PORT {
            return Err(bad("version"));
        }
        let (exp, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        let (upd, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        let (&hl, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
        let (host, rest) = rest
            .split_at_checked(usize::from(hl))
            .ok_or_else(|| bad("short"))?;
        let (port, client) = if ver == VERSION_PORT {
            let (&pl, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
            let (port, client) = rest
                .split_at_checked(usize::from(pl))
                .ok_or_else(|| bad("short"))?;
            (Some(port.into()), client)
        } else {
            (None, rest)
        };
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| bad("utf-8"))
        };
        Ok(Self {
            state: state_from_code(st).ok_or_else(|| bad("state"))?,
            client: text(client)?.parse().map_err(|_| bad("client"))?,
            expires: u32::from_be_bytes(*exp),
            updated: u32::from_be_bytes(*upd),
            hostname: if hl == 0 { None } else { Some(text(host)?) },
            port,
        })
    }

    pub fn to_lease(&self, ip: Ipv4Addr, subnet: &str) -> Lease {
        Lease {
            ip,
            subnet: subnet.to_owned(),
            client: self.client.clone(),
            state: self.state,
            expires_at: time(self.expires),
            updated_at: time(self.updated),
            hostname: self.hostname.clone(),
        }
    }
}

/// In-memory per-address state code; 0 means no stored record.
pub const FREE: u8 = 0;
/// [`state_code`] of a bound lease.
pub const BOUND: u8 = 1;

pub fn state_code(s: LeaseState) -> u8 {
    match s {
        LeaseState::Bound => 1,
        LeaseState::Released => 2,
        LeaseState::Expired => 3,
        LeaseState::Declined => 4,
        LeaseState::Offered => 5,
    }
}

pub fn state_from_code(c: u8) -> Option<LeaseState> {
    Some(match c {
        1 => LeaseState::Bound,
        2 => LeaseState::Released,
        3 => LeaseState::Expired,
        4 => LeaseState::Declined,
        5 => LeaseState::Offered,
        _ => return None,
    })
}

pub fn ip_key(ip: u32) -> [u8; 4] {
    ip.to_be_bytes()
}

pub fn key_ip(k: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(k).ok().map(u32::from_be_bytes)
}

pub fn reservation_key(subnet: &str, client: &ClientKey) -> Vec<u8> {
    let mut k = subnet.as_bytes().to_vec();
    k.push(0);
    client.write_text(&mut k);
    k
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(v).map_err(|e| IpamError::Storage(e.to_string()))
}

pub fn from_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, IpamError> {
    serde_json::from_slice(b).map_err(|e| IpamError::Storage(format!("bad stored record: {e}")))
}

/// A lease record as JSON (the cluster's `leases/<ip>` values): what the
/// binary record holds, the relay port as hex.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LeaseJson {
    state: LeaseState,
    client: ClientKey,
    expires: u32,
    updated: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<String>,
}

/// Encoded lease record → its JSON form.
pub fn lease_to_json(record: &[u8]) -> Result<Vec<u8>, IpamError> {
    let r = Record::decode(record)?;
    to_json(&LeaseJson {
        state: r.state,
        client: r.client,
        expires: r.expires,
        updated: r.updated,
        hostname: r.hostname,
        port: r
            .port
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect()),
    })
}

/// JSON form → encoded lease record (refusing what does not decode).
pub fn lease_from_json(json: &[u8]) -> Result<Vec<u8>, IpamError> {
    let j: LeaseJson = from_json(json)?;
    let bad = || IpamError::Storage("bad stored lease: port is not hex".into());
    let port = match j.port {
        None => None,
        Some(h) if h.len() % 2 == 0 && h.is_ascii() => Some(
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| bad())?
                .into_boxed_slice(),
        ),
        Some(_) => return Err(bad()),
    };
    Ok(Record {
        state: j.state,
        client: j.client,
        expires: j.expires,
        updated: j.updated,
        hostname: j.hostname,
        port,
    }
    .encode())
}

/// The client of an encoded lease record and whether it is bound.
pub fn lease_holder(record: &[u8]) -> Option<(ClientKey, bool)> {
    Record::decode(record)
        .ok()
        .map(|r| (r.client, r.state == LeaseState::Bound))
}

/// A live offer as a lease.
pub fn offered(ip: u32, subnet: &str, client: &ClientKey, expires: u32, at: u32) -> Lease {
    Lease {
        ip: Ipv4Addr::from(ip),
        subnet: subnet.to_owned(),
        client: client.clone(),
        state: LeaseState::Offered,
        expires_at: time(expires),
        updated_at: time(at),
        hostname: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostname over 255 bytes is cut on a character boundary, so the
    /// record still decodes.
    #[test]
    fn a_long_hostname_is_cut_between_characters() {
        let r = Record {
            state: LeaseState::Bound,
            client: "id:0a0b".parse().unwrap(),
            expires: 1,
            updated: 1,
            hostname: Some("é".repeat(200)),
            port: None,
        };
        let back = Record::decode(&r.encode()).unwrap();
        assert_eq!(back.hostname.unwrap(), "é".repeat(127));
    }

    #[test]
    fn record_round_trip() {
        let ports = [None, Some(b"\x0a\x00\x00\x02eth0/1".to_vec().into())];
        for (hostname, port) in [None, Some("web-1".to_owned())]
            .into_iter()
            .flat_map(|h| ports.clone().map(|p| (h.clone(), p)))
        {
            let r = Record {
                state: LeaseState::Declined,
                client: "id:0a0b".parse().unwrap(),
                expires: 1_700_000_000,
                updated: 1_699_999_000,
                hostname,
                port,
            };
            let bytes = r.encode();
            assert_eq!(bytes[0], if r.port.is_some() { 2 } else { 1 });
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
        assert!(Record::decode(&[1, 1, 0]).is_err());
        assert!(Record::decode(&[]).is_err());
    }
}
