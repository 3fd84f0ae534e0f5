//! Which of an owner's pages are resident. jemalloc counts a page as
//! resident once it hands it out, written or not (a large zeroed block
//! sled never fills); the kernel knows better. Each owner's arena gets
//! extent hooks that record the address ranges jemalloc maps for it, and
//! `/proc/self/pagemap` over those ranges counts the pages really in memory.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use libc::{c_uint, c_void, size_t};
use tikv_jemalloc_sys::extent_hooks_t;

/// Ranges recorded per owner. jemalloc keeps what it maps (`opt.retain`)
/// and grows an arena by ever larger mappings, so an arena of a few GiB
/// needs a few dozen.
const SLOTS: usize = 256;

/// The address ranges one owner's arena mapped, in the order mapped.
struct Ranges {
    start: [AtomicUsize; SLOTS],
    /// 0 until the slot's `start` is written.
    len: [AtomicUsize; SLOTS],
    next: AtomicUsize,
    /// Set when a mapping found no slot: the figure is then unknown.
    overflow: AtomicBool,
}

impl Ranges {
    const fn new() -> Self {
        Self {
            start: [const { AtomicUsize::new(0) }; SLOTS],
            len: [const { AtomicUsize::new(0) }; SLOTS],
            next: AtomicUsize::new(0),
            overflow: AtomicBool::new(false),
        }
    }

    /// Called from inside jemalloc: no allocation, no lock.
    fn record(&self, start: usize, len: usize) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        match (self.start.get(i), self.len.get(i)) {
            (Some(s), Some(l)) => {
                s.store(start, Ordering::Relaxed);
                l.store(len, Ordering::Release);
            }
            _ => self.overflow.store(true, Ordering::Relaxed),
        }
    }
}

/// By owner tag (0, unowned, is never hooked).
static RANGES: [Ranges; 5] = [const { Ranges::new() }; 5];

/// jemalloc's default hooks, which every hook of ours calls.
static DEFAULT: AtomicPtr<extent_hooks_t> = AtomicPtr::new(std::ptr::null_mut());

/// The hooks of each owner's arena: jemalloc's defaults with `alloc`
/// recording the range, by owner tag.
static HOOKS: OnceLock<[extent_hooks_t; 5]> = OnceLock::new();

/// The default `alloc`, then the range recorded for owner `TAG`.
// SAFETY (callers): jemalloc, with the arguments of its `alloc` hook.
#[allow(unsafe_code)]
unsafe extern "C" fn alloc<const TAG: usize>(
    _hooks: *mut extent_hooks_t,
    new_addr: *mut c_void,
    size: size_t,
    alignment: size_t,
    zero: *mut bool,
    commit: *mut bool,
    arena: c_uint,
) -> *mut c_void {
    let default = DEFAULT.load(Ordering::Acquire);
    // SAFETY: DEFAULT is set before any hook is installed and points at
    // jemalloc's static default hooks; the arguments pass through as given.
    #[allow(unsafe_code)]
    let p = match unsafe { default.as_ref() }.and_then(|d| d.alloc) {
        Some(f) => unsafe { f(default, new_addr, size, alignment, zero, commit, arena) },
        None => std::ptr::null_mut(),
    };
    if !p.is_null() {
        if let Some(r) = RANGES.get(TAG) {
            r.record(p as usize, size);
        }
    }
    p
}

/// The hooks for owner `tag`'s arena, or `None` if jemalloc's defaults
/// cannot be read or it does not retain what it maps (a range could then
/// be unmapped and mapped again by anyone).
pub(super) fn hooks_for(tag: u8) -> Option<*mut extent_hooks_t> {
    let all = HOOKS.get_or_init(|| {
        let mut all = [extent_hooks_t::default(); 5];
        if let Some(d) = default_hooks() {
            DEFAULT.store(d, Ordering::Release);
            // SAFETY: `d` points at jemalloc's static default hooks.
            #[allow(unsafe_code)]
            let base = unsafe { *d };
            all = [base; 5];
            all[1].alloc = Some(alloc::<1>);
            all[2].alloc = Some(alloc::<2>);
            all[3].alloc = Some(alloc::<3>);
            all[4].alloc = Some(alloc::<4>);
        }
        all
    });
    if DEFAULT.load(Ordering::Acquire).is_null() || !retains() {
        return None;
    }
    let h = all.get(usize::from(tag)).filter(|_| tag != 0)?;
    // jemalloc takes a mutable pointer but only reads through it.
    Some(std::ptr::from_ref(h).cast_mut())
}

