//! Per-client quotas shared by DHCP and the gateway: the governor quota for
//! a configured rate, and a keyed state store of a fixed size, since every
//! key is something a client sends and can forge.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::Quota;

use crate::config::Rate;
use crate::heap::{self, Owner};

/// `rate` with a burst of `burst` (at least 1).
pub fn quota(rate: Rate, burst: u32) -> Quota {
    let one = NonZeroU32::MIN;
    let count = NonZeroU32::new(rate.count).unwrap_or(one);
    let period = (rate.per / count.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(one))
}

/// A keyed quota store of at most `cap` keys. A key not in it while it is
/// full is measured against one shared state instead, so every identity
/// past the cap together gets one key's quota and a flood of invented
/// identities neither grows the map nor gets a fresh burst per identity.
/// Keys already in the map keep their own quota; `retain_recent` frees the
/// idle ones.
#[derive(Debug)]
pub struct CappedStore<K: Hash + Eq + Clone> {
    keys: DashMapStateStore<K>,
    shared: InMemoryState,
    cap: usize,
}

impl<K: Hash + Eq + Clone> CappedStore<K> {
    pub fn new(cap: usize) -> Self {
        let _owner = heap::scope(Owner::Clients);
        Self {
            keys: DashMapStateStore::default(),
            shared: InMemoryState::default(),
            cap,
        }
    }
}

impl<K: Hash + Eq + Clone> StateStore for CappedStore<K> {
    type Key = K;

    /// The length check and the insert are not one step: threads racing
    /// past a full check may each add one key, a few past `cap` at most.
    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let _owner = heap::scope(Owner::Clients);
        if !self.keys.contains_key(key) && self.keys.len() >= self.cap {
            return self.shared.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.keys.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for CappedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let _owner = heap::scope(Owner::Clients);
        self.keys.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        let _owner = heap::scope(Owner::Clients);
        self.keys.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
