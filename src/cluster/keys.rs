//! The key layout under the prefix (DESIGN.md "Cluster"), and the mapping
//! between the IPAM store's trees (sled-shaped keys and values) and etcd's
//! keys and JSON values. Pure.

use std::net::Ipv4Addr;

use crate::ipam::{
    key6_from_text, key6_to_text, lease6_from_json, lease6_to_json, lease_from_json, lease_to_json,
    Ia6Key, Ia6Kind, IpamError, TreeId,
};

/// Every key lives under `prefix/`.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix with a trailing slash.
    root: String,
}

/// What an etcd key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A key of one of the IPAM store's trees, in that tree's key form.
    Tree(TreeId, Vec<u8>),
    /// `nodes/<node>`.
    Node(String),
    /// `blocks/<subnet>/<first-ip>`.
    Block(String, u32),
    /// `bindings/<client>`: the address a client is bound to.
    Binding(String),
    /// `bindings6/<client>/<na|pd>/<iaid>`: the address or prefix (as
    /// `leases6/` names it) one DHCPv6 IA is bound to.
    Binding6(String),
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            root: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    /// The range every key of the cluster is in (a prefix).
    pub fn all(&self) -> Vec<u8> {
        self.root.clone().into_bytes()
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.root).into_bytes()
    }

    pub fn node(&self, name: &str) -> Vec<u8> {
        self.key(&format!("nodes/{name}"))
    }

    pub fn block(&self, subnet: &str, first: u32) -> Vec<u8> {
        self.key(&format!("blocks/{subnet}/{}", Ipv4Addr::from(first)))
    }

    /// Every block of `subnet` (a prefix).
    pub fn blocks(&self, subnet: &str) -> Vec<u8> {
        self.key(&format!("blocks/{subnet}/"))
    }

    pub fn binding(&self, client: &str) -> Vec<u8> {
        self.key(&format!("bindings/{client}"))
    }

    /// The key of one IA's v6 binding (`ia` as its text, see [`ia_of`]).
    pub fn binding6(&self, ia: &str) -> Vec<u8> {
        self.key(&format!("bindings6/{ia}"))
    }

    /// The etcd key of a store key (`None`: a tree the cluster does not
    /// keep: the legacy clients tree).
    pub fn of_tree(&self, tree: TreeId, key: &[u8]) -> Option<Vec<u8>> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(match tree {
            TreeId::Subnets => self.key(&format!("subnets/{}", text(key))),
            TreeId::Leases => {
                let ip = Ipv4Addr::from(<[u8; 4]>::try_from(key).ok()?);
                self.key(&format!("leases/{ip}"))
            }
            TreeId::Reservations => {
                let (subnet, client) = split_reservation(key)?;
                self.key(&format!("reservations/{subnet}/{client}"))
            }
            TreeId::Isolations => self.key(&format!("isolations/{}", text(key))),
            TreeId::Meta => self.key(&format!("meta/{}", text(key))),
            TreeId::Subnets6 => self.key(&format!("subnets6/{}", text(key))),
            TreeId::Leases6 => self.key(&format!("leases6/{}", key6_to_text(key)?)),
            TreeId::Clients => return None,
        })
    }

    /// What `key` names (`None`: outside the layout; ignored).
    pub fn parse(&self, key: &[u8]) -> Option<Parsed> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.root)?;
        let (kind, name) = rest.split_once('/')?;
        Some(match kind {
            "nodes" => Parsed::Node(name.to_owned()),
            "bindings" => Parsed::Binding(name.to_owned()),
            "bindings6" => Parsed::Binding6(ia_of(name)?.to_string()),
            "blocks" => {
                let (subnet, ip) = name.rsplit_once('/')?;
                Parsed::Block(subnet.to_owned(), u32::from(ip.parse::<Ipv4Addr>().ok()?))
            }
            "subnets" => Parsed::Tree(TreeId::Subnets, name.as_bytes().to_vec()),
            "leases" => {
                let ip: Ipv4Addr = name.parse().ok()?;
                Parsed::Tree(TreeId::Leases, u32::from(ip).to_be_bytes().to_vec())
            }
            "reservations" => {
                let (subnet, client) = name.split_once('/')?;
                let mut k = subnet.as_bytes().to_vec();
                k.push(0);
                k.extend_from_slice(client.as_bytes());
                Parsed::Tree(TreeId::Reservations, k)
            }
            "isolations" => Parsed::Tree(TreeId::Isolations, name.as_bytes().to_vec()),
            "meta" => Parsed::Tree(TreeId::Meta, name.as_bytes().to_vec()),
            "subnets6" => Parsed::Tree(TreeId::Subnets6, name.as_bytes().to_vec()),
            "leases6" => Parsed::Tree(TreeId::Leases6, key6_from_text(name)?),
            _ => return None,
        })
    }
}

