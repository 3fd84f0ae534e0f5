//! Arbitrary bytes → admission peek → decode → handler (must not panic),
//! and a decode/encode/decode round trip.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run dhcp -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vpcbox::dhcp::fuzz::packet(data);
    vpcbox::dhcp::fuzz::round_trip(data);
});
