//! The DHCPv6 side of the IPAM's interface: an IA's key, what a message
//! asks of it, and what the IPAM answers. A leaf: the DHCPv6 server and
//! the IPAM both use it, neither through the other.

use std::time::SystemTime;

use ipnet::Ipv6Net;

use crate::client::ClientKey;

/// The key of one IA: a client's DUID, the IA's type and its IAID (IAIDs
/// are unique per type within a client, RFC 9915 12).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ia6Key {
    pub client: ClientKey,
    pub kind: Ia6Kind,
    pub iaid: u32,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Ia6Kind {
    /// IA_NA: one address (a /128).
    Na,
    /// IA_PD: one delegated prefix.
    Pd,
}

impl Ia6Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Na => "na",
            Self::Pd => "pd",
        }
    }
}

impl std::fmt::Display for Ia6Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.client, self.kind.as_str(), self.iaid)
    }
}

/// What one message asks of one IA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ia6Op {
    /// Pick and hold for the offer time, no write (Solicit).
    Advertise,
    /// Bind durably (Request, Solicit with Rapid Commit).
    Commit,
    /// Extend the IA's binding (Renew, Rebind).
    Extend,
    /// Give the IA's binding back.
    Release,
    /// The client found the address in use: quarantine it.
    Decline,
}

/// One address (a /128) or delegated prefix an IA holds, valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held6 {
    pub prefix: Ipv6Net,
    pub expires_at: SystemTime,
}

/// The IPAM's answer for one IA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ia6Result {
    /// What the IA holds now (empty after a Release or Decline that succeeded).
    Held(Vec<Held6>),
    /// No address or prefix left to give (NoAddrsAvail / NoPrefixAvail).
    Exhausted,
    /// The IA holds nothing here (NoBinding).
    NoBinding,
    /// A hint lies outside the subnet's prefix (NotOnLink).
    NotOnLink,
}

/// One IA of a message for [`crate::ipam::Ipam::ias6`]: its key and the
/// addresses or prefixes the client put in it.
#[derive(Debug, Clone, Copy)]
pub struct IaAsk<'a> {
    pub ia: &'a Ia6Key,
    pub hints: &'a [Ipv6Net],
}
