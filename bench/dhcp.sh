#!/usr/bin/env bash
# vpcbox vs ISC Kea 2.2 through the shared DHCPv4 harness, in one run.
#
#   sudo bench/dhcp.sh            # short suite (DUR=4): sweep 2k/4k/6k/8k, mixed, avalanche 5000
#   DUR=10 TESTS="sweep unique mixed avalanche randflood" sudo bench/dhcp.sh
#   SKIP_KEA=1 sudo bench/dhcp.sh # ours only
#
# The harness is referenced, not copied: HARNESS (default ../shared/bench/dhcp
# relative to the repo). It runs each server pinned to CPU 0 and perfdhcp to
# CPU 1 inside netns dhsrv/dhcli and appends one TSV row per test (server CPU %,
# DORA/s, drops, DISCOVER->OFFER latency, foreign CPU) to $BENCH_OUT/results.tsv.
#
# Our server: `vpcbox run --headless` (release build) by default; SERVER=test
# runs the integration-test binary's `dhcp_bench::serve` instead (the same
# DhcpServer on the same sled IPAM, without the gateway and dashboard).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=$(cd "${HARNESS:-$REPO/../shared/bench/dhcp}" && pwd)
export BENCH_OUT=${BENCH_OUT:-/var/tmp/dhcp-bench-vpcbox}
export DUR=${DUR:-4} RATES=${RATES:-"2000 4000 6000 8000"} CLIENTS=${CLIENTS:-120000}
export TESTS=${TESTS:-"sweep mixed avalanche"}
export QUIET_TIMEOUT=${QUIET_TIMEOUT:-20}   # shared machine: do not wait forever for quiet
SERVER=${SERVER:-binary}
mkdir -p "$BENCH_OUT"
rm -f "$BENCH_OUT/results.tsv"

cat > "$BENCH_OUT/bench.toml" <<TOML
[storage]
path = "$BENCH_OUT/data"
commit_interval = "${COMMIT_INTERVAL:-20ms}"
[dhcp]
listen = "0.0.0.0:67"
interfaces = ["vsrv0"]
server_id = "10.77.0.1"
workers = 2
# The sweep offers thousands of new clients a second; NEW_LEASE_RATE=20000/s
# measures at the shipped default (2000/s was the default before the per-port
# cap took over starvation).
new_lease_rate = "${NEW_LEASE_RATE:-1000000/s}"
[gateway]
enabled = false
[[subnet]]
id = "bench"
cidr = "10.76.0.0/14"
pools = ["10.78.0.1-10.79.255.254"]
gateway = "10.77.0.1"
dns = ["10.77.0.1"]
lease_time = "1h"
# perfdhcp relays from the harness's load-generator addresses (giaddr = source).
relays = ["10.77.0.2", "10.77.0.3"]
TOML

cd "$REPO"
if [ "$SERVER" = binary ]; then
  # VPCBOX_BIN: an already built binary (A/B comparisons of two builds).
  [ -n "${VPCBOX_BIN:-}" ] || cargo build --release --bin vpcbox
  run="${VPCBOX_BIN:-$REPO/target/release/vpcbox} run --headless --config $BENCH_OUT/bench.toml"
else
  exe=$(cargo test --release --test it --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\/deps\/it-[^"]*\)".*/\1/p' | tail -1)
  [ -x "$exe" ] || { echo "cannot build the test binary" >&2; exit 1; }
  run="env VPCBOX_BENCH_CONFIG=$BENCH_OUT/bench.toml VPCBOX_BENCH_DATA=$BENCH_OUT $exe --ignored --exact dhcp_bench::serve --nocapture"
fi
# Fresh, empty store for every test (bench.sh restarts the server per test).
cat > "$BENCH_OUT/start-ours.sh" <<SH
#!/usr/bin/env bash
rm -rf "$BENCH_OUT/data"
exec $run
SH
chmod +x "$BENCH_OUT/start-ours.sh"

# perfdhcp has one socket for all its simulated clients: in the avalanche the
# replies to 5,000 clients arrive at once and overflow its default 208 KiB
# receive buffer (UdpRcvbufErrors in dhcli; every lost reply is a 1 s+
# retransmission), so the faster server looks slower. Real clients each have a
# socket of their own. The default buffer is raised for the run, for both
# servers alike (net.core.rmem_default is host-wide), and put back at exit.
RMEM_DEFAULT=${RMEM_DEFAULT:-4194304}
old_rmem=$(sysctl -n net.core.rmem_default)
trap 'sysctl -qw net.core.rmem_default="$old_rmem"' EXIT
sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"

cd "$HARNESS"
# netns-setup.sh ends with a ping check; without ping installed it fails
# after setting everything up, so check the namespaces instead.
ip netns list | grep -q '^dhsrv' || ./netns-setup.sh || ip netns list | grep -q '^dhcli'
echo "== ours"; SERVER_CMD="$BENCH_OUT/start-ours.sh" ./bench.sh ours "./run-server.sh start" "./run-server.sh stop"
cp "$BENCH_OUT/logs/server-stdout.log" "$BENCH_OUT/ours-last-server.log" 2>/dev/null || true
if [ -z "${SKIP_KEA:-}" ]; then
  echo "== kea-st"; ./bench.sh kea-st "./run-kea.sh start st udp" "./run-kea.sh stop"
fi
echo
python3 ./summarize.py "$BENCH_OUT/results.tsv" ours kea-st 2>/dev/null || cat "$BENCH_OUT/results.tsv"
# Server CPU per DORA (µs) = srv_cpu% / 100 / DORA/s * 1e6
awk -F'\t' '{l=$1; for(i=2;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]}
  if (v["dora_per_s"]>0) printf "%-28s %8.0f DORA/s  server %5.1f us/DORA  DO avg %s ms  foreign CPU %s%%\n", l, v["dora_per_s"], v["srv_cpu%"]/100/v["dora_per_s"]*1e6, v["DO_avg_ms"], v["foreign_cpu%"]}' "$BENCH_OUT/results.tsv"
