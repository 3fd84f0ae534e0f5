#!/usr/bin/env bash
# bench/incident.sh — the incident, replayed (issue 6):
#   1. `vpcbox replay --spawn config.toml`   — the shipped protections; must PASS
#   2. `vpcbox replay --no-protections`       — the incident's config; must FAIL
#      (the target is killed when its RSS passes --rss-cap, 1 GiB by default)
#   3. haproxy's and nginx's RSS under the same slow-upstream load, with the
#      gateway harness (referenced through $HARNESS, not copied):
#      the slow-upstream phase (2,000 streams held) and the finale
#      (1,600 streams with 1 MiB bodies).
# Results go to $OUT (default /var/tmp/vpcbox-incident-<time>); record them in
# bench/RESULTS-incident.md. Needs: cargo; for 3, haproxy, nginx-light and
# nghttp2-client (h2load) — see $HARNESS/README.md.
#
#   bench/incident.sh                     # everything, 10 s phases
#   PHASE_SECS=5 SKIP_PROXIES=1 bench/incident.sh
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-/work/shared/bench/gateway}
OUT=${OUT:-/var/tmp/vpcbox-incident-$(date +%Y%m%d-%H%M%S)}
PHASE_SECS=${PHASE_SECS:-10}
DELAY=${DELAY:-0.5}           # the slow upstream's delay, seconds (replay: --upstream-delay)
REPLAY_ARGS=${REPLAY_ARGS:-}  # extra flags for both replays
# The replay command; override to run it from elsewhere than `vpcbox replay`
# (e.g. before the subcommand existed: an example calling vpcbox::replay::run
# with --vpcbox-bin pointing at the release binary).
REPLAY_CMD=${REPLAY_CMD:-}
mkdir -p "$OUT"

echo "== build (release)"
(cd "$ROOT" && cargo build --release --quiet) || exit 1
BIN=$ROOT/target/release/vpcbox
REPLAY_CMD=${REPLAY_CMD:-$BIN replay}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD) ($(git -C "$ROOT" status --porcelain | wc -l) changed files)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

run_replay() { # name, flags...
  local name=$1; shift
  echo "== replay: $name"
  local t0=$(date +%s)
  $REPLAY_CMD --phase-secs "$PHASE_SECS" --upstream-delay "${DELAY}s" --out "$OUT/$name" \
    $REPLAY_ARGS "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "exit $rc after $(( $(date +%s) - t0 )) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" \
    | tee -a "$OUT/$name.txt"
}

run_replay protected --spawn "$ROOT/config.toml"
run_replay unprotected --no-protections

if [ -z "${SKIP_PROXIES:-}" ]; then
  if [ ! -x "$HARNESS/run_slow_suite.sh" ]; then
    echo "== reference proxies skipped: no harness at $HARNESS (set HARNESS=...)"
  else
    export BENCH_OUT=$OUT/harness
    for px in haproxy nginx; do
      echo "== $px: slow-upstream phase (20 clients x 100 streams, ${DELAY}s upstream)"
      "$HARNESS/run_slow_suite.sh" $px 20 100 0 "$DELAY" 2>&1 | tee -a "$OUT/proxies.txt"
      "$HARNESS/stop_all.sh" >/dev/null 2>&1
      echo "== $px: finale (8 clients x 200 streams x 1 MiB bodies, ${DELAY}s upstream)"
      "$HARNESS/run_slow_suite.sh" $px 8 200 1048576 "$DELAY" 2>&1 | tee -a "$OUT/proxies.txt"
      "$HARNESS/stop_all.sh" >/dev/null 2>&1
    done
  fi
fi

echo "== results in $OUT"
ls "$OUT"
