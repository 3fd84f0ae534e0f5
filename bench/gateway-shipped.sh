#!/usr/bin/env bash
# bench/gateway-shipped.sh REPS NAME=BIN [NAME=BIN...] — the issue-19 throughput measurement:
# the real binary (`vpcbox run --headless`) with the shipped config.toml, only per_client_rate
# and burst raised (nothing refused), one route /up/ to the shared harness's nginx backend,
# max_pending 4096; haproxy (the harness's, nbthread 1) in the same run; rounds of
# `h2load -c 50 -m 10 -n 100000 -t 1` alternate haproxy and each binary. Prints each
# binary's req/s and CPU per request as ratios to the haproxy line of its round.
# Env: HARNESS (../shared/bench/gateway), BENCH_OUT (/var/tmp/gateway-shipped), QUIET_WAIT (10).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
H=$(cd "${HARNESS:-$REPO/../shared/bench/gateway}" && pwd)
export BENCH_OUT=${BENCH_OUT:-/var/tmp/gateway-shipped} FAST_BACKEND_PORT=38080 SLOW_BACKEND_PORT=38081
export HAPX_PORT=38443 NGX_PORT=38444 QUIET_WAIT=${QUIET_WAIT:-10}
. "$H/env.sh"
reps=${1:?usage: bench/gateway-shipped.sh REPS NAME=BIN...}; shift
out=$LOGS/shipped-$(date +%Y%m%d-%H%M%S).txt

config() { # dir port: the shipped config with the benchmark's few changes
  python3 - "$1" "$2" "$FAST_BACKEND_PORT" "$REPO/config.toml" <<'PY'
import sys
d, port, bport, src = sys.argv[1:]
t = open(src).read()
for old, new in [('path = "./data"', f'path = "{d}/data"'),
                 ('listen = "127.0.0.1:6767"', 'listen = "127.0.0.1:0"'),
                 ('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"'),
                 ('admin_token_file = "./data/admin.token"', f'admin_token_file = "{d}/data/admin.token"'),
                 ('prefix = "/upstream/"', 'prefix = "/up/"'),
                 ('upstream = "http://127.0.0.1:9000"', f'upstream = "http://127.0.0.1:{bport}"'),
                 ('max_pending = 1024 ', 'max_pending = 4096 '),
                 ('per_client_rate = "200/s"', 'per_client_rate = "1000000/s"'),
                 ('per_client_burst = 400', 'per_client_burst = 1000000')]:
    assert old in t, old
    t = t.replace(old, new)
open(f"{d}/config.toml", "w").write(t)
PY
}

"$H/stop_all.sh" >/dev/null
"$H/start_backend.sh" fast >/dev/null && "$H/start_proxy.sh" haproxy fast >/dev/null
port=38445 targets="haproxy:$HAPX_PORT" pids=
for spec in "$@"; do
  name=${spec%%=*} bin=${spec#*=} d=$BENCH_OUT/$name
  rm -rf "$d" && mkdir -p "$d" && config "$d" $port
  "$bin" run --headless --config "$d/config.toml" >"$d/log" 2>&1 &
  echo $! >"$RUN/proxy-$name.pid"; pids="$pids $!"
  targets="$targets $name:$port/up"; port=$((port + 1))
done
sleep 1.5
echo "# $(date -u '+%F %T UTC') $* load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
for t in $targets; do # warm-up
  h2load -c 50 -m 10 -n 20000 "http://127.0.0.1:${t#*:}/" >/dev/null 2>&1
done
for _ in $(seq "$reps"); do
  for t in $targets; do "$H/bench.sh" "${t%%:*}" "${t#*:}" -c 50 -m 10 -n 100000 -t 1 | tee -a "$out"; done
done
for p in $pids; do kill "$p"; done
wait
"$H/stop_all.sh" >/dev/null
python3 - "$out" <<'PY'
import re, sys
h = None
for l in open(sys.argv[1]):
    m = re.match(r"\[(\S+)\].*rps=([\d.]+).*codes: (.*?) \|.*proxy_cpu_us/req=([\d.]+).*foreign_cpu_s=([\d.]+)", l)
    if not m:
        continue
    n, r, c, f = m[1], float(m[2]), float(m[4]), float(m[5])
    if n == "haproxy":
        h = (r, c)
        print(f"round: haproxy {r:.0f} req/s {c} us/req (foreign {f} s)")
    elif h:
        print(f"  {n}: {r:.0f} req/s {c} us/req (foreign {f} s): {r / h[0]:.2f}x req/s, {c / h[1]:.2f}x CPU [{m[3]}]")
PY
echo "log: $out"
