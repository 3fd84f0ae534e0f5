//! Arbitrary bytes → the DHCPv6 relay envelope: a decoded Relay-Forw chain
//! put back around its message decodes the same, and its Relay-Repl peels
//! back level by level (must not panic).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run dhcp6_relay -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vpcbox::dhcp6::fuzz::relay_round_trip(data);
});
