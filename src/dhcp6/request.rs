//! A client message (not a relay envelope: see [`super::relay`]) decoded
//! into the fields the handler uses. Decoded here rather than by dhcproto:
//! its option list stops silently at the first bad option and reads fixed
//! sizes without checking the length field (see `relay.rs` tests), while
//! a server must refuse such a message whole.

use std::net::Ipv6Addr;

use dhcproto::v6::{MessageType, OptionCode as C};
use ipnet::Ipv6Net;

use super::error::Malformed6;
use super::wire::{
    addr_at, u32_at, walk, Budget, MAX_DATAGRAM, MAX_HINTS, MAX_IAS, MAX_OPTIONS, MAX_ORO,
};
use crate::client::{ClientKey, MAX_DUID, MIN_DUID};

type Step = Result<(), Malformed6>;

/// An identity association: IA_NA (hints are addresses) or IA_PD (prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia<T> {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    /// What the client asks for (IAADDR / IAPREFIX), in its order.
    pub hints: Vec<T>,
}

pub type IaNa = Ia<Ipv6Addr>;
pub type IaPd = Ia<Ipv6Net>;

/// A link-layer address (RFC 6939 option 79, or a DUID-LL/LLT's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLayer {
    /// IANA hardware type (1 = Ethernet).
    pub htype: u16,
    pub addr: Box<[u8]>,
}

impl LinkLayer {
    /// Longest link-layer address kept (InfiniBand's is 20 bytes).
    pub const MAX: usize = 20;

    /// The Ethernet MAC, if that is what this is.
    pub fn mac(&self) -> Option<[u8; 6]> {
        (self.htype == 1).then(|| self.addr.as_ref().try_into().ok())?
    }

    /// `type(2) address`, as option 79 carries it.
    pub fn parse(v: &[u8]) -> Result<Self, Malformed6> {
        match v {
            [h0, h1, addr @ ..] if (1..=Self::MAX).contains(&addr.len()) => Ok(Self {
                htype: u16::from_be_bytes([*h0, *h1]),
                addr: addr.into(),
            }),
            _ => Err(Malformed6::BadLength),
        }
    }
}

/// A decoded client message. Owns its data so it can move into a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request6 {
    pub kind: MessageType,
    pub xid: [u8; 3],
    /// The Client Identifier's DUID as `duid:HEX` (None: no option 1).
    pub client: Option<ClientKey>,
    pub server_id: Option<Box<[u8]>>,
    pub ia_na: Vec<IaNa>,
    pub ia_pd: Vec<IaPd>,
    /// Option Request option codes, in the client's order.
    pub oro: Vec<u16>,
    pub rapid_commit: bool,
    /// Option 8, hundredths of a second.
    pub elapsed: Option<u16>,
    /// Option 79 from the relay closest to the client, if relayed with one.
    pub lladdr: Option<LinkLayer>,
}

impl Request6 {
    /// Decodes a client message. Relay envelopes are taken off first by
    /// [`super::relay::unwrap`]; a relay type here is refused.
    pub fn decode(buf: &[u8]) -> Result<Self, Malformed6> {
        if buf.len() > MAX_DATAGRAM {
            return Err(Malformed6::TooLong);
        }
        let [t, x0, x1, x2, opts @ ..] = buf else {
            return Err(Malformed6::TooShort);
        };
        let kind = client_kind(*t)?;
        let mut r = Self {
            kind,
            xid: [*x0, *x1, *x2],
            client: None,
            server_id: None,
            ia_na: Vec::new(),
            ia_pd: Vec::new(),
            oro: Vec::new(),
            rapid_commit: false,
            elapsed: None,
            lladdr: None,
        };
        let budget = Budget::new(MAX_OPTIONS);
        let mut oro_seen = false;
        walk(opts, &budget, |code, v| {
            r.read(code, v, &budget, &mut oro_seen)
        })?;
        Ok(r)
    }

