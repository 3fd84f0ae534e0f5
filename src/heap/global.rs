//! The `#[global_allocator]`: jemalloc, steering an owned thread's or
//! scope's allocations into its owner's arena.
//!
//! A tcache mixes blocks of every arena, so a block freed by one owner
//! would be handed to the next allocation of any owner and the arenas'
//! figures would stop meaning "bytes this owner holds". So an owned
//! allocation or free uses the thread's own tcache when the thread entered
//! that owner ([`super::enter_thread`]: only that owner's blocks pass
//! through it), and bypasses the tcache otherwise (`MALLOCX_TCACHE_NONE`:
//! scopes, sled's threads). Unowned code keeps jemalloc's fast path
//! unchanged. Cost per allocation: `bench/RESULTS-memory.md`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use tikv_jemalloc_sys as ffi;
use tikv_jemallocator::Jemalloc;

use super::arenas::flags_of;
use super::owner::{current_tag, thread_cache};

/// jemalloc with per-owner arenas; see the module comment.
pub struct Allocator;

/// The arena and tcache flags of the calling thread's current owner; 0
/// when unowned.
#[inline]
fn owner_flags() -> i32 {
    let tag = current_tag();
    match flags_of(tag) {
        0 => 0,
        arena => arena | cache_flags(tag),
    }
}

/// The thread's own tcache for `tag`, or none at all.
#[inline]
fn cache_flags(tag: u8) -> i32 {
    match thread_cache(tag) {
        Some(tc) => ffi::MALLOCX_TCACHE(tc as usize),
        None => ffi::MALLOCX_TCACHE_NONE,
    }
}

/// `_Alignof(max_align_t)` on the 64-bit targets we build for.
const MAX_ALIGN: usize = 16;

/// jemalloc's alignment flag for a layout (0: malloc's own alignment suffices).
#[inline]
fn align_flags(align: usize, size: usize) -> i32 {
    if align <= MAX_ALIGN && align <= size {
        0
    } else {
        ffi::MALLOCX_ALIGN(align)
    }
}

// SAFETY: every path is either tikv-jemallocator's own implementation or
// the same jemalloc call it makes, with the arena and tcache flags added;
// sizes and alignments pass through unchanged, and a free goes to jemalloc,
// which finds the block's arena itself.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match owner_flags() {
            0 => Jemalloc.alloc(layout),
            owned => {
                let f = owned | align_flags(layout.align(), layout.size());
                ffi::mallocx(layout.size(), f).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match owner_flags() {
            0 => Jemalloc.alloc_zeroed(layout),
            owned => {
                let f = owned | ffi::MALLOCX_ZERO | align_flags(layout.align(), layout.size());
                ffi::mallocx(layout.size(), f).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let tag = current_tag();
        match flags_of(tag) {
            0 => Jemalloc.dealloc(ptr, layout),
            _ => {
                let f = cache_flags(tag) | align_flags(layout.align(), layout.size());
                ffi::sdallocx(ptr.cast::<c_void>(), layout.size(), f)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match owner_flags() {
            0 => Jemalloc.realloc(ptr, layout, new_size),
            owned => {
                let f = owned | align_flags(layout.align(), new_size);
                ffi::rallocx(ptr.cast::<c_void>(), new_size, f).cast()
            }
        }
    }
}
