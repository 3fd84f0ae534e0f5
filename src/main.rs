//! The `vpcbox` binary: CLI → config → runtime → dashboard or headless.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {}