    /// Reads one top-level option into `self`.
    fn read(&mut self, code: u16, v: &[u8], budget: &Budget, oro_seen: &mut bool) -> Step {
        match C::from(code) {
            C::ClientId => once(
                &mut self.client,
                ClientKey::duid(v).ok_or(Malformed6::DuidLength)?,
            ),
            C::ServerId => once(&mut self.server_id, duid(v)?.into()),
            C::IANA | C::IAPD if self.ia_na.len() + self.ia_pd.len() >= MAX_IAS => {
                Err(Malformed6::TooManyIas)
            }
            C::IANA => {
                let ia = ia(v, budget, iaaddr)?;
                unique(&self.ia_na, &ia)?;
                self.ia_na.push(ia);
                Ok(())
            }
            C::IAPD => {
                let ia = ia(v, budget, iaprefix)?;
                unique(&self.ia_pd, &ia)?;
                self.ia_pd.push(ia);
                Ok(())
            }
            C::ORO if std::mem::replace(oro_seen, true) => Err(Malformed6::Duplicate),
            C::ORO if v.len() % 2 != 0 => Err(Malformed6::BadLength),
            C::ORO if v.len() / 2 > MAX_ORO => Err(Malformed6::TooManyOptions),
            C::ORO => {
                let codes = v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                self.oro = codes.collect();
                Ok(())
            }
            C::ElapsedTime => match v {
                [a, b] => once(&mut self.elapsed, u16::from_be_bytes([*a, *b])),
                _ => Err(Malformed6::BadLength),
            },
            C::RapidCommit | C::ReconfAccept if !v.is_empty() => Err(Malformed6::BadLength),
            C::RapidCommit => {
                self.rapid_commit = true;
                Ok(())
            }
            C::RelayMsg => Err(Malformed6::RelayInClient),
            _ => Ok(()),
        }
    }

    /// The client's MAC: option 79 from its relay, else its DUID-LLT/LL's
    /// Ethernet address (what admission isolates by, besides the DUID).
    pub fn mac(&self) -> Option<[u8; 6]> {
        if let Some(l) = &self.lladdr {
            return l.mac();
        }
        let Some(ClientKey::Duid(d)) = &self.client else {
            return None;
        };
        match d.as_ref() {
            [0, 1, 0, 1, _, _, _, _, mac @ ..] | [0, 3, 0, 1, mac @ ..] => mac.try_into().ok(),
            _ => None,
        }
    }

    /// The raw DUID of the Client Identifier (echoed in replies).
    pub fn client_duid(&self) -> Option<&[u8]> {
        match &self.client {
            Some(ClientKey::Duid(d)) => Some(d),
            _ => None,
        }
    }

    pub fn wants(&self, code: C) -> bool {
        self.oro.contains(&u16::from(code))
    }
}

/// The key of one IA and its type live in the IPAM's interface; the old
/// names stay for the code that used them.
pub use crate::ipam::{Ia6Key as IaKey, Ia6Kind as IaKind};

/// Message types a client sends to a server.
fn client_kind(t: u8) -> Result<MessageType, Malformed6> {
    use MessageType as M;
    match M::from(t) {
        k @ (M::Solicit
        | M::Request
        | M::Confirm
        | M::Renew
        | M::Rebind
        | M::Release
        | M::Decline
        | M::InformationRequest) => Ok(k),
        M::Advertise | M::Reply | M::Reconfigure => Err(Malformed6::ServerMessage),
        M::RelayRepl => Err(Malformed6::RelayReply),
        _ => Err(Malformed6::Unsupported),
    }
}

fn duid(v: &[u8]) -> Result<&[u8], Malformed6> {
    if (MIN_DUID..=MAX_DUID).contains(&v.len()) {
        Ok(v)
    } else {
        Err(Malformed6::DuidLength)
    }
}

fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), Malformed6> {
    match slot.replace(v) {
        None => Ok(()),
        Some(_) => Err(Malformed6::Duplicate),
    }
}

fn unique<T>(seen: &[Ia<T>], ia: &Ia<T>) -> Result<(), Malformed6> {
    match seen.iter().any(|s| s.iaid == ia.iaid) {
        true => Err(Malformed6::Duplicate),
        false => Ok(()),
    }
}

/// Reads one IA sub-option as a hint (`None`: some other option).
type HintReader<T> = fn(u16, &[u8], &Budget) -> Result<Option<T>, Malformed6>;

