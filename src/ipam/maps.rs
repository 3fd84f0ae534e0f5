//! Compact in-memory maps of the index: client → address, relay port →
//! addresses held.

use std::collections::HashMap;

use crate::client::ClientKey;

/// Client key → IPv4 of its latest stored lease. MAC keys (nearly all of
/// them) get a compact map: 12 bytes an entry instead of 32.
#[derive(Debug, Default)]
pub struct ClientMap {
    macs: HashMap<[u8; 6], u32>,
    other: HashMap<ClientKey, u32>,
}

impl ClientMap {
    pub fn get(&self, c: &ClientKey) -> Option<u32> {
        match c {
            ClientKey::Mac(m) => self.macs.get(m).copied(),
            other => self.other.get(other).copied(),
        }
    }
    pub fn insert(&mut self, c: &ClientKey, ip: u32) {
        match c {
            ClientKey::Mac(m) => self.macs.insert(*m, ip),
            other => self.other.insert(other.clone(), ip),
        };
    }
    pub fn remove(&mut self, c: &ClientKey) {
        match c {
            ClientKey::Mac(m) => self.macs.remove(m),
            other => self.other.remove(other),
        };
    }
}

/// Leases and live offers per relay port, for the per-port cap. Keyed by a
/// keyed hash of the port's bytes (whoever fills in option 82 picks them,
/// so the key must not be predictable); an entry lives only while its port
/// holds an address, so the map is bounded by the pools' size. `K` is the
/// address (IPv4, or a DHCPv6 address or prefix).
#[derive(Debug)]
pub struct Ports<K = u32> {
    hasher: std::hash::RandomState,
    /// Address → the port holding it.
    of: HashMap<K, u64>,
    /// Port → how many addresses it holds.
    count: HashMap<u64, u32>,
}

impl<K> Default for Ports<K> {
    fn default() -> Self {
        Self {
            hasher: Default::default(),
            of: HashMap::new(),
            count: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Ports<K> {
    pub fn hash(&self, port: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(port)
    }

    /// Addresses `port` (a [`Ports::hash`]) holds.
    pub fn held(&self, port: u64) -> u32 {
        self.count.get(&port).copied().unwrap_or(0)
    }

    pub fn of(&self, ip: K) -> Option<u64> {
        self.of.get(&ip).copied()
    }

    /// Attributes `ip` to `port` (`None`: to no port).
    pub fn set(&mut self, ip: K, port: Option<u64>) {
        let old = match port {
            Some(p) => self.of.insert(ip, p),
            None => self.of.remove(&ip),
        };
        if old == port {
            return;
        }
        if let Some(o) = old {
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.count.entry(o) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        if let Some(p) = port {
            *self.count.entry(p).or_insert(0) += 1;
        }
    }
}
