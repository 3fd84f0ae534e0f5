#!/usr/bin/env bash
# bench/gateway.sh — the vpcbox gateway against haproxy and nginx, in the same run,
# through the shared harness (referenced, not copied):
#   1. throughput + CPU/request: fast nginx backend, REPS interleaved rounds (h2load -c 50 -m 10);
#      two vpcbox processes: "gw" ([gateway] threads = 1: the gateway on a current-thread runtime of its
#      own) and "gwmt" (threads = 0: the gateway on the process's multi-thread runtime, 1 worker)
#   2. memory per held stream against a 5 s backend:
#      a. the harness's Python HTTP/1.1 backend (haproxy and gw over HTTP/1.1)
#      b. examples/slow_backend (h2c): haproxy `proto h2` and gw `h2c://`, each one multiplexed connection
#      c. the pending cap: PENDING_CAP held, the excess answered 503 (latency of the 503s from h2load --log-file):
#         one burst of 2,000 streams, then a steady client (-c 10 -m 10) while PENDING_CAP streams are held;
#         haproxy with `server maxconn PENDING_CAP maxqueue 1` (503 once its 1-request queue is full) as the
#         reference, REPS alternating rounds
#   3. 400 x 1 MiB request bodies against a stalled upstream (backend sleeps before reading), shipped
#      body_budget and BODY_BUDGET2; RSS sampled every 0.25 s to give RSS 5 s after each run
#   4. in-process IPAM reads: GET /v1/leases/IP, h2load -c 50 -m 10 (gw and gwmt)
# Env: HARNESS (default ../shared/bench/gateway), BENCH_OUT and *_PORT (own defaults, see below), REPS (3),
#      SLOW ("20x100 80x100"), BODY ("4x100"), BODY_BUDGET2 (32MiB, the default until 2026-11-27), PENDING_CAP (1000),
#      SECTIONS ("1 2a 2b 2c 3 4": which of the above to run), AGAIN (1: every gw load of 2a, 2b and 3
#      twice on the same process, see again()).
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
GWMT_PORT=${GWMT_PORT:-28446} H2_BACKEND_PORT=${H2_BACKEND_PORT:-28082}
. "$HARNESS/env.sh"
REPS=${REPS:-3}; SLOW=${SLOW:-"20x100 80x100"}; BODY=${BODY:-"4x100"}
BODY_BUDGET2=${BODY_BUDGET2:-32MiB}; PENDING_CAP=${PENDING_CAP:-1000}
SECTIONS=" ${SECTIONS:-1 2a 2b 2c 3 4} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
# AGAIN=1 (the default): each gw load of sections 2a, 2b and 3 runs a second time on the
# same process, announced by a line; its "before" is then the RSS after the first load, so
# the second "RSS 5 s after" shows what a load leaves behind once the process is warm.
AGAIN=${AGAIN:-1}
again() { [ "$AGAIN" = 1 ] && echo "[gw] the same load again, same process:" | tee -a "$out"; }
out=$LOGS/gateway-$(date +%Y%m%d-%H%M%S).txt

cargo build --release --example gateway_bench --example slow_backend
GW_BIN=$PWD/target/release/examples/gateway_bench
SLOW_H2_BIN=$PWD/target/release/examples/slow_backend
echo "# $(date -u '+%F %T UTC'), $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"

start_gw() {   # start_gw <name> <port> <upstream URL> [VAR=value...]
  local name=$1 port=$2 up=$3; shift 3
  env GW_RUNTIME=multi GW_THREADS=1 GW_GATEWAY_EXTRA="threads = 1" "$@" GW_LISTEN=127.0.0.1:$port GW_UPSTREAM=$up GW_PID_FILE=$RUN/proxy-$name.pid \
    GW_DATA=$RUN/gw-data-$name $(pinargs "${PROXY_CPUS:-}") "$GW_BIN" >>"$LOGS/$name.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$RUN/proxy-$name.pid" ] && break; sleep 0.1; done
  sleep 0.3
  kill -0 "$(cat "$RUN/proxy-$name.pid" 2>/dev/null || echo 0)" 2>/dev/null \
    || { echo "gateway_bench did not start; see $LOGS/$name.log" >&2; tail -3 "$LOGS/$name.log" >&2; exit 1; }
}
stop_pidfile() {
  [ -f "$1" ] || return 0
  local p; p=$(cat "$1"); kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  rm -f "$1"
}
stop_gw() { stop_pidfile "$RUN/proxy-${1:-gw}.pid"; rm -rf "$RUN/gw-data-${1:-gw}"; }
sampler_pid=
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
  stop_gw gw; stop_gw gwmt; stop_pidfile "$RUN/backend-slowh2.pid"; stop_pidfile "$RUN/proxy-haproxy.pid"
  "$HARNESS/stop_all.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT
