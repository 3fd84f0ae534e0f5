//! vpcbox: a single-binary VPC control-plane appliance — DHCPv4 server,
//! embedded sled IPAM, HTTP/2 API gateway and live dashboard in one process.
//!
//! `main` parses the CLI and config; `app` composes the services; each service
//! lives in its own module and talks to the others only through the `Ipam`
//! API, the shared `stats` counters and the `isolation` set.

pub mod admin_cli;
pub mod app;
pub mod cli;
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dhcp;
pub mod dhcp6;
pub mod events;
pub mod exit;
pub mod gateway;
pub mod hash;
pub mod heap;
pub mod ipam;
pub mod isolation;
pub mod memory;
pub mod net;
pub mod quota;
pub mod replay;
pub mod secret;
pub mod shared;
pub mod stats;
pub mod tui;

/// jemalloc is the allocator of everything built from this crate (the
/// binary, tests, examples), so tests exercise the same heap as production;
/// [`heap::Allocator`] adds the per-owner arenas.
#[global_allocator]
static GLOBAL: heap::Allocator = heap::Allocator;

/// jemalloc tuning, read at its initialisation: a background thread and
/// short decay times hand freed pages back soon after a burst, even when
/// idle; `slab_sizes` packs 4-16 KiB blocks (hyper's connection buffers)
/// into shared slabs, so held connections leave fewer extent records
/// resident (`bench/RESULTS-gateway.md`).
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &u8 = &MALLOC_CONF[0];
const MALLOC_CONF: &[u8] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,slab_sizes:4097-16384:16\0";
