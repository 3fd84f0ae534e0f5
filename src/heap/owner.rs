//! Who is allocating: a thread-local owner tag, set for a whole thread by
//! [`enter_thread`] (the gateway's threads, the DHCP thread, the store's
//! committer) or its name (sled's threads, which we do not spawn), or for a
//! stretch of code by a [`Scope`] (the IPAM state lock, the client tables).
//! The allocator reads it on every allocation and free.

use std::cell::Cell;

/// The heap's owners with an arena of their own; everything else is `Unowned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Owner {
    Unowned = 0,
    /// The IPAM: sled's page cache and allocations, the lease index.
    Store = 1,
    /// The per-client statistics table, the quota maps, the isolation set.
    Clients = 2,
    /// The DHCP server: its queues, packets in flight, coalescing, replies.
    Dhcp = 3,
    /// The gateway's threads: buffered request and response bytes, h2
    /// and TLS state of its connections, its upstream clients.
    Gateway = 4,
}

impl Owner {
    pub const TAGGED: [Owner; 4] = [Owner::Store, Owner::Clients, Owner::Dhcp, Owner::Gateway];

    fn from_tag(t: u8) -> Self {
        match t {
            1 => Owner::Store,
            2 => Owner::Clients,
            3 => Owner::Dhcp,
            4 => Owner::Gateway,
            _ => Owner::Unowned,
        }
    }

    /// The owner of a thread we do not spawn, by its name: sled's.
    pub fn of_thread(name: &[u8]) -> Self {
        match name {
            b"log flusher" => Owner::Store,
            n if n.starts_with(b"sled-io") => Owner::Store,
            _ => Owner::Unowned,
        }
    }
}

/// Not looked up yet: the thread's first allocation reads its name.
const UNKNOWN: u8 = u8::MAX;

thread_local! {
    // Const-initialised Cells without Drop: readable from inside the
    // allocator at any point of a thread's life, and never allocate.
    static CURRENT: Cell<u8> = const { Cell::new(UNKNOWN) };
    /// The owner [`enter_thread`] gave this thread, and its explicit
    /// jemalloc tcache (index + 1; 0: none).
    static THREAD_OWNER: Cell<u8> = const { Cell::new(0) };
    static TCACHE: Cell<u32> = const { Cell::new(0) };
}

/// The thread's own tcache for `tag`: `Some(index)` if `tag` is the owner
/// this thread entered. Other owners' allocations bypass every tcache.
#[inline]
pub(super) fn thread_cache(tag: u8) -> Option<u32> {
    if THREAD_OWNER.with(Cell::get) != tag {
        return None;
    }
    TCACHE.with(Cell::get).checked_sub(1)
}

/// Makes `owner` the calling thread's owner until the guard drops, with a
/// jemalloc tcache of its own, so the thread's allocations stay on
/// jemalloc's fast path without mixing with other arenas' blocks. For a
/// long-lived thread we spawn: drop the guard before the thread ends (its
/// tcache is destroyed then).
pub fn enter_thread(owner: Owner) -> ThreadOwner {
    // SAFETY: `tcache.create` returns an unsigned (the new tcache's index).
    #[allow(unsafe_code)]
    let tc = unsafe { tikv_jemalloc_ctl::raw::read::<libc::c_uint>(b"tcache.create\0") };
    let prev = current_tag();
    if let Ok(tc) = tc {
        TCACHE.with(|c| c.set(tc.saturating_add(1)));
        THREAD_OWNER.with(|c| c.set(owner as u8));
    }
    CURRENT.with(|c| c.set(owner as u8));
    ThreadOwner {
        prev,
        tcache: tc.ok(),
    }
}

/// See [`enter_thread`].
#[must_use = "the thread's owner applies only while the guard lives"]
pub struct ThreadOwner {
    prev: u8,
    tcache: Option<u32>,
}

/// Hands the blocks cached in the calling thread's own tcache (if it
/// entered an owner) back to their arena, as `thread.tcache.flush` does
/// for the automatic one.
pub fn flush_thread_cache() {
    if let Some(tc) = TCACHE.with(Cell::get).checked_sub(1) {
        // SAFETY: `tcache.flush` takes the unsigned index of an explicit tcache.
        #[allow(unsafe_code)]
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"tcache.flush\0", tc) };
    }
}

impl Drop for ThreadOwner {
    fn drop(&mut self) {
        // No allocation may reach the tcache once it is destroyed.
        TCACHE.with(|c| c.set(0));
        THREAD_OWNER.with(|c| c.set(0));
        CURRENT.with(|c| c.set(self.prev));
        if let Some(tc) = self.tcache {
            // SAFETY: `tcache.destroy` takes the unsigned index of an
            // explicit tcache; this one was created by `enter_thread` and
            // is no longer reachable from this thread.
            #[allow(unsafe_code)]
            let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"tcache.destroy\0", tc) };
        }
    }
}

/// The calling thread's current owner.
#[inline]
pub fn current() -> Owner {
    Owner::from_tag(current_tag())
}

#[inline]
pub(super) fn current_tag() -> u8 {
    let t = CURRENT.with(Cell::get);
    if t != UNKNOWN {
        return t;
    }
    let name = thread_name();
    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    let t = Owner::of_thread(&name[..len]) as u8;
    CURRENT.with(|c| c.set(t));
    t
}

/// The kernel's name of the calling thread (what `std::thread::Builder::name`
/// set), read without allocating.
fn thread_name() -> [u8; 16] {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into buf.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    if rc != 0 {
        return [0; 16];
    }
    buf
}

/// Attributes the calling thread's allocations and frees to an owner until
/// dropped, then restores the previous owner. Never hold one across an
/// `.await`: other tasks of the thread would run under it.
#[must_use = "the owner applies only while the scope lives"]
pub struct Scope {
    prev: u8,
}

/// Enters `owner` on this thread.
#[inline]
pub fn scope(owner: Owner) -> Scope {
    let prev = current_tag();
    CURRENT.with(|c| c.set(owner as u8));
    Scope { prev }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_owned_by_name() {
        assert_eq!(Owner::of_thread(b"sled-io-3"), Owner::Store);
        assert_eq!(Owner::of_thread(b"log flusher"), Owner::Store);
        assert_eq!(Owner::of_thread(b"vpcbox-gw-0"), Owner::Unowned);
        let t = std::thread::Builder::new()
            .name("sled-io-0".into())
            .spawn(current)
            .map(|h| h.join());
        assert!(matches!(t, Ok(Ok(Owner::Store))), "{t:?}");
    }

    #[test]
    fn an_entered_thread_has_its_owner_and_cache_until_the_guard_drops() {
        let t = std::thread::spawn(|| {
            let g = enter_thread(Owner::Gateway);
            let inside = (current(), thread_cache(Owner::Gateway as u8).is_some());
            let other = thread_cache(Owner::Store as u8);
            drop(g);
            (inside, other, current(), thread_cache(Owner::Gateway as u8))
        })
        .join();
        let Ok((inside, other, after, cache)) = t else {
            panic!("thread panicked")
        };
        assert_eq!(inside, (Owner::Gateway, true));
        assert_eq!((other, after, cache), (None, Owner::Unowned, None));
    }

    #[test]
    fn scopes_nest_and_restore() {
        let outer = current();
        {
            let _s = scope(Owner::Store);
            assert_eq!(current(), Owner::Store);
            {
                let _c = scope(Owner::Clients);
                assert_eq!(current(), Owner::Clients);
            }
            assert_eq!(current(), Owner::Store);
        }
        assert_eq!(current(), outer);
    }
}
