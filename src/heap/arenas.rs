//! One jemalloc arena per tagged owner, created once at start, and the
//! per-arena figures that say how much of the heap each owner holds.

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::Once;

use tikv_jemalloc_ctl::raw;
use tikv_jemalloc_sys as ffi;

use super::owner::Owner;

/// The `mallocx` arena flag of each owner's allocations, by owner tag; 0
/// keeps jemalloc's automatic arenas (unowned, or before [`init`]).
static FLAGS: [AtomicI32; 5] = [const { AtomicI32::new(0) }; 5];

/// The arena index of each tagged owner, by owner tag (unset: `u32::MAX`).
static ARENA: [std::sync::atomic::AtomicU32; 5] =
    [const { std::sync::atomic::AtomicU32::new(u32::MAX) }; 5];

#[inline]
pub(super) fn flags_of(tag: u8) -> i32 {
    FLAGS.get(usize::from(tag)).map_or(0, |f| f.load(Relaxed))
}

/// The arena index of `tag`'s owner, once [`init`] made it.
pub(super) fn arena_of(tag: u8) -> Option<u32> {
    let a = ARENA.get(usize::from(tag))?.load(Relaxed);
    (a != u32::MAX).then_some(a)
}

/// Creates the owners' arenas; until then every allocation is unowned.
/// Idempotent. False if jemalloc refused (allocations then stay unowned).
pub fn init() -> bool {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for owner in Owner::TAGGED {
            // SAFETY: `arenas.create` returns an unsigned (the new index).
            #[allow(unsafe_code)]
            let Ok(index) = (unsafe { raw::read::<libc::c_uint>(b"arenas.create\0") }) else {
                tracing::warn!("jemalloc refused an arena; memory by owner is off");
                return;
            };
            let tag = owner as usize;
            ARENA[tag].store(index, Relaxed);
            FLAGS[tag].store(ffi::MALLOCX_ARENA(index as usize), Relaxed);
        }
    });
    ARENA[Owner::Store as usize].load(Relaxed) != u32::MAX
}

/// The heap divided by arena, in bytes of live allocations, read at one
/// jemalloc epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapByOwner {
    pub store: u64,
    pub clients: u64,
    pub dhcp: u64,
    pub gateway: u64,
    /// Live bytes in jemalloc's automatic arenas (everything unowned).
    pub unowned: u64,
    /// jemalloc's `stats.allocated`: what the five above add up to.
    pub allocated: u64,
    /// Freed pages jemalloc keeps resident until they decay or are purged.
    pub dirty: u64,
}

/// Reads the per-arena figures; `None` before [`init`] or without stats.
pub fn read() -> Option<HeapByOwner> {
    if ARENA[Owner::Store as usize].load(Relaxed) == u32::MAX {
        return None;
    }
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let narenas = tikv_jemalloc_ctl::arenas::narenas::read().ok()?;
    let mut h = HeapByOwner::default();
    let owned: Vec<(u32, Owner)> = Owner::TAGGED
        .iter()
        .map(|o| (ARENA[*o as usize].load(Relaxed), *o))
        .collect();
    for i in 0..narenas {
        let bytes = arena_allocated(i);
        match owned.iter().find(|(a, _)| *a == i).map(|(_, o)| *o) {
            Some(Owner::Store) => h.store = bytes,
            Some(Owner::Clients) => h.clients = bytes,
            Some(Owner::Dhcp) => h.dhcp = bytes,
            Some(Owner::Gateway) => h.gateway = bytes,
            _ => h.unowned += bytes,
        }
    }
    h.allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
    let page = ctl_usize("arenas.page")?;
    h.dirty = ctl_usize("stats.arenas.4096.pdirty").unwrap_or(0) * page; // 4096: all arenas
    Some(h)
}

/// Live bytes (small and large) in arena `i`; 0 for an arena not in use.
fn arena_allocated(i: u32) -> u64 {
    let small = ctl_usize(&format!("stats.arenas.{i}.small.allocated"));
    let large = ctl_usize(&format!("stats.arenas.{i}.large.allocated"));
    small.unwrap_or(0) + large.unwrap_or(0)
}

/// A `size_t` statistic by name.
fn ctl_usize(name: &str) -> Option<u64> {
    let mut z = Vec::with_capacity(name.len() + 1);
    z.extend_from_slice(name.as_bytes());
    z.push(0);
    // SAFETY: every name passed here is a jemalloc statistic of type size_t.
    #[allow(unsafe_code)]
    let v = unsafe { raw::read::<usize>(&z) };
    v.ok().map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::super::owner::scope;
    use super::*;

    #[test]
    fn an_owned_scope_fills_its_arena_and_frees_it() {
        assert!(init());
        let before = read().map(|h| h.clients).unwrap_or(0);
        let held = {
            let _s = scope(Owner::Clients);
            vec![7u8; 8 << 20]
        };
        let during = read().map(|h| h.clients).unwrap_or(0);
        assert!(during >= before + (8 << 20), "{before} -> {during}");
        {
            let _s = scope(Owner::Clients);
            drop(held);
        }
        let after = read().map(|h| h.clients).unwrap_or(0);
        assert!(after < during - (7 << 20), "{during} -> {after}");
    }

    #[test]
    fn a_bound_thread_allocates_in_its_owners_arena() {
        assert!(init());
        let dhcp = || read().map(|h| h.dhcp).unwrap_or(0);
        let t = std::thread::spawn(move || {
            let _g = super::super::owner::enter_thread(Owner::Dhcp);
            let before = dhcp();
            // Small blocks through the tcache, and one large block.
            let small: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 200]).collect();
            let large = vec![1u8; 4 << 20];
            let during = dhcp();
            drop((small, large));
            (before, during)
        })
        .join();
        let Ok((before, during)) = t else {
            panic!("thread panicked")
        };
        assert!(during >= before + (7 << 20), "{before} -> {during}");
    }

    #[test]
    fn the_arenas_add_up_to_allocated() {
        assert!(init());
        let h = read().unwrap_or_default();
        let sum = h.store + h.clients + h.dhcp + h.gateway + h.unowned;
        assert!(h.allocated > 0);
        assert_eq!(sum, h.allocated, "{h:?}");
    }
}