/// `IAID(4) T1(4) T2(4) options`; `hint` reads an IAADDR or IAPREFIX.
fn ia<T>(v: &[u8], budget: &Budget, hint: HintReader<T>) -> Result<Ia<T>, Malformed6> {
    let (Some(iaid), Some(t1), Some(t2)) = (u32_at(v, 0), u32_at(v, 4), u32_at(v, 8)) else {
        return Err(Malformed6::BadLength);
    };
    let mut hints = Vec::new();
    walk(&v[12..], budget, |code, o| {
        if let Some(h) = hint(code, o, budget)? {
            if hints.len() >= MAX_HINTS {
                return Err(Malformed6::TooManyHints);
            }
            hints.push(h);
        }
        Ok(())
    })?;
    Ok(Ia {
        iaid,
        t1,
        t2,
        hints,
    })
}

/// IAADDR: `address(16) preferred(4) valid(4) options` (options framed,
/// not read).
fn iaaddr(code: u16, v: &[u8], budget: &Budget) -> Result<Option<Ipv6Addr>, Malformed6> {
    if C::from(code) != C::IAAddr {
        return Ok(None);
    }
    let (Some(addr), Some(opts)) = (addr_at(v, 0), v.get(24..)) else {
        return Err(Malformed6::BadLength);
    };
    walk(opts, budget, |_, _| Ok(()))?;
    Ok(Some(addr))
}

/// IAPREFIX: `preferred(4) valid(4) length(1) prefix(16) options`.
fn iaprefix(code: u16, v: &[u8], budget: &Budget) -> Result<Option<Ipv6Net>, Malformed6> {
    if C::from(code) != C::IAPrefix {
        return Ok(None);
    }
    let (Some(&len), Some(addr), Some(opts)) = (v.get(8), addr_at(v, 9), v.get(25..)) else {
        return Err(Malformed6::BadLength);
    };
    walk(opts, budget, |_, _| Ok(()))?;
    Ipv6Net::new(addr, len)
        .map(|n| Some(n.trunc()))
        .map_err(|_| Malformed6::BadLength)
}

#[cfg(test)]
mod tests {
    use dhcproto::v6::{self, DhcpOption as O, DhcpOptions, Message, IANA, IAPD};
    use dhcproto::Encodable;

    use super::*;
    use crate::dhcp6::wire::put;

    const DUID: [u8; 14] = [0, 1, 0, 1, 0x1c, 0x39, 0xcf, 0x88, 2, 0, 0, 0, 0, 9];

    fn encode(kind: MessageType, opts: Vec<O>) -> Vec<u8> {
        let mut m = Message::new_with_id(kind, [1, 2, 3]);
        for o in opts {
            m.opts_mut().insert(o);
        }
        m.to_vec().unwrap()
    }

    fn iaaddr(a: &str) -> O {
        O::IAAddr(v6::IAAddr {
            addr: a.parse().unwrap(),
            preferred_life: 0,
            valid_life: 0,
            opts: DhcpOptions::new(),
        })
    }

