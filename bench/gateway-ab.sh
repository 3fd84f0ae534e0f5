#!/usr/bin/env bash
# bench/gateway-ab.sh OLD_BIN — two builds of examples/gateway_bench in one run: OLD_BIN
# ("gwold", e.g. a copy of an earlier build) and this tree's release build ("gw"), both
# [gateway] threads = 1, interleaved with haproxy and nginx through the shared harness:
# section 1 of gateway.sh (fast nginx backend, REPS rounds) and section 2a (held streams,
# Python 5 s HTTP/1.1 backend; old then new for each shape). Only same-run ratios mean
# anything on the shared box, so a before/after is best measured this way.
# Env: HARNESS, BENCH_OUT, *_PORT (as gateway.sh; gwold on GWMT_PORT), REPS (3),
#      SLOW ("20x100 80x100"), QUIET_WAIT (10). Wrap it in the bench lock like gateway.sh.
set -euo pipefail
OLD_BIN=$(realpath "${1:?usage: bench/gateway-ab.sh OLD_BIN}")
cd "$(dirname "$0")/.."
HARNESS=$(cd "${HARNESS:-../shared/bench/gateway}" && pwd)
export BENCH_OUT=${BENCH_OUT:-/var/tmp/gateway-bench-vpcbox}
export FAST_BACKEND_PORT=${FAST_BACKEND_PORT:-28080} SLOW_BACKEND_PORT=${SLOW_BACKEND_PORT:-28081}
export HAPX_PORT=${HAPX_PORT:-28443} NGX_PORT=${NGX_PORT:-28444} GW_PORT=${GW_PORT:-28445}
export QUIET_WAIT=${QUIET_WAIT:-10}
OLD_PORT=${GWMT_PORT:-28446}
. "$HARNESS/env.sh"
cargo build --release --example gateway_bench
NEW_BIN=$PWD/target/release/examples/gateway_bench
out=$LOGS/ab-$(date +%Y%m%d-%H%M%S).txt
start() { # name port bin upstream
  env GW_RUNTIME=multi GW_THREADS=1 GW_GATEWAY_EXTRA="threads = 1" GW_LISTEN=127.0.0.1:$2 GW_UPSTREAM=$4 \
    GW_PID_FILE=$RUN/proxy-$1.pid GW_DATA=$RUN/gw-data-$1 "$3" >>"$LOGS/$1.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$RUN/proxy-$1.pid" ] && break; sleep 0.1; done; sleep 0.3
  kill -0 "$(cat "$RUN/proxy-$1.pid")" || { echo "$1 did not start" >&2; exit 1; }
}
stop() { local f=$RUN/proxy-$1.pid p; [ -f $f ] || return 0; p=$(cat $f); kill $p 2>/dev/null || true
  for _ in $(seq 50); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; rm -f $f; rm -rf $RUN/gw-data-$1; }
trap 'stop gw; stop gwold; $HARNESS/stop_all.sh >/dev/null 2>&1 || true' EXIT
echo "# $(date -u '+%F %T UTC') A/B gwold=$OLD_BIN gw=$(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $out
$HARNESS/stop_all.sh >/dev/null 2>&1 || true
echo "== 1. throughput" | tee -a $out
start gwold $OLD_PORT $OLD_BIN http://127.0.0.1:$FAST_BACKEND_PORT
start gw $GW_PORT $NEW_BIN http://127.0.0.1:$FAST_BACKEND_PORT
EXTRA="gwold:$OLD_PORT gw:$GW_PORT" $HARNESS/run_fast_suite.sh ${REPS:-3} 2>&1 | tee -a $out
stop gw; stop gwold
echo "== 2a. held streams, 5 s HTTP/1.1 backend" | tee -a $out
for shape in ${SLOW:-20x100 80x100}; do
  c=${shape%x*}; m=${shape#*x}
  $HARNESS/run_slow_suite.sh haproxy $c $m 2>&1 | tee -a $out
  for v in old new; do
    bin=$NEW_BIN; [ $v = old ] && bin=$OLD_BIN
    echo "[gw] binary: $v ($bin)" | tee -a $out
    start gw $GW_PORT $bin http://127.0.0.1:$SLOW_BACKEND_PORT
    $HARNESS/run_slow_suite.sh gw $c $m 2>&1 | tee -a $out
    stop gw
  done
done
$HARNESS/stop_all.sh >/dev/null 2>&1 || true
echo "== summary ($out)"; python3 $HARNESS/summarize.py $out
