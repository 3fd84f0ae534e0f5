//! One jemalloc arena per tagged owner, created once at start, and the
//! per-arena figures that say how much of the heap each owner holds.

use std::sync::Once;

use libc::c_void;
use tikv_jemalloc_ctl::raw;
use tikv_jemalloc_sys as ffi;

use super::extents;
use super::owner::Owner;
use super::table::{arena_of, set};

/// Creates the owners' arenas, each with hooks that record what it maps
/// (`super::extents`); until then every allocation is unowned. Idempotent.
/// False if jemalloc refused (allocations then stay unowned).
pub fn init() -> bool {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for owner in Owner::TAGGED {
            let tag = owner as u8;
            let hooked = extents::hooks_for(tag).and_then(|h| create_arena(Some(h)));
            let Some(index) = hooked.or_else(|| create_arena(None)) else {
                tracing::warn!("jemalloc refused an arena; memory by owner is off");
                return;
            };
            set(tag, index, ffi::MALLOCX_ARENA(index as usize));
        }
    });
    arena_of(Owner::Store as u8).is_some()
}

/// `arenas.create`, with `hooks` if given; the new arena's index.
fn create_arena(hooks: Option<*mut ffi::extent_hooks_t>) -> Option<u32> {
    let mut index: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>();
    let mut h = hooks.unwrap_or(std::ptr::null_mut());
    let (new, new_len) = match hooks {
        Some(_) => (
            std::ptr::from_mut(&mut h).cast::<c_void>(),
            std::mem::size_of::<*mut ffi::extent_hooks_t>(),
        ),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `arenas.create` writes an unsigned into `index` (`len` its
    // size) and reads an optional `extent_hooks_t *` from `new`; the hooks
    // are statics that outlive the arena.
    #[allow(unsafe_code)]
    let rc = unsafe {
        ffi::mallctl(
            c"arenas.create".as_ptr(),
            std::ptr::from_mut(&mut index).cast::<c_void>(),
            &mut len,
            new,
            new_len,
        )
    };
    (rc == 0).then_some(index)
}

/// The heap divided by owner, in bytes, read at one jemalloc epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapByOwner {
    /// The resident pages each owner's arena has in use (live blocks, free
    /// space in its slabs, its threads' cached blocks; pages never written
    /// do not count), measured in `/proc/self/pagemap`; its live bytes if its ranges
    /// are unknown.
    pub store: u64,
    pub clients: u64,
    pub dhcp: u64,
    pub gateway: u64,
    /// Pages in use in jemalloc's automatic arenas (everything unowned), as
    /// jemalloc counts them (written or not).
    pub unowned: u64,
    /// jemalloc's `stats.allocated`: live bytes, all owners.
    pub allocated: u64,
    /// Freed pages jemalloc keeps resident until they decay or are purged.
    pub dirty: u64,
    /// jemalloc's own metadata, resident.
    pub metadata: u64,
}

/// One arena's page figures, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Arena {
    live: u64,
    active: u64,
    dirty: u64,
    /// Its metadata: what jemalloc counts resident beyond active and dirty.
    base: u64,
}

impl Arena {
    fn read(i: u32, page: u64) -> Self {
        let stat = |s: &str| ctl_usize(&format!("stats.arenas.{i}.{s}")).unwrap_or(0);
        let (active, dirty) = (stat("pactive") * page, stat("pdirty") * page);
        Self {
            live: stat("small.allocated") + stat("large.allocated"),
            active,
            dirty,
            base: stat("resident").saturating_sub(active + dirty),
        }
    }

    /// What owner `tag` holds resident, and the arena's resident dirty
    /// pages. The page tables cannot tell pages in use from dirty ones, and
    /// either may be untouched (a fresh mapping's rest is dirty unwritten):
    /// the resident pages count as in use up to `active`, the rest as dirty.
    fn owned(&self, tag: u8) -> (u64, u64) {
        match extents::resident(tag) {
            Some(r) => {
                let r = r.saturating_sub(self.base);
                let used = r.min(self.active);
                (used, (r - used).min(self.dirty))
            }
            None => (self.live, self.dirty),
        }
    }
}

/// Reads the per-arena figures; `None` before [`init`] or without stats.
pub fn read() -> Option<HeapByOwner> {
    arena_of(Owner::Store as u8)?;
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let narenas = tikv_jemalloc_ctl::arenas::narenas::read().ok()?;
    let page = ctl_usize("arenas.page")?;
    let mut h = HeapByOwner::default();
    for i in 0..narenas {
        let a = Arena::read(i, page);
        h.metadata += a.base;
        let Some(owner) = Owner::TAGGED
            .into_iter()
            .find(|o| arena_of(*o as u8) == Some(i))
        else {
            h.unowned += a.active;
            h.dirty += a.dirty;
            continue;
        };
        let (bytes, dirty) = a.owned(owner as u8);
        h.dirty += dirty;
        match owner {
            Owner::Store => h.store = bytes,
            Owner::Clients => h.clients = bytes,
            Owner::Dhcp => h.dhcp = bytes,
            _ => h.gateway = bytes,
        }
    }
    h.allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
    Some(h)
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

    /// Other tests of this process use the same arena meanwhile: a few
    /// tries, one of which sees only this test's 8 MiB come and go.
    #[test]
    fn an_owned_scope_fills_its_arena_and_frees_it() {
        assert!(init());
        let once = || {
            let before = read().map(|h| h.clients).unwrap_or(0);
            let held = {
                let _s = scope(Owner::Clients);
                vec![7u8; 8 << 20]
            };
            let during = read().map(|h| h.clients).unwrap_or(0);
            {
                let _s = scope(Owner::Clients);
                drop(held);
            }
            let after = read().map(|h| h.clients).unwrap_or(0);
            let ok = during >= before + (8 << 20) && after < during - (7 << 20);
            (ok, format!("{before} -> {during} -> {after}"))
        };
        let tries: Vec<_> = (0..5).map(|_| once()).collect();
        assert!(tries.iter().any(|(ok, _)| *ok), "{tries:?}");
    }

    #[test]
    fn an_entered_thread_is_bound_to_its_owner_until_the_guard_drops() {
        use super::super::owner::{bound_owner, current, enter_thread};
        assert!(init());
        let t = std::thread::spawn(|| {
            let g = enter_thread(Owner::Gateway);
            let inside = (current(), bound_owner());
            drop(g);
            (inside, current(), bound_owner())
        })
        .join();
        let Ok((inside, after, bound)) = t else {
            panic!("thread panicked")
        };
        assert_eq!(inside, (Owner::Gateway, Owner::Gateway as u8));
        assert_eq!((after, bound), (Owner::Unowned, 0));
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
    fn a_zeroed_block_counts_once_written() {
        assert!(init());
        let gateway = || read().map(|h| h.gateway).unwrap_or(0);
        let before = gateway();
        let mut block = {
            let _s = scope(Owner::Gateway);
            vec![0u8; 64 << 20]
        };
        let untouched = gateway();
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        let written = gateway();
        {
            let _s = scope(Owner::Gateway);
            drop(block);
        }
        assert!(untouched < before + (16 << 20), "{before} -> {untouched}");
        assert!(
            written >= untouched + (60 << 20),
            "{untouched} -> {written}"
        );
    }
}