# held <name> <port> <c> <m> : run_slow_suite.sh's measurement for a proxy already running
held() {
  "$HARNESS/bench.sh" "$1" "$2" -c "$3" -m "$4" -n $(($3 * $4)) -t 1 -T 120
  sleep 13; echo "[$1] rss_kib 15s after run: $(rss_tree "$(cat "$RUN/proxy-$1.pid")")"
}

"$HARNESS/stop_all.sh" >/dev/null 2>&1 || true
if want 1; then
echo "== 1. throughput: haproxy, nginx, gw (threads = 1), gwmt (threads = 0, multi-thread runtime, 1 worker) interleaved, $REPS rounds" | tee -a "$out"
start_gw gw "$GW_PORT" "http://127.0.0.1:$FAST_BACKEND_PORT"
start_gw gwmt "$GWMT_PORT" "http://127.0.0.1:$FAST_BACKEND_PORT" GW_GATEWAY_EXTRA="threads = 0"
EXTRA="gw:$GW_PORT gwmt:$GWMT_PORT" "$HARNESS/run_fast_suite.sh" "$REPS" 2>&1 | tee -a "$out"
stop_gw gw; stop_gw gwmt

fi
# RSS of the gw process every 0.25 s from here on ("epoch_s rss_kib"), for "RSS 5 s after".
mark=$(date +%s)
( while :; do p=$(cat "$RUN/proxy-gw.pid" 2>/dev/null || echo 0)
    [ "$p" != 0 ] && echo "$(date +%s.%N) $(rss_tree "$p")"; sleep 0.25; done ) > "$RUN/gw-rss.log" &
sampler_pid=$!

