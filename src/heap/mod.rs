//! The global allocator: jemalloc, with the bytes of four owners (the
//! store, the client tables, the DHCP server, the gateway) kept in arenas
//! of their own, so jemalloc's per-arena statistics measure how the heap
//! divides.

mod arenas;
mod extents;
mod global;
mod owner;
mod table;

pub use arenas::{init, read, HeapByOwner};
pub use global::Allocator;
pub use owner::{current, enter_thread, scope, Owner, Scope, ThreadOwner};
