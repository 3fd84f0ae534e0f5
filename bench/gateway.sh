#!/usr/bin/env bash
# bench/gateway.sh — the vpcbox gateway against haproxy and nginx, in the same run,
# through the shared harness (referenced, not copied):
#   1. throughput + CPU/request: fast nginx backend, REPS interleaved rounds (h2load -c 50 -m 10)
#   2. memory per held stream: SLOW streams against the 5 s backend (gw and haproxy)
#   3. 400 x 1 MiB request bodies against a stalled upstream (backend sleeps before reading)
# Env: HARNESS (default ../shared/bench/gateway), BENCH_OUT and *_PORT (own defaults, see below), REPS (3), SLOW ("20x100 80x100"),
#      BODY ("4x100"), GW_THREADS (1), BENCH_OUT (/var/tmp/gateway-bench).
# Output: the harness's result lines on stdout and in $BENCH_OUT/logs/gateway-<ts>.txt,
# then a markdown summary (summarize.py). Needs: h2load, haproxy, nginx (nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=$(cd "${HARNESS:-../shared/bench/gateway}" && pwd)
# Own output dir and ports, so a colleague running the harness at the same time
# on its default ports (18080…18445) neither answers our load nor loses its PIDs.
export BENCH_OUT=${BENCH_OUT:-/var/tmp/gateway-bench-vpcbox}
export FAST_BACKEND_PORT=${FAST_BACKEND_PORT:-28080} SLOW_BACKEND_PORT=${SLOW_BACKEND_PORT:-28081}
export HAPX_PORT=${HAPX_PORT:-28443} NGX_PORT=${NGX_PORT:-28444} GW_PORT=${GW_PORT:-28445}
. "$HARNESS/env.sh"
REPS=${REPS:-3}; SLOW=${SLOW:-"20x100 80x100"}; BODY=${BODY:-"4x100"}
export GW_THREADS=${GW_THREADS:-1}
out=$LOGS/gateway-$(date +%Y%m%d-%H%M%S).txt

cargo build --release --example gateway_bench
GW_BIN=$PWD/target/release/examples/gateway_bench

start_gw() {   # start_gw <upstream port>
  GW_LISTEN=127.0.0.1:$GW_PORT GW_UPSTREAM=http://127.0.0.1:$1 GW_PID_FILE=$RUN/proxy-gw.pid \
    $(pinargs "${PROXY_CPUS:-}") "$GW_BIN" >>"$LOGS/gw.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$RUN/proxy-gw.pid" ] && break; sleep 0.1; done
  sleep 0.3
  kill -0 "$(cat "$RUN/proxy-gw.pid" 2>/dev/null || echo 0)" 2>/dev/null \
    || { echo "gateway_bench did not start; see $LOGS/gw.log" >&2; tail -3 "$LOGS/gw.log" >&2; exit 1; }
}
stop_gw() {
  [ -f "$RUN/proxy-gw.pid" ] || return 0
  local p; p=$(cat "$RUN/proxy-gw.pid"); kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  rm -f "$RUN/proxy-gw.pid"
}
trap 'stop_gw; "$HARNESS/stop_all.sh" >/dev/null 2>&1 || true' EXIT

"$HARNESS/stop_all.sh" >/dev/null 2>&1 || true
echo "== 1. throughput: haproxy, nginx, gw interleaved, $REPS rounds" | tee -a "$out"
start_gw "$FAST_BACKEND_PORT"
EXTRA=gw:$GW_PORT "$HARNESS/run_fast_suite.sh" "$REPS" 2>&1 | tee -a "$out"
stop_gw

echo "== 2. memory per held stream (5 s backend)" | tee -a "$out"
for shape in $SLOW; do
  c=${shape%x*}; m=${shape#*x}
  "$HARNESS/run_slow_suite.sh" haproxy "$c" "$m" 2>&1 | tee -a "$out"
  start_gw "$SLOW_BACKEND_PORT"
  "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 2>&1 | tee -a "$out"
  stop_gw
done
"$HARNESS/stop_all.sh" >/dev/null 2>&1 || true

echo "== 3. 1 MiB bodies against a stalled upstream (backend sleeps before reading)" | tee -a "$out"
for shape in $BODY; do
  c=${shape%x*}; m=${shape#*x}
  export SLOW_BACKEND_ARGS=--sleep-first
  "$HARNESS/run_slow_suite.sh" haproxy "$c" "$m" 1048576 2>&1 | tee -a "$out"
  start_gw "$SLOW_BACKEND_PORT"
  "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 1048576 2>&1 | tee -a "$out"
  stop_gw
  "$HARNESS/stop_all.sh" >/dev/null 2>&1 || true
done

echo "== summary ($out)"
python3 "$HARNESS/summarize.py" "$out"
