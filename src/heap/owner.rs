//! Who is allocating: a thread-local owner tag, set for a whole thread by
//! its name (the DHCP thread, the store's committer and sled's threads) or
//! for a stretch of code by a [`Scope`] (the IPAM state lock, the client
//! tables). The allocator reads it on every allocation and free.

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
}

impl Owner {
    pub const TAGGED: [Owner; 3] = [Owner::Store, Owner::Clients, Owner::Dhcp];

    fn from_tag(t: u8) -> Self {
        match t {
            1 => Owner::Store,
            2 => Owner::Clients,
            3 => Owner::Dhcp,
            _ => Owner::Unowned,
        }
    }

    /// The owner of a thread by its name: threads that only ever work for
    /// one owner, including sled's own (which we do not spawn).
    pub fn of_thread(name: &[u8]) -> Self {
        match name {
            b"vpcbox-dhcp" => Owner::Dhcp,
            b"vpcbox-commit" | b"log flusher" => Owner::Store,
            n if n.starts_with(b"sled-io") => Owner::Store,
            _ => Owner::Unowned,
        }
    }
}

/// Not looked up yet: the thread's first allocation reads its name.
const UNKNOWN: u8 = u8::MAX;

thread_local! {
    // A const-initialised Cell without Drop: readable from inside the
    // allocator at any point of a thread's life, and never allocates.
    static CURRENT: Cell<u8> = const { Cell::new(UNKNOWN) };
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
        assert_eq!(Owner::of_thread(b"vpcbox-dhcp"), Owner::Dhcp);
        assert_eq!(Owner::of_thread(b"sled-io-3"), Owner::Store);
        assert_eq!(Owner::of_thread(b"log flusher"), Owner::Store);
        assert_eq!(Owner::of_thread(b"vpcbox-gw-0"), Owner::Unowned);
        let t = std::thread::Builder::new()
            .name("vpcbox-dhcp".into())
            .spawn(current)
            .map(|h| h.join());
        assert!(matches!(t, Ok(Ok(Owner::Dhcp))), "{t:?}");
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
