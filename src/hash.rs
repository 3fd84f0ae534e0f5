//! The hasher of maps whose keys a client picks (client keys, DUIDs and
//! IAIDs, hinted addresses): foldhash, seeded from the OS's randomness (not
//! from foldhash's own address-space guess) so an outsider cannot aim keys
//! at one bucket. A leaf: it imports nothing of the crate.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::time::SystemTime;

use foldhash::fast::{FoldHasher, SeedableRandomState};
use foldhash::SharedSeed;

/// A map keyed by what clients send.
pub type Map<K, V> = HashMap<K, V, Seeded>;
/// A set of what clients send.
pub type Set<K> = HashSet<K, Seeded>;

/// A randomly seeded foldhash: one shared seed per process, one more per map.
#[derive(Debug, Clone)]
pub struct Seeded(SeedableRandomState);

impl Default for Seeded {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        Self(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 bits of the OS's randomness (without any: std's own keyed hash of
/// the time, itself seeded from the OS when it can be).
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| RandomState::new().hash_one(SystemTime::now()))
}

/// 128 bits of the same.
pub fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}