/// Whether jemalloc keeps every range it mapped (`opt.retain`).
fn retains() -> bool {
    // SAFETY: `opt.retain` is a bool.
    #[allow(unsafe_code)]
    let r = unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.retain\0") };
    r.unwrap_or(false)
}

/// jemalloc's default extent hooks, as arena 0 (never given others) has them.
fn default_hooks() -> Option<*mut extent_hooks_t> {
    // SAFETY: `arena.0.extent_hooks` reads an `extent_hooks_t *`.
    #[allow(unsafe_code)]
    let d =
        unsafe { tikv_jemalloc_ctl::raw::read::<*mut extent_hooks_t>(b"arena.0.extent_hooks\0") };
    d.ok().filter(|p| !p.is_null())
}

/// Bytes of owner `tag`'s mapped ranges that are resident now; `None` if
/// its ranges are not known (none recorded: a hooked arena maps its
/// metadata as it is created, so its arena has no hooks).
pub(super) fn resident(tag: u8) -> Option<u64> {
    let r = RANGES.get(usize::from(tag))?;
    let n = r.next.load(Ordering::Relaxed).min(SLOTS);
    if tag == 0 || n == 0 || r.overflow.load(Ordering::Relaxed) {
        return None;
    }
    let page = page_size()?;
    let mut pages = 0u64;
    for i in 0..n {
        let len = r.len[i].load(Ordering::Acquire);
        if len != 0 {
            pages += resident_pages(r.start[i].load(Ordering::Relaxed), len, page)?;
        }
    }
    Some(pages * page as u64)
}

/// Pages of `[start, start + len)` in memory and this process's alone,
/// from `/proc/self/pagemap` a chunk at a time: present (bit 63) and
/// exclusively mapped (bit 56). The second bit leaves out the shared zero
/// page that a read of a never-written page maps, which `mincore` would
/// count and RSS does not.
fn resident_pages(start: usize, len: usize, page: usize) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 512;
    const PRESENT_EXCLUSIVE: u64 = (1 << 63) | (1 << 56);
    static PAGEMAP: OnceLock<Option<std::fs::File>> = OnceLock::new();
    let map = PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()?;
    let mut buf = [0u8; CHUNK * 8];
    let mut count = 0u64;
    let (first, end) = (start / page, start.checked_add(len)?.div_ceil(page));
    let mut at = first;
    while at < end {
        let n = (end - at).min(CHUNK);
        let bytes = buf.get_mut(..n * 8)?;
        map.read_exact_at(bytes, (at as u64).checked_mul(8)?).ok()?;
        count += bytes
            .chunks_exact(8)
            .filter_map(|e| e.try_into().ok().map(u64::from_ne_bytes))
            .filter(|e| e & PRESENT_EXCLUSIVE == PRESENT_EXCLUSIVE)
            .count() as u64;
        at += n;
    }
    Some(count)
}

fn page_size() -> Option<usize> {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let p = *PAGE
        .get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0));
    (p != 0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pages_count_and_read_ones_do_not() {
        let Some(page) = page_size() else {
            panic!("no page size")
        };
        // A fresh anonymous mapping, none of it written.
        let len = 64 * page;
        // SAFETY: a private anonymous mapping, unmapped below.
        #[allow(unsafe_code)]
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let start = p as usize;
        assert_eq!(resident_pages(start, len, page), Some(0));
        // Reading maps the shared zero page: not resident memory of ours.
        let read: u32 = (0..64)
            .map(|i| {
                // SAFETY: inside the mapping.
                #[allow(unsafe_code)]
                let b = unsafe { std::ptr::read_volatile((start as *const u8).add(i * page)) };
                u32::from(b)
            })
            .sum();
        assert_eq!((read, resident_pages(start, len, page)), (0, Some(0)));
        for i in 0..10 {
            // SAFETY: inside the mapping.
            #[allow(unsafe_code)]
            unsafe {
                *(start as *mut u8).add(i * page) = 1
            };
        }
        assert_eq!(resident_pages(start, len, page), Some(10));
        // SAFETY: the mapping made above.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(p, len)
        };
    }
}