/// An IA from its text (`client/na|pd/iaid`, as `Ia6Key` displays it).
pub fn ia_of(text: &str) -> Option<Ia6Key> {
    let (rest, iaid) = text.rsplit_once('/')?;
    let (client, kind) = rest.rsplit_once('/')?;
    Some(Ia6Key {
        client: client.parse().ok()?,
        kind: match kind {
            "na" => Ia6Kind::Na,
            "pd" => Ia6Kind::Pd,
            _ => return None,
        },
        iaid: iaid.parse().ok()?,
    })
}

/// A reservation key is `subnet \0 client`.
fn split_reservation(key: &[u8]) -> Option<(String, String)> {
    let at = key.iter().position(|b| *b == 0)?;
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    Some((text(&key[..at])?, text(&key[at + 1..])?))
}

/// A store value → the value kept in etcd (leases as JSON; the other
/// trees are JSON already, meta is raw).
pub fn to_etcd(tree: TreeId, value: &[u8]) -> Result<Vec<u8>, IpamError> {
    match tree {
        TreeId::Leases => lease_to_json(value),
        TreeId::Leases6 => lease6_to_json(value),
        _ => Ok(value.to_vec()),
    }
}

/// The reverse of [`to_etcd`].
pub fn from_etcd(tree: TreeId, value: &[u8]) -> Result<Vec<u8>, IpamError> {
    match tree {
        TreeId::Leases => lease_from_json(value),
        TreeId::Leases6 => lease6_from_json(value),
        _ => Ok(value.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tree_key_round_trips_through_its_etcd_key() {
        let keys = Keys::new("/vpcbox/v1/");
        let mut na = vec![0xfd, 0, 0, 0x77];
        na.extend([0; 11]);
        na.extend([0x10, 128]);
        let mut pd = vec![0xfd, 0, 0, 0x78, 0, 0, 1];
        pd.extend([0; 9]);
        pd.push(56);
        let cases: [(TreeId, Vec<u8>); 8] = [
            (TreeId::Subnets, b"lab".to_vec()),
            (TreeId::Leases, vec![10, 0, 0, 7]),
            (TreeId::Reservations, b"lab\0mac:02:00:00:00:00:10".to_vec()),
            (TreeId::Isolations, b"mac:02:00:00:00:00:11".to_vec()),
            (TreeId::Meta, b"schema".to_vec()),
            (TreeId::Subnets6, b"lab6".to_vec()),
            (TreeId::Leases6, na.clone()),
            (TreeId::Leases6, pd.clone()),
        ];
        for (tree, key) in cases {
            let etcd = keys.of_tree(tree, &key).unwrap();
            assert!(etcd.starts_with(b"/vpcbox/v1/"));
            assert_eq!(keys.parse(&etcd), Some(Parsed::Tree(tree, key)));
        }
        assert_eq!(
            keys.of_tree(TreeId::Leases, &[10, 0, 0, 7]).unwrap(),
            b"/vpcbox/v1/leases/10.0.0.7"
        );
        let block = keys.block("lab", u32::from(Ipv4Addr::new(10, 0, 0, 16)));
        assert_eq!(block, b"/vpcbox/v1/blocks/lab/10.0.0.16");
        assert_eq!(
            keys.parse(&block),
            Some(Parsed::Block("lab".into(), 0x0a00_0010))
        );
        assert_eq!(keys.parse(b"/other/nodes/a"), None);
        assert_eq!(
            keys.of_tree(TreeId::Leases6, &na).unwrap(),
            b"/vpcbox/v1/leases6/fd00:77::10"
        );
        assert_eq!(
            keys.of_tree(TreeId::Leases6, &pd).unwrap(),
            b"/vpcbox/v1/leases6/fd00:78:0:100::/56"
        );
        let ia = "duid:000100010a0b/pd/7";
        assert_eq!(ia_of(ia).unwrap().to_string(), ia);
        let b6 = keys.binding6(ia);
        assert_eq!(keys.parse(&b6), Some(Parsed::Binding6(ia.into())));
        assert_eq!(keys.parse(b"/vpcbox/v1/bindings6/duid:00/xx/1"), None);
        assert_eq!(keys.parse(b"/vpcbox/v1/leases6/fd00::/0"), None);
    }
}
