//! Cost per allocation of the owner-tracking allocator (run through
//! `bench/alloc.sh`, release build; results in `bench/RESULTS-memory.md`).
//!
//! Four ways to allocate on one thread: jemalloc as tikv-jemallocator calls
//! it (`plain`, main before memory by owner); [`vpcbox::heap::Allocator`]
//! outside any owner (`unowned`: the main runtime, blocking threads);
//! inside an owned thread, bound to its arena (`thread`: the gateway's
//! threads, the DHCP thread, the committer); inside an owner's scope with
//! no tcache (`scope`: the IPAM state lock, the client tables, sled's
//! threads). Two patterns per size: an allocation freed at once (`pair`),
//! and 256 held then freed (`batch`, past the thread cache's LIFO reuse).
//! Prints ns per allocation + free.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

use tikv_jemallocator::Jemalloc;
use vpcbox::heap::{self, Allocator, Owner};

const ROUNDS: usize = 2_000_000;

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) -> f64 {
    let t = Instant::now();
    for _ in 0..ROUNDS {
        // SAFETY: a non-zero-sized layout, freed with the same layout.
        #[allow(unsafe_code)]
        unsafe {
            let p = a.alloc(layout);
            black_box(p);
            a.dealloc(p, layout);
        }
    }
    t.elapsed().as_nanos() as f64 / ROUNDS as f64
}

fn batch<A: GlobalAlloc>(a: &A, layout: Layout) -> f64 {
    let mut held = Vec::with_capacity(256);
    let t = Instant::now();
    for _ in 0..ROUNDS / 256 {
        // SAFETY: as in `pair`; every pointer is freed once, with its layout.
        #[allow(unsafe_code)]
        unsafe {
            for _ in 0..256 {
                held.push(black_box(a.alloc(layout)));
            }
            for p in held.drain(..) {
                a.dealloc(p, layout);
            }
        }
    }
    t.elapsed().as_nanos() as f64 / (ROUNDS / 256 * 256) as f64
}

fn main() {
    assert!(heap::init(), "jemalloc refused the owners' arenas");
    println!(
        "{:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "size", "shape", "plain", "unowned", "thread", "scope"
    );
    for size in [32usize, 256, 4096, 65536] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for (shape, f) in [
            ("pair", pair::<Jemalloc> as fn(&_, _) -> f64),
            ("batch", batch::<Jemalloc>),
        ] {
            let g: fn(&Allocator, Layout) -> f64 = if shape == "pair" { pair } else { batch };
            // Warm-up, then the best of 5 rounds of each.
            let best = |m: &dyn Fn() -> f64| (0..5).map(|_| m()).fold(f64::MAX, f64::min);
            let plain = best(&|| f(&Jemalloc, layout));
            let unowned = best(&|| g(&Allocator, layout));
            let thread = std::thread::scope(|s| {
                s.spawn(|| {
                    let _t = heap::enter_thread(Owner::Gateway);
                    best(&|| g(&Allocator, layout))
                })
                .join()
                .unwrap()
            });
            let scope = best(&|| {
                let _s = heap::scope(Owner::Store);
                g(&Allocator, layout)
            });
            println!("{size:>6} {shape:>6} {plain:>8.1} {unowned:>8.1} {thread:>8.1} {scope:>8.1}");
        }
    }
}
