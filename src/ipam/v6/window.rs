//! Where a pool hands out new members: inside a window of [`WINDOW`]
//! members placed at random in the pool, which moves to another random
//! place once it has handed out half as many. The bindings of one group
//! commit then sit together in the store's key order (sled holds at most
//! 16 records per leaf: a batch touches a few leaves, not one per binding),
//! while an outsider guesses neither the window nor a member in it: each
//! IA starts its search at a keyed hash of itself in the window, so members
//! are not handed out in order (RFC 7943).

use std::cell::Cell;

use crate::hash::random_u128;

/// Members of one window (a smaller pool is one window).
pub const WINDOW: u128 = 1024;

#[derive(Debug, Clone)]
pub struct Window {
    /// Index in the pool of its first member. A `Cell`: searches run on
    /// the index shared (`&`) under the IPAM's state lock, and moving the
    /// window changes no answer's correctness, only where the next starts.
    first: Cell<u128>,
    /// Members it spans: [`WINDOW`], or the pool's size when smaller.
    span: u128,
    /// Members handed out from it since it was placed.
    taken: Cell<u128>,
}

impl Window {
    /// A window at a random place of a pool of `size` members.
    pub fn new(size: u128) -> Self {
        let w = Self {
            first: Cell::new(0),
            span: size.clamp(1, WINDOW),
            taken: Cell::new(0),
        };
        w.place(size);
        w
    }

    fn place(&self, size: u128) {
        let places = size.saturating_sub(self.span).saturating_add(1);
        self.first.set(random_u128() % places);
        self.taken.set(0);
    }

    /// The index of the member a search with `key` (a keyed hash of the
    /// IA) starts at.
    pub fn start(&self, key: u64) -> u128 {
        self.first.get() + u128::from(key) % self.span
    }

    /// One member was handed out by a search (inside the window, or past
    /// it when it was crowded): at half its span the window moves on.
    pub fn took(&self, size: u128) {
        let n = self.taken.get() + 1;
        if n.saturating_mul(2) >= self.span && size > self.span {
            self.place(size);
        } else {
            self.taken.set(n);
        }
    }

    #[cfg(test)]
    pub fn first(&self) -> u128 {
        self.first.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searches start inside the window, the window lies inside the pool,
    /// and it moves (to random places) after half its span was handed out.
    #[test]
    fn a_window_stays_in_its_pool_and_moves_on_at_half_its_span() {
        let size = 100 * WINDOW;
        let w = Window::new(size);
        let mut places = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let first = w.first();
            places.insert(first);
            assert!(first + WINDOW <= size);
            for key in [0, 1, u64::MAX, 12345] {
                let s = w.start(key);
                assert!((first..first + WINDOW).contains(&s));
            }
            for _ in 0..WINDOW / 2 - 1 {
                w.took(size);
            }
            assert_eq!(w.first(), first, "not before half its span");
            w.took(size);
        }
        assert!(places.len() > 10, "random places: {places:?}");
        // A pool smaller than a window is one window, which never moves.
        let small = Window::new(10);
        for _ in 0..100 {
            small.took(10);
            assert_eq!((small.first(), small.start(13)), (0, 3));
        }
    }
}