if want 2a; then
echo "== 2a. memory per held stream, 5 s HTTP/1.1 backend (harness, Python)" | tee -a "$out"
for shape in $SLOW; do
  c=${shape%x*}; m=${shape#*x}
  "$HARNESS/run_slow_suite.sh" haproxy "$c" "$m" 2>&1 | tee -a "$out"
  start_gw gw "$GW_PORT" "http://127.0.0.1:$SLOW_BACKEND_PORT"
  "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 2>&1 | tee -a "$out"
  again && "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 2>&1 | tee -a "$out"
  stop_gw
done
"$HARNESS/stop_all.sh" >/dev/null 2>&1 || true

fi
if want 2b; then
echo "== 2b. memory per held stream, 5 s h2c backend (examples/slow_backend); haproxy 'proto h2', gw h2c://" | tee -a "$out"
PID_FILE=$RUN/backend-slowh2.pid "$SLOW_H2_BIN" "$H2_BACKEND_PORT" 5 >>"$LOGS/backend-slowh2.log" 2>&1 &
sleep 0.5
sed -e "s/^  server s1 .*/  server s1 127.0.0.1:\"\${BACKEND_PORT}\" proto h2/" "$CONF/proxy-haproxy.cfg" > "$RUN/proxy-haproxy-h2.cfg"
for shape in $SLOW; do
  c=${shape%x*}; m=${shape#*x}
  HAPX_THREADS=1 HAPX_PORT=$HAPX_PORT BACKEND_PORT=$H2_BACKEND_PORT haproxy -db -f "$RUN/proxy-haproxy-h2.cfg" \
    >>"$LOGS/proxy-haproxy-h2.log" 2>&1 & echo $! > "$RUN/proxy-haproxy.pid"
  sleep 1; held haproxy "$HAPX_PORT" "$c" "$m" 2>&1 | tee -a "$out"
  stop_pidfile "$RUN/proxy-haproxy.pid"
  start_gw gw "$GW_PORT" "h2c://127.0.0.1:$H2_BACKEND_PORT"
  sleep 1; held gw "$GW_PORT" "$c" "$m" 2>&1 | tee -a "$out"
  again && held gw "$GW_PORT" "$c" "$m" 2>&1 | tee -a "$out"
  stop_gw
done
stop_pidfile "$RUN/backend-slowh2.pid"

fi
if want 2c; then
echo "== 2c. pending cap $PENDING_CAP on a 5 s HTTP/1.1 backend, 2,000 streams: the excess answered 503 (haproxy: server maxconn $PENDING_CAP maxqueue 1, timeout queue 1ms)" | tee -a "$out"
"$HARNESS/start_backend.sh" slow 5 >/dev/null
# pending_cap <label> <port>: a burst of 2,000 streams, then PENDING_CAP streams
# held (5 s) while another client keeps 100 requests in flight; 503 latencies.
pending_cap() {
  local label=$1 port=$2 hold_pid
  rm -f "$RUN"/pending*.tsv   # h2load appends to its log file
  h2load -c 20 -m 100 -n 2000 -t 1 -T 120 --log-file="$RUN/pending.tsv" "http://127.0.0.1:$port/" >"$RUN/pending.txt" 2>&1 || true
  grep -E '^status codes' "$RUN/pending.txt" | sed "s/^/[$label pending cap, burst] /" | tee -a "$out"
  sleep 6   # the burst's admitted streams end
  h2load -c 10 -m 100 -n "$PENDING_CAP" -t 1 -T 120 "http://127.0.0.1:$port/" >"$RUN/pending-hold.txt" 2>&1 &
  hold_pid=$!
  sleep 1.5
  h2load -c 10 -m 10 -n 5000 -t 1 -T 120 --log-file="$RUN/pending-steady.tsv" "http://127.0.0.1:$port/" >"$RUN/pending-steady.txt" 2>&1 || true
  wait "$hold_pid" || true
  grep -E '^status codes' "$RUN/pending-hold.txt" | sed "s/^/[$label pending cap, held] /" | tee -a "$out"
  grep -E '^status codes' "$RUN/pending-steady.txt" | sed "s/^/[$label pending cap, steady] /" | tee -a "$out"
  python3 - "$label" "$RUN/pending.tsv" "$RUN/pending-steady.tsv" <<'EOF' | tee -a "$out"
import sys
for label, path in zip(["burst", "steady"], sys.argv[2:]):
    lat = {}
    for ln in open(path):
        f = ln.split()
        if len(f) >= 3: lat.setdefault(f[1], []).append(int(f[2]) / 1000.0)
    for code, v in sorted(lat.items()):
        v.sort(); p = lambda q: v[min(len(v) - 1, int(q * len(v)))]
        print(f"[{sys.argv[1]} pending cap, {label}] status {code}: n={len(v)} latency ms p50={p(0.5):.2f} p99={p(0.99):.2f} max={v[-1]:.2f}")
EOF
}
# The reference: haproxy answers 503 once the server's maxconn and its queue
# (one request, 1 ms) are full; same run, same loads, alternating with ours.
sed -e "s/^  server s1 .*/  server s1 127.0.0.1:\"\${BACKEND_PORT}\" maxconn $PENDING_CAP maxqueue 1/" \
    -e "s/^  timeout connect 5s/  timeout connect 5s\n  timeout queue 1ms/" "$CONF/proxy-haproxy.cfg" > "$RUN/proxy-haproxy-cap.cfg"
for _ in $(seq "$REPS"); do
  HAPX_THREADS=1 HAPX_PORT=$HAPX_PORT BACKEND_PORT=$SLOW_BACKEND_PORT haproxy -db -f "$RUN/proxy-haproxy-cap.cfg" \
    >>"$LOGS/proxy-haproxy-cap.log" 2>&1 & echo $! > "$RUN/proxy-haproxy.pid"
  sleep 1; pending_cap haproxy "$HAPX_PORT"
  stop_pidfile "$RUN/proxy-haproxy.pid"; sleep 6
  start_gw gw "$GW_PORT" "http://127.0.0.1:$SLOW_BACKEND_PORT" GW_MAX_PENDING="$PENDING_CAP"
  sleep 1; pending_cap gw "$GW_PORT"
  stop_gw; sleep 6
done
"$HARNESS/stop_all.sh" >/dev/null 2>&1 || true

fi
if want 3; then
echo "== 3. 1 MiB bodies against a stalled upstream (backend sleeps before reading)" | tee -a "$out"
for shape in $BODY; do
  c=${shape%x*}; m=${shape#*x}
  export SLOW_BACKEND_ARGS=--sleep-first
  "$HARNESS/run_slow_suite.sh" haproxy "$c" "$m" 1048576 2>&1 | tee -a "$out"
  for budget in shipped "$BODY_BUDGET2"; do
    extra="threads = 1"; [ "$budget" != shipped ] && extra="threads = 1;body_budget = \"$budget\""
    echo "[gw] body_budget: $budget" | tee -a "$out"
    start_gw gw "$GW_PORT" "http://127.0.0.1:$SLOW_BACKEND_PORT" GW_GATEWAY_EXTRA="$extra"
    "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 1048576 2>&1 | tee -a "$out"
    again && "$HARNESS/run_slow_suite.sh" gw "$c" "$m" 1048576 2>&1 | tee -a "$out"
    stop_gw
  done
  "$HARNESS/stop_all.sh" >/dev/null 2>&1 || true
done
fi
kill "$sampler_pid" 2>/dev/null; sampler_pid=
# RSS 5 s after each gw run of sections 2-3: the sample nearest end+5 s (end = mtime of h2load's output),
# against the harness's "rss_kib before" of the same run (that process, just before its load).
python3 - "$RUN/gw-rss.log" "$LOGS" "$mark" "$out" <<'EOF' | tee -a "$out"
import glob, os, re, sys
# A sample of 0 is a moment with no gw process running (between two runs).
# No samples file when the sampler had no time to start (only section 1 ran).
lines = open(sys.argv[1]) if os.path.exists(sys.argv[1]) else []
samples = [(t, r) for t, r in (tuple(map(float, l.split())) for l in lines if len(l.split()) == 2) if r > 0]
before = {}
for l in open(sys.argv[4]):
    m = re.search(r"rss_kib before=(\d+).*log=(\S+)", l)
    if m: before[os.path.basename(m.group(2))] = int(m.group(1))
for f in sorted(glob.glob(os.path.join(sys.argv[2], "bench-gw-*.txt"))):
    end = os.path.getmtime(f)
    if end < float(sys.argv[3]) - 600 or not samples or end < samples[0][0]: continue
    after = [r for t, r in samples if t >= end + 5.0]
    b = before.get(os.path.basename(f))
    if after and b:
        print(f"[gw] {os.path.basename(f)}: rss_kib before = {b}, 5s after = {int(after[0])} ({100 * (after[0] - b) / b:+.1f} %)")
EOF

if want 4; then
echo "== 4. in-process IPAM reads: GET /v1/leases/IP" | tee -a "$out"
for name in gw gwmt; do
  port=$GW_PORT; threads=1; [ $name = gwmt ] && { port=$GWMT_PORT; threads=0; }
  start_gw $name "$port" "http://127.0.0.1:$FAST_BACKEND_PORT" GW_PREFIX=/up/ GW_GATEWAY_EXTRA="threads = $threads"
  auth="Authorization: Bearer bench-token"
  curl -sf -H "$auth" -X POST "http://127.0.0.1:$port/v1/subnets" \
    -d '{"id":"lab","cidr":"10.0.0.0/24","pools":[{"start":"10.0.0.100","end":"10.0.0.199"}],"lease_time":"1h"}' >/dev/null
  curl -sf -H "$auth" -X POST "http://127.0.0.1:$port/v1/subnets/lab/allocations" -d '{"client":"mac:02:00:00:00:00:01"}' >/dev/null
  url="http://127.0.0.1:$port/v1/leases/10.0.0.100"
  curl -sf "$url" >/dev/null || { echo "no lease at $url" >&2; exit 1; }
  h2load -c 50 -m 10 -n 20000 "$url" >/dev/null 2>&1
  pid=$(cat "$RUN/proxy-$name.pid")
  for i in $(seq "$REPS"); do
    c0=$(cpu_tree "$pid"); h2load -c 50 -m 10 -n 300000 -t 1 "$url" >"$RUN/ipam.txt" 2>&1 || true; c1=$(cpu_tree "$pid")
    n=$(awk '/^requests:/{print $8}' "$RUN/ipam.txt")
    echo "[$name ipam read] $(grep -E '^finished in' "$RUN/ipam.txt") | $(grep -E '^status codes' "$RUN/ipam.txt") | cpu_us/req=$(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", (b-a)*1e6/hz/n}')" | tee -a "$out"
  done
  stop_gw $name
done

fi
echo "== summary ($out)"
python3 "$HARNESS/summarize.py" "$out"
