//! Which arena each owner tag allocates in: filled once by
//! [`super::init`], read on every owned allocation.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::Relaxed};

/// The `mallocx` arena flag of each owner's allocations, by owner tag; 0
/// keeps jemalloc's automatic arenas (unowned, or before `init`).
static FLAGS: [AtomicI32; 5] = [const { AtomicI32::new(0) }; 5];

/// The arena index of each tagged owner, by owner tag (unset: `u32::MAX`).
static ARENA: [AtomicU32; 5] = [const { AtomicU32::new(u32::MAX) }; 5];

#[inline]
pub(super) fn flags_of(tag: u8) -> i32 {
    FLAGS.get(usize::from(tag)).map_or(0, |f| f.load(Relaxed))
}

/// The arena index of `tag`'s owner, once `init` made it.
pub(super) fn arena_of(tag: u8) -> Option<u32> {
    let a = ARENA.get(usize::from(tag))?.load(Relaxed);
    (a != u32::MAX).then_some(a)
}

/// Makes arena `index` owner `tag`'s.
pub(super) fn set(tag: u8, index: u32, flags: i32) {
    if let (Some(a), Some(f)) = (ARENA.get(usize::from(tag)), FLAGS.get(usize::from(tag))) {
        a.store(index, Relaxed);
        f.store(flags, Relaxed);
    }
}
