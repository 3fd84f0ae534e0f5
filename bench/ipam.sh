#!/usr/bin/env bash
# IPAM benchmark: durable binds/s at 1, 16 and 256 concurrent clients (with
# mean group-commit batch size), start-up time and RSS with 100k and 1M
# leases in the store, and disk size. Results: bench/RESULTS-ipam.md.
#
# Usage: bench/ipam.sh [WORKDIR]   (WORKDIR defaults to a temp dir; it must be
# on the disk you want to measure — fsync cost is the point)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/ipam-bench.XXXXXX")}"
secs="${BENCH_SECS:-5}"
cargo build --release --example ipam_bench
bin=target/release/examples/ipam_bench

echo "# machine: $(nproc) cores, kernel $(uname -r), workdir $work ($(df -T "$work" | awk 'NR==2{print $2}'))"
for c in 1 16 256; do
    rm -rf "$work/binds-$c"
    /usr/bin/time -f "binds-$c cpu: user %Us sys %Ss wall %es" "$bin" binds "$work/binds-$c" "$c" "$secs" 2>&1
    echo "disk binds-$c: $(du -sh "$work/binds-$c" | cut -f1)"
    rm -rf "$work/binds-$c"
done
for n in 100000 1000000; do
    rm -rf "$work/open-$n"
    "$bin" populate "$work/open-$n" "$n"
    echo "disk open-$n: $(du -sh "$work/open-$n" | cut -f1)"
    "$bin" open "$work/open-$n"
    /usr/bin/time -f "open-$n: wall %es maxrss %MKiB" "$bin" open "$work/open-$n" 2>&1
    CACHE_MIB=8 "$bin" open "$work/open-$n"
    "$bin" sled "$work/open-$n"
    rm -rf "$work/open-$n"
done
