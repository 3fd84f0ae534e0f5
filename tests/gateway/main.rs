//! Gateway tests, in a test binary of their own: the adversarial HTTP/2
//! tests bound the growth of this process's jemalloc heap, which only means
//! something when no unrelated test allocates in the same process. Within
//! the binary, tests take `support::serial()` for the same reason.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // helpers are shared by some modules, not all

mod burst;
#[path = "../common/cert.rs"]
mod cert;
mod events;
mod h1codec;
mod h1pool;
mod h2attack;
mod h2frames;
mod limits;
mod respbudget;
mod support;
mod tls;
mod token;
mod upstream;
