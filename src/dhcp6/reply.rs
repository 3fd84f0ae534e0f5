//! Building Advertise and Reply messages with dhcproto's v6 encoder (right
//! for what a server sends: typed options, exact lengths). Relay-Repl
//! envelopes go around the bytes afterwards ([`super::relay::wrap`]).

use std::net::Ipv6Addr;
use std::time::SystemTime;

use dhcproto::v6::{
    DhcpOption as O, DhcpOptions, IAAddr, IAPrefix, Message, MessageType, OptionCode, Status,
    StatusCode, UnknownOption, IANA, IAPD,
};
use dhcproto::{Encodable, Name};
use ipnet::Ipv6Net;

use super::request::Request6;
use crate::config::Subnet6Config;

/// A built message, ready for [`super::relay::wrap`] or the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply6 {
    pub kind: MessageType,
    pub bytes: Vec<u8>,
}

/// One address (a /128) or delegated prefix, with lifetimes in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease6 {
    pub prefix: Ipv6Net,
    pub preferred: u32,
    pub valid: u32,
}

impl Lease6 {
    pub fn addr(addr: Ipv6Addr, preferred: u32, valid: u32) -> Self {
        Self {
            prefix: Ipv6Net::from(addr),
            preferred,
            valid,
        }
    }

    /// A binding of `subnet` that ends at `expires_at`, as seen at `now`:
    /// both lifetimes count down from when it was last extended (a renewal
    /// answered from the cache gives what is left, not a fresh lease).
    pub fn remaining(
        prefix: Ipv6Net,
        subnet: &Subnet6Config,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Self {
        let full = subnet.valid_lifetime.as_secs();
        let valid = expires_at
            .duration_since(now)
            .unwrap_or_default()
            .as_secs()
            .min(full);
        let used = full - valid;
        let preferred = subnet.preferred_lifetime.as_secs().saturating_sub(used);
        let secs = |s: u64| u32::try_from(s).unwrap_or(u32::MAX);
        Self {
            prefix,
            preferred: secs(preferred),
            valid: secs(valid),
        }
    }
}

/// One IA of the reply: its leases, or a status and none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IaReply {
    Leases(Vec<Lease6>),
    Status(Status),
}

/// A reply under construction: header, identifiers, then options.
pub struct Builder {
    msg: Message,
}

impl Builder {
    /// `kind` to `req`, with our Server Identifier and the client's own.
    pub fn new(kind: MessageType, req: &Request6, server_duid: &[u8]) -> Self {
        let mut msg = Message::new_with_id(kind, req.xid);
        msg.opts_mut().insert(O::ServerId(server_duid.to_vec()));
        if let Some(d) = req.client_duid() {
            msg.opts_mut().insert(O::ClientId(d.to_vec()));
        }
        Self { msg }
    }

    pub fn status(mut self, status: Status, text: &str) -> Self {
        self.msg.opts_mut().insert(status_opt(status, text));
        self
    }

    pub fn rapid_commit(mut self) -> Self {
        self.msg.opts_mut().insert(O::RapidCommit);
        self
    }

    pub fn ia_na(mut self, iaid: u32, r: &IaReply) -> Self {
        let (t1, t2, opts) = ia_body(r, |l| {
            O::IAAddr(IAAddr {
                addr: l.prefix.addr(),
                preferred_life: l.preferred,
                valid_life: l.valid,
                opts: DhcpOptions::new(),
            })
        });
        let ia = IANA {
            id: iaid,
            t1,
            t2,
            opts,
        };
        self.msg.opts_mut().insert(O::IANA(ia));
        self
    }

