//! THROW-AWAY STUB of the DHCPv6 IPAM interface, in memory, so the v6
//! server builds and runs before the real storage lands; replaced whole by
//! the real one at merge. Nothing here is durable.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;

use super::error::IpamError;
use super::handle::Ipam;
use crate::client::ClientKey;

/// One identity association: a client's DUID, the IA's type and IAID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ia6Key {
    pub client: ClientKey,
    pub kind: Ia6Kind,
    pub iaid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ia6Kind {
    Na,
    Pd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ia6Op {
    Advertise,
    Commit,
    Extend,
    Release,
    Decline,
}

/// An address (/128) or delegated prefix held by an IA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held6 {
    pub prefix: Ipv6Net,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ia6Result {
    Held(Vec<Held6>),
    Exhausted,
    NoBinding,
    NotOnLink,
}

/// STUB: what the stub needs of a `[[subnet6]]` (it may not import config).
#[derive(Debug, Clone)]
pub struct StubSubnet6 {
    pub id: String,
    pub prefix: Ipv6Net,
    pub pools: Vec<(Ipv6Addr, Ipv6Addr)>,
    pub pd_pools: Vec<(Ipv6Net, u8)>,
    pub valid_lifetime: Duration,
}

/// The stub's state: subnets and bindings, per IPAM (by address).
#[derive(Default)]
struct Stub {
    subnets: Vec<StubSubnet6>,
    bindings: HashMap<(usize, String, Ia6Key), Held6>,
    fail: bool,
}

fn stub() -> std::sync::MutexGuard<'static, Stub> {
    static STUB: OnceLock<Mutex<Stub>> = OnceLock::new();
    STUB.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Candidates of a subnet for `kind`, first few thousand only (a stub).
fn candidates(s: &StubSubnet6, kind: Ia6Kind) -> Vec<Ipv6Net> {
    let mut out = Vec::new();
    match kind {
        Ia6Kind::Na => {
            for (start, end) in &s.pools {
                let (a, b) = (u128::from(*start), u128::from(*end));
                for x in a..=b.min(a + 4096) {
                    out.push(Ipv6Net::from(Ipv6Addr::from(x)));
                }
            }
        }
        Ia6Kind::Pd => {
            for (prefix, len) in &s.pd_pools {
                if let Ok(subs) = prefix.subnets(*len) {
                    out.extend(subs.take(4096));
                }
            }
        }
    }
    out
}

impl Ipam {
    /// STUB: the `[[subnet6]]` tables the stub allocates from.
    pub fn stub_subnets6(&self, subnets: &[StubSubnet6]) {
        stub().subnets = subnets.to_vec();
    }

    /// STUB: makes every later `ia6` fail with a storage error (or not).
    pub fn stub_fail6(&self, fail: bool) {
        stub().fail = fail;
    }

    /// STUB of the IA operation: in memory, not durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn ia6(
        &self,
        subnet: &str,
        ia: &Ia6Key,
        op: Ia6Op,
        hints: &[Ipv6Net],
        _port: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Ia6Result, IpamError> {
        let me = self as *const Ipam as usize;
        let mut st = stub();
        if st.fail && op != Ia6Op::Advertise {
            return Err(IpamError::Storage("stub failure".into()));
        }
        let s = st
            .subnets
            .iter()
            .find(|s| s.id == subnet)
            .cloned()
            .ok_or_else(|| IpamError::UnknownSubnet(subnet.into()))?;
        let key = (me, subnet.to_owned(), ia.clone());
        let fresh = Held6 {
            prefix: Ipv6Net::default(),
            expires_at: now + s.valid_lifetime,
        };
        let held = st.bindings.get(&key).copied();
        if matches!(op, Ia6Op::Commit | Ia6Op::Extend)
            && ia.kind == Ia6Kind::Na
            && hints.iter().any(|h| !s.prefix.contains(&h.addr()))
        {
            return Ok(Ia6Result::NotOnLink);
        }
        match (op, held) {
            (Ia6Op::Release | Ia6Op::Decline, Some(h)) => {
                st.bindings.remove(&key);
                Ok(Ia6Result::Held(vec![h]))
            }
            (Ia6Op::Release | Ia6Op::Decline | Ia6Op::Extend, None) => Ok(Ia6Result::NoBinding),
            (Ia6Op::Advertise, Some(h)) => Ok(Ia6Result::Held(vec![h])),
            (Ia6Op::Commit | Ia6Op::Extend, Some(h)) => {
                let h = Held6 {
                    prefix: h.prefix,
                    ..fresh
                };
                st.bindings.insert(key, h);
                Ok(Ia6Result::Held(vec![h]))
            }
            (Ia6Op::Advertise | Ia6Op::Commit, None) => {
                let taken: Vec<Ipv6Net> = st
                    .bindings
                    .iter()
                    .filter(|((m, _, _), _)| *m == me)
                    .map(|(_, h)| h.prefix)
                    .collect();
                let Some(prefix) = candidates(&s, ia.kind)
                    .into_iter()
                    .find(|c| !taken.contains(c))
                else {
                    return Ok(Ia6Result::Exhausted);
                };
                let h = Held6 { prefix, ..fresh };
                if op == Ia6Op::Commit {
                    st.bindings.insert(key, h);
                }
                Ok(Ia6Result::Held(vec![h]))
            }
        }
    }

    /// STUB: a fixed DUID-LL (the real one is persisted in the store).
    pub fn server_duid(&self) -> Result<Vec<u8>, IpamError> {
        Ok(vec![0, 3, 0, 1, 0x02, 0x76, 0x70, 0x63, 0x62, 0x78])
    }
}
