//! Arbitrary bytes → DHCPv6 relay envelope → decode → handler → every kind
//! of IPAM answer (must not panic; every reply decodable and wrapped right).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run dhcp6 -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vpcbox::dhcp6::fuzz::packet(data);
});