    pub fn ia_pd(mut self, iaid: u32, r: &IaReply) -> Self {
        let (t1, t2, opts) = ia_body(r, |l| {
            O::IAPrefix(IAPrefix {
                preferred_lifetime: l.preferred,
                valid_lifetime: l.valid,
                prefix_len: l.prefix.prefix_len(),
                prefix_ip: l.prefix.network(),
                opts: DhcpOptions::new(),
            })
        });
        let ia = IAPD {
            id: iaid,
            t1,
            t2,
            opts,
        };
        self.msg.opts_mut().insert(O::IAPD(ia));
        self
    }

    /// DNS servers (23) and the search domain (24), each when the client
    /// asked for it and the subnet has one.
    pub fn config(mut self, req: &Request6, subnet: Option<&Subnet6Config>) -> Self {
        let Some(s) = subnet else { return self };
        if req.wants(OptionCode::DomainNameServers) && !s.dns.is_empty() {
            self.msg
                .opts_mut()
                .insert(O::DomainNameServers(s.dns.clone()));
        }
        let name = s.domain.as_deref().and_then(|d| Name::from_ascii(d).ok());
        if let (true, Some(name)) = (req.wants(OptionCode::DomainSearchList), name) {
            self.msg.opts_mut().insert(O::DomainSearchList(vec![name]));
        }
        self
    }

    /// A 4-byte seconds option dhcproto has no variant for (82, 83).
    pub fn seconds(mut self, code: OptionCode, secs: u32) -> Self {
        let o = UnknownOption::new(code, secs.to_be_bytes().to_vec());
        self.msg.opts_mut().insert(O::Unknown(o));
        self
    }

    pub fn build(self) -> Reply6 {
        // Encoding into a Vec fails only past u16 lengths, which bounded
        // requests and answers never reach; an empty reply is never sent.
        Reply6 {
            kind: self.msg.msg_type(),
            bytes: self.msg.to_vec().unwrap_or_default(),
        }
    }
}

fn status_opt(status: Status, text: &str) -> O {
    O::StatusCode(StatusCode {
        status,
        msg: text.to_owned(),
    })
}

/// T1, T2 and the options of one IA: T1 = 1/2 and T2 = 4/5 of the
/// shortest preferred lifetime (RFC 9915 21.4), 0 when nothing is leased.
fn ia_body(r: &IaReply, opt: impl Fn(&Lease6) -> O) -> (u32, u32, DhcpOptions) {
    let mut opts = DhcpOptions::new();
    match r {
        IaReply::Leases(ls) => {
            let pref = ls.iter().map(|l| l.preferred).min().unwrap_or(0);
            for l in ls {
                opts.insert(opt(l));
            }
            let t1 = pref / 2;
            let t2 = (u64::from(pref) * 4 / 5) as u32;
            (t1, t2, opts)
        }
        IaReply::Status(s) => {
            opts.insert(status_opt(*s, status_text(*s)));
            (0, 0, opts)
        }
    }
}

/// The status message text sent with each code.
pub fn status_text(s: Status) -> &'static str {
    match s {
        Status::Success => "ok",
        Status::NoAddrsAvail => "no addresses available",
        Status::NoBinding => "no binding for this IA",
        Status::NotOnLink => "not on link",
        Status::UseMulticast => "use multicast",
        Status::NoPrefixAvail => "no prefixes available",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn remaining_lifetimes_count_down_together() {
        let subnet = Subnet6Config::new("s", "fd00:77::/64".parse().unwrap());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let p: Ipv6Net = "fd00:77::5/128".parse().unwrap();
        let at = |secs| Lease6::remaining(p, &subnet, now + Duration::from_secs(secs), now);
        assert_eq!((at(3600).preferred, at(3600).valid), (1800, 3600));
        assert_eq!((at(3000).preferred, at(3000).valid), (1200, 3000));
        assert_eq!((at(1000).preferred, at(1000).valid), (0, 1000));
        assert_eq!((at(99_999).preferred, at(99_999).valid), (1800, 3600));
        let past = Lease6::remaining(p, &subnet, now - Duration::from_secs(5), now);
        assert_eq!((past.preferred, past.valid), (0, 0));
    }
}
