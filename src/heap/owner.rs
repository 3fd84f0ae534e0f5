//! Who is allocating: a thread-local owner tag, set for a whole thread by
//! [`enter_thread`] (the gateway's threads, the DHCP thread, the store's
//! committer) or its name (sled's threads, which we do not spawn), or for a
//! stretch of code by a [`Scope`] (the IPAM state lock, the client tables).
//! The allocator reads it on every allocation and free.

use std::cell::Cell;

use super::table::arena_of;

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
    /// The owner whose arena [`enter_thread`] bound this thread to (0: none).
    static THREAD_OWNER: Cell<u8> = const { Cell::new(0) };
}

/// The owner whose arena this thread is bound to ([`enter_thread`]), or 0.
/// Its allocations take jemalloc's plain fast path.
#[inline]
pub(super) fn bound_owner() -> u8 {
    THREAD_OWNER.with(Cell::get)
}

/// Makes `owner` the calling thread's owner until the guard drops: the
/// thread is bound to the owner's arena (`thread.arena`), so its
/// allocations keep jemalloc's fast path and its automatic tcache, and
/// land in the owner's arena. For a long-lived thread we spawn.
pub fn enter_thread(owner: Owner) -> ThreadOwner {
    let prev = current_tag();
    let prev_arena = arena_of(owner as u8).and_then(bind);
    if prev_arena.is_some() {
        THREAD_OWNER.with(|c| c.set(owner as u8));
    }
    CURRENT.with(|c| c.set(owner as u8));
    ThreadOwner { prev, prev_arena }
}

/// Binds the calling thread to arena `index`; returns the arena it had.
fn bind(index: u32) -> Option<u32> {
    // SAFETY: `thread.arena` reads and writes an unsigned arena index.
    #[allow(unsafe_code)]
    let prev = unsafe { tikv_jemalloc_ctl::raw::read::<libc::c_uint>(b"thread.arena\0") }.ok()?;
    #[allow(unsafe_code)]
    let set = unsafe { tikv_jemalloc_ctl::raw::write::<libc::c_uint>(b"thread.arena\0", index) };
    set.ok().map(|()| prev)
}

/// See [`enter_thread`].
#[must_use = "the thread's owner applies only while the guard lives"]
pub struct ThreadOwner {
    prev: u8,
    /// The arena the thread was bound to before, if it was re-bound.
    prev_arena: Option<u32>,
}

impl Drop for ThreadOwner {
    fn drop(&mut self) {
        THREAD_OWNER.with(|c| c.set(0));
        CURRENT.with(|c| c.set(self.prev));
        if let Some(a) = self.prev_arena {
            let _ = bind(a);
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
