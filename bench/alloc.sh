#!/usr/bin/env bash
# Cost per allocation of the owner-tracking allocator (issue 22): ns per
# allocation + free, plain jemalloc vs vpcbox::heap::Allocator unowned, in an
# owned thread (own tcache) and in an owner's scope (no tcache).
# Results: bench/RESULTS-memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example alloc_bench
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2 3; do
    echo "## round $round"
    target/release/examples/alloc_bench
done