    #[test]
    fn a_solicit_from_dhcproto_decodes_into_every_field() {
        let mut na_opts = DhcpOptions::new();
        na_opts.insert(iaaddr("fd00:77::105"));
        let mut pd_opts = DhcpOptions::new();
        pd_opts.insert(O::IAPrefix(v6::IAPrefix {
            preferred_lifetime: 0,
            valid_lifetime: 0,
            prefix_len: 56,
            prefix_ip: "::".parse().unwrap(),
            opts: DhcpOptions::new(),
        }));
        let b = encode(
            MessageType::Solicit,
            vec![
                O::ClientId(DUID.to_vec()),
                O::IANA(IANA {
                    id: 7,
                    t1: 0,
                    t2: 0,
                    opts: na_opts,
                }),
                O::IAPD(IAPD {
                    id: 9,
                    t1: 1,
                    t2: 2,
                    opts: pd_opts,
                }),
                O::ORO(v6::ORO {
                    opts: vec![
                        v6::OptionCode::DomainNameServers,
                        v6::OptionCode::DomainSearchList,
                    ],
                }),
                O::RapidCommit,
                O::ElapsedTime(30),
            ],
        );
        let r = Request6::decode(&b).unwrap();
        assert_eq!(r.kind, MessageType::Solicit);
        assert_eq!(r.xid, [1, 2, 3]);
        assert_eq!(r.client, ClientKey::duid(&DUID));
        assert_eq!(
            r.client.as_ref().unwrap().to_string(),
            "duid:000100011c39cf88020000000009"
        );
        assert_eq!(
            r.ia_na,
            vec![Ia {
                iaid: 7,
                t1: 0,
                t2: 0,
                hints: vec!["fd00:77::105".parse().unwrap()]
            }]
        );
        assert_eq!(r.ia_pd[0].iaid, 9);
        assert_eq!(r.ia_pd[0].hints, vec!["::/56".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(r.oro, vec![23, 24]);
        assert!(r.rapid_commit);
        assert_eq!(r.elapsed, Some(30));
        assert_eq!(r.mac(), Some([2, 0, 0, 0, 0, 9]), "from the DUID-LLT");
        let key = IaKey {
            client: r.client.clone().unwrap(),
            kind: IaKind::Pd,
            iaid: 9,
        };
        assert_eq!(key.to_string(), "duid:000100011c39cf88020000000009/pd/9");
    }

    /// Each malformation, and the typed error it is refused with.
    #[test]
    fn malformed_messages_are_refused_with_their_reason() {
        let base = |kind: u8| {
            let mut m = vec![kind, 1, 2, 3];
            put(&mut m, 1, &DUID);
            m
        };
        let with = |extra: &[(u16, &[u8])]| {
            let mut m = base(1);
            for (c, v) in extra {
                put(&mut m, *c, v);
            }
            m
        };
        let ia = |id: u8| [0, 0, 0, id, 0, 0, 0, 0, 0, 0, 0, 0];
        let many: Vec<[u8; 12]> = (0..=MAX_IAS as u8).map(ia).collect();
        let many: Vec<(u16, &[u8])> = many.iter().map(|v| (3u16, &v[..])).collect();
        let long = [7u8; MAX_DUID + 1];
        let cases: Vec<(Vec<u8>, Malformed6)> = vec![
            (vec![1, 2, 3], Malformed6::TooShort),
            (vec![0; MAX_DATAGRAM + 1], Malformed6::TooLong),
            (base(2), Malformed6::ServerMessage),
            (base(7), Malformed6::ServerMessage),
            (base(13), Malformed6::RelayReply),
            (base(12), Malformed6::Unsupported),
            (base(99), Malformed6::Unsupported),
            (with(&[(1, &DUID)]), Malformed6::Duplicate),
            (with(&[(2, &long)]), Malformed6::DuidLength),
            (with(&[(2, &[0, 1])]), Malformed6::DuidLength),
            (with(&many), Malformed6::TooManyIas),
            (with(&[(3, &ia(1)), (3, &ia(1))]), Malformed6::Duplicate),
            (with(&[(3, &[0, 0, 0, 1])]), Malformed6::BadLength),
            (with(&[(6, &[0, 23, 0])]), Malformed6::BadLength),
            (with(&[(8, &[0, 0, 0])]), Malformed6::BadLength),
            (with(&[(14, &[1])]), Malformed6::BadLength),
            (with(&[(9, &base(1))]), Malformed6::RelayInClient),
            (
                {
                    let mut m = base(1);
                    m.truncate(m.len() - 1);
                    m
                },
                Malformed6::OptionOverrun,
            ),
            (
                {
                    let mut m = base(1);
                    m.extend_from_slice(&[0, 8, 0]);
                    m
                },
                Malformed6::TruncatedOption,
            ),
            (
                with(&vec![(99u16, &[][..]); MAX_OPTIONS]),
                Malformed6::TooManyOptions,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Request6::decode(&bytes).map(|_| ()), Err(want), "{want:?}");
        }
        // An IA with more hints than accepted, and one with a bad prefix length.
        let mut hints = ia(1).to_vec();
        for _ in 0..=MAX_HINTS {
            put(&mut hints, 5, &[0; 24]);
        }
        assert_eq!(
            Request6::decode(&with(&[(3, &hints)])).map(|_| ()),
            Err(Malformed6::TooManyHints)
        );
        let mut pd = ia(1).to_vec();
        let mut p = vec![0; 25];
        p[8] = 129;
        put(&mut pd, 26, &p);
        assert_eq!(
            Request6::decode(&with(&[(25, &pd)])).map(|_| ()),
            Err(Malformed6::BadLength)
        );
    }
}
