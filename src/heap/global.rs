//! The `#[global_allocator]`: jemalloc, steering an owned thread's or
//! scope's allocations into its owner's arena.
//!
//! A thread that entered an owner ([`super::enter_thread`]) is bound to
//! that owner's arena and keeps jemalloc's fast path and its tcache. Any
//! other owned allocation or free (scopes, sled's threads) names the arena
//! and bypasses the tcache (`MALLOCX_TCACHE_NONE`), which mixes blocks of
//! every arena. Unowned code keeps the fast path. A bound thread's tcache
//! can pass a block of another arena that the thread freed to its own
//! owner; the block stays counted where it came from (bounded by the
//! tcache, which jemalloc trims). Cost per allocation: `bench/RESULTS-memory.md`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use tikv_jemalloc_sys as ffi;
use tikv_jemallocator::Jemalloc;

use super::owner::{bound_owner, current_tag};
use super::table::flags_of;

/// jemalloc with per-owner arenas; see the module comment.
pub struct Allocator;

/// The arena and tcache flags of the calling thread's current owner; 0
/// when unowned or when the thread is bound to that owner's arena.
#[inline]
fn owner_flags() -> i32 {
    let tag = current_tag();
    if tag == bound_owner() {
        return 0;
    }
    match flags_of(tag) {
        0 => 0,
        arena => arena | ffi::MALLOCX_TCACHE_NONE,
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
        match owner_flags() {
            0 => Jemalloc.dealloc(ptr, layout),
            _ => {
                let f = ffi::MALLOCX_TCACHE_NONE | align_flags(layout.align(), layout.size());
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
