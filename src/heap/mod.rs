//! The global allocator: jemalloc, with the bytes of three owners (the
//! store, the client tables, the DHCP server) kept in arenas of their own,
//! so jemalloc's per-arena statistics measure how the heap divides.

mod arenas;
mod global;
mod owner;

pub use arenas::{init, read, HeapByOwner};
pub use global::Allocator;
pub use owner::{current, scope, Owner, Scope};
