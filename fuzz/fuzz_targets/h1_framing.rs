//! Differential: the gateway's HTTP/1.1 upstream client and the RFC 9112
//! reference (`../h1_reference.rs`) must agree on every response: where
//! the head ends, the body's framing and data, where the next response
//! starts, whether the connection is kept, error or not.
//! Run: `cargo +nightly fuzz run h1_framing -- -max_total_time=300`
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpcbox::gateway::fuzz::{ours, Body, Case, Outcome, MAX_CHUNK_META, MAX_HEADERS};

#[path = "../h1_reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let case = Case::new(data);
    let (o, r) = (ours(&case), reference::read(&case));
    assert_eq!(o, r, "{:?}", String::from_utf8_lossy(case.stream));
});
