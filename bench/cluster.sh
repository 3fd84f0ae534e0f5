#!/usr/bin/env bash
# The cluster benchmark (issue 20), figures for bench/RESULTS-cluster.md.
#
#   sudo bench/cluster.sh                                  # every part
#   PARTS="dora" NODES="1 3" DUR=8 BLOCK_SIZES="16 256" sudo bench/cluster.sh
#   RATE=500 PARTS=dora sudo bench/cluster.sh     # a fixed rate instead of saturation
#   COMMIT_INTERVAL=5ms PARTS=dora sudo bench/cluster.sh   # storage.commit_interval of every node
#
# dora: a three-member etcd (namespace c20b-hub, on the bridge), 1, 2 and 3
#   vpcbox nodes (release build with --features cluster; VPCBOX_BIN to use
#   another) each in a namespace of its own, and the single-node sled store
#   in the same place. perfdhcp relays (giaddr 10.77.0.2, as bench/dhcp.sh)
#   to 10.77.0.10, an address every node holds, whose neighbour entry in
#   the load generator's namespace is the broadcast MAC: every node hears
#   every packet and the one a client hashes to answers (the cluster's
#   "every node hears the broadcasts"). Per run: DORA/s at saturation, CPU
#   of every node and of etcd per DORA, etcd txns and puts per new lease
#   (etcd's own /metrics), then a second pass of the same clients (known,
#   inside cache_threshold) and the etcd writes it caused. Last, the sled
#   store at the largest cluster's DORA/s per node (PER_NODE=0: not run).
# faults: tests/it/cluster_faults.rs (kill -9 under load, partition, etcd
#   down for OUTAGE=30 s), which print FIGURE lines.
# history: scripts/cluster-history HISTORY_SECONDS (120) with CLUSTER=1.
#
# Needs root, etcd-server, etcd-client (etcdctl), kea's perfdhcp, curl.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-/var/tmp/c20b}
BIN=${VPCBOX_BIN:-$REPO/target/release/vpcbox}
PARTS=${PARTS:-"dora faults history"}
NODES=${NODES:-"1 2 3"}
DUR=${DUR:-8}
CLIENTS=${CLIENTS:-120000}
KNOWN=${KNOWN:-500}
BLOCK_SIZES=${BLOCK_SIZES:-16}
OUTAGE=${OUTAGE:-30}
HISTORY_SECONDS=${HISTORY_SECONDS:-120}
ETCD_IP=10.77.0.100
VIP=10.77.0.10        # every node's; its neighbour entry is the broadcast MAC
LOAD_IP=10.77.0.2     # perfdhcp, the relay
ETCD_PORTS=(23791 23792 23793)
mkdir -p "$OUT"
RESULTS=$OUT/results.md
: > "$RESULTS"; rm -f "$OUT/where.txt"
PIDS=()

nsx() { local ns=$1; shift; ip netns exec "c20b-$ns" "$@"; }
# perfdhcp reads every node's replies on one socket: with the default 208 KiB
# receive buffer it lost a fifth of the OFFERs and ACKs the nodes sent (as in
# bench/dhcp.sh). Raised for the run, put back at exit.
RMEM_DEFAULT=${RMEM_DEFAULT:-4194304}
old_rmem=$(sysctl -n net.core.rmem_default)
sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
cleanup() {
  sysctl -qw net.core.rmem_default="$old_rmem"
  exec 2>/dev/null   # no "Killed" notices
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '/^c20b-/{print $1}'); do ip netns del "$ns"; done
}
trap cleanup EXIT
for ns in $(ip netns list | awk '/^c20b-/{print $1}'); do ip netns del "$ns"; done

# A bridge in c20b-hub; the load generator and nodes n0..n2 on it.
ip netns add c20b-hub
nsx hub ip link set lo up
nsx hub ip link add br0 type bridge
nsx hub ip link set br0 up
nsx hub ip addr add "$ETCD_IP/14" dev br0
attach() { # NS ADDR/LEN: a veth from NS to the bridge
  ip netns add "c20b-$1"; nsx "$1" ip link set lo up
  ip link add "c20b$1" type veth peer name "c20b$1h"
  ip link set "c20b$1" netns "c20b-$1"; ip link set "c20b$1h" netns c20b-hub
  nsx hub ip link set "c20b$1h" master br0 up
  nsx "$1" ip addr add "$2" dev "c20b$1"; nsx "$1" ip link set "c20b$1" up
}
attach load "$LOAD_IP/14"
nsx load ip neigh add "$VIP" lladdr ff:ff:ff:ff:ff:ff dev c20bload nud permanent
for i in 0 1 2; do
  attach "n$i" "10.77.0.1$((i + 1))/14"
  nsx "n$i" ip addr add "$VIP/32" dev lo
done

ticks() { # CPU ticks (user + system) of the given pids
  local s=0; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$s"
}
HZ=$(getconf CLK_TCK)
# "PID:TID NAME UTIME STIME" per thread of the given pids.
thread_ticks() { local p t
  for p in "$@"; do for t in /proc/"$p"/task/*; do
    echo "$p:${t##*/} $(tr ' ' _ < "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done; done 2>/dev/null; }
# thread_split BEFORE-FILE PIDS…: the nodes' user and system ticks since BEFORE, by thread name.
thread_split() { local before=$1; shift
  echo "user sys thread"
  thread_ticks "$@" | awk 'NR == FNR {u[$1] = $3; k[$1] = $4; next}
    ($1 in u) {user[$2] += $3 - u[$1]; sys[$2] += $4 - k[$1]}
    END {for (n in user) if (user[n] + sys[n] > 0) print user[n], sys[n], n}' "$before" - |
    sort -k1,1nr -k2,2nr; }

# etcd: three members on the bridge address, data under $OUT.
ENDPOINTS=""; CLUSTER=""
for m in 0 1 2; do
  c=${ETCD_PORTS[$m]}; p=$((c + 100))
  ENDPOINTS+="${ENDPOINTS:+,}http://$ETCD_IP:$c"
  CLUSTER+="${CLUSTER:+,}m$m=http://$ETCD_IP:$p"
done
ETCD_PIDS=()
start_etcd() {
  rm -rf "$OUT/etcd"; mkdir -p "$OUT/etcd"
  for m in 0 1 2; do
    c=${ETCD_PORTS[$m]}; p=$((c + 100))
    ip netns exec c20b-hub etcd --name "m$m" --data-dir "$OUT/etcd/m$m" \
      --listen-client-urls "http://$ETCD_IP:$c" --advertise-client-urls "http://$ETCD_IP:$c" \
      --listen-peer-urls "http://$ETCD_IP:$p" --initial-advertise-peer-urls "http://$ETCD_IP:$p" \
      --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "c20b$$" \
      --logger zap --log-level warn > "$OUT/etcd/m$m.log" 2>&1 &
    ETCD_PIDS+=($!); PIDS+=($!)
  done
  for _ in $(seq 100); do
    ETCDCTL_API=3 nsx hub etcdctl --endpoints="$ENDPOINTS" endpoint health >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "etcd not healthy" >&2; exit 1
}
metric() { # etcd member 0's counter NAME
  nsx hub curl -s "http://$ETCD_IP:${ETCD_PORTS[0]}/metrics" | awk -v n="$1" '$1 == n {printf "%d", $2}'
}
histo() { # "SUM COUNT" of etcd member 0's histogram NAME
  nsx hub curl -s "http://$ETCD_IP:${ETCD_PORTS[0]}/metrics" \
    | awk -v n="$1" '$1 == n "_sum" {s=$2} $1 == n "_count" {c=$2} END {printf "%.6f %d", s, c}'
}
mean_ms() { # mean in ms between two "SUM COUNT" readings
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " ");
    n = y[2] - x[2]; if (n > 0) printf "%.1f", (y[1] - x[1]) / n * 1000; else printf "–"}'
}

NODE_PIDS=()
config() { # I STORE(sled|etcd) BLOCK PREFIX
  local ip=10.77.0.1$(($1 + 1)) dir=$OUT/n$1
  cat <<TOML
[storage]
path = "$dir/data"
${COMMIT_INTERVAL:+commit_interval = \"$COMMIT_INTERVAL\"}
[dhcp]
listen = "0.0.0.0:67"
interfaces = ["c20bn$1"]
server_id = "$ip"
workers = 2
new_lease_rate = "1000000/s"
[gateway]
listen = "$ip:8080"
admin_token_file = "$dir/admin.token"
[[subnet]]
id = "bench"
cidr = "10.76.0.0/14"
pools = ["10.78.0.1-10.79.255.254"]
gateway = "10.77.0.1"
dns = ["10.77.0.1"]
lease_time = "1h"
relays = ["$LOAD_IP"]
TOML
  [ "$2" = etcd ] && cat <<TOML
[cluster]
node = "n$1"
etcd = ["${ENDPOINTS//,/\", \"}"]
prefix = "$4"
lease_ttl = "10s"
block_size = $3
TOML
  return 0
}
start_nodes() { # COUNT STORE BLOCK PREFIX
  NODE_PIDS=()
  for i in $(seq 0 $(($1 - 1))); do
    rm -rf "$OUT/n$i"; mkdir -p "$OUT/n$i"
    config "$i" "$2" "$3" "$4" > "$OUT/n$i/config.toml"
    ip netns exec "c20b-n$i" "$BIN" run --headless --config "$OUT/n$i/config.toml" > "$OUT/n$i/vpcbox.log" 2>&1 &
    NODE_PIDS+=($!); PIDS+=($!)
    for _ in $(seq 100); do
      [ "$(nsx "n$i" curl -s -o /dev/null -w '%{http_code}' "http://10.77.0.1$((i + 1)):8080/readyz")" = 200 ] && break
      sleep 0.2
    done
  done
}
stop_nodes() {
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NODE_PIDS=()
}

node_metrics() { # COUNT: the nodes' packet, drop and commit counters, one line per series
  for i in $(seq 0 $(($1 - 1))); do
    nsx "n$i" curl -s "http://10.77.0.1$((i + 1)):8080/metrics" \
      | grep -E '^vpcbox_(dhcp_packets_total|client_drops_total|ipam_commit_seconds_(sum|count))' | sed "s/^/n$i /"
  done
}

rcvbuf_errors() { # replies perfdhcp's socket dropped so far
  nsx load nstat -az UdpRcvbufErrors | awk '$1 == "UdpRcvbufErrors" {print $2}'
}

# perfdhcp through the broadcast-MAC address; prints "RATE ACKS DROP%".
run_perfdhcp() { # LOG ARGS…
  local log=$1; shift
  nsx load perfdhcp -4 -l "$LOAD_IP" "$@" "$VIP" > "$log" 2>&1 || true
  awk '/^Rate:/ {rate=$2} /Statistics for: REQUEST-ACK/ {ra=1}
       ra && /^received packets:/ {acks=$3} ra && /^drops ratio:/ {dr=$3; ra=0}
       END {printf "%.0f %d %s\n", rate, acks, dr}' "$log"
}

dora() { # COUNT STORE BLOCK [LABEL]
  local label="$2 $1 node(s)${4:+, $4}" prefix="/c20b/$RANDOM$RANDOM"
  [ "$2" = etcd ] && label+=", block $3"
  start_nodes "$1" "$2" "$3" "$prefix"
  sleep 1
  local t0 e0 p0 x0 w0 w1 t1 e1 p1 x1
  thread_ticks "${NODE_PIDS[@]}" > "$OUT/threads-$2-$1-$3.before"
  t0=$(ticks "${NODE_PIDS[@]}"); e0=$(ticks "${ETCD_PIDS[@]}")
  p0=$(metric etcd_mvcc_put_total); x0=$(metric etcd_mvcc_txn_total)
  local f0 f1; f0=$(histo etcd_disk_wal_fsync_duration_seconds)
  w0=$(date +%s.%N)
  # PROFILE=N: a perf profile of node 0 during the etcd run with N nodes.
  if [ "$2" = etcd ] && [ "${PROFILE:-}" = "$1" ]; then
    perf record -F 499 --call-graph dwarf,16384 -p "${NODE_PIDS[0]}" -o "$OUT/profile-$1-$3.data" -- sleep $((DUR - 2)) > /dev/null 2>&1 &
    prof=$!
  fi
  node_metrics "$1" > "$OUT/metrics-$2-$1-$3-before.txt"
  local lost0 lost1; lost0=$(rcvbuf_errors)
  read -r rate acks drops < <(run_perfdhcp "$OUT/perf-$2-$1-$3.txt" -R "$CLIENTS" ${RATE:+-r "$RATE"} -p "$DUR")
  [ "$2" = etcd ] && LAST="$1 $rate"
  node_metrics "$1" > "$OUT/metrics-$2-$1-$3-after.txt"
  lost1=$(rcvbuf_errors)
  w1=$(date +%s.%N)
  t1=$(ticks "${NODE_PIDS[@]}"); e1=$(ticks "${ETCD_PIDS[@]}")
  # Where the nodes' CPU went, by thread name (all nodes together).
  thread_split "$OUT/threads-$2-$1-$3.before" "${NODE_PIDS[@]}" > "$OUT/threads-$2-$1-$3.txt"
  p1=$(metric etcd_mvcc_put_total); x1=$(metric etcd_mvcc_txn_total)
  f1=$(histo etcd_disk_wal_fsync_duration_seconds)
  # The second pass: KNOWN clients bound first (a gentle rate), then the
  # same clients again at full speed: every answer should need no write.
  run_perfdhcp "$OUT/known-bind-$2-$1-$3.txt" -R "$KNOWN" -r 1000 -p 3 > /dev/null
  sleep 1
  local q0 r0 q1 r1 rrate racks rdrops
  q0=$(metric etcd_mvcc_put_total); r0=$(metric etcd_mvcc_txn_total)
  read -r rrate racks rdrops < <(run_perfdhcp "$OUT/known-again-$2-$1-$3.txt" -R "$KNOWN" -p 4)
  q1=$(metric etcd_mvcc_put_total); r1=$(metric etcd_mvcc_txn_total)
  stop_nodes
  # Where the time went: offers etcd-bound (DO drops), etcd's fsync, the nodes' failed writes.
  local run="$2-$1-$3" fails=0
  for i in $(seq 0 $(($1 - 1))); do
    cp "$OUT/n$i/vpcbox.log" "$OUT/log-$run-n$i.txt"
    fails=$((fails + $(grep -c "ipam write failed" "$OUT/n$i/vpcbox.log" || true)))
  done
  # ACKs the nodes sent (each a binding durable in the store) against those perfdhcp counted.
  local sent secs
  sent=$(awk '/type="request",result="ack"/ {if (FILENAME ~ /after/) s += $3; else s -= $3} END {printf "%d", s}' \
    "$OUT/metrics-$run-after.txt" "$OUT/metrics-$run-before.txt")
  secs=$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')
  awk -v l="$label" -v f="$(mean_ms "$f0" "$f1")" -v fails="$fails" -v sent="$sent" -v secs="$secs" \
      -v lost=$((${lost1:-0} - ${lost0:-0})) '/Statistics for: DISCOVER-OFFER/ {d=1}
    d && /^drops ratio:/ {printf "%s: DISCOVER-OFFER drops %s %%, etcd WAL fsync mean %s ms, failed group commits %d, ACKs the nodes sent %d (%.0f/s), replies lost in perfdhcp'"'"'s socket %d\n", l, $3, f, fails, sent, sent / secs, lost; d=0}' \
    "$OUT/perf-$run.txt" >> "$OUT/where.txt"
  if [ -n "${prof:-}" ]; then
    wait "$prof" || true; prof=""
    perf report -i "$OUT/profile-$1-$3.data" --no-children --sort dso,sym --percent-limit 1.5 --stdio \
      2>/dev/null | grep -v '^$' | grep -v '^#' | grep '%' > "$OUT/profile-$1-$3.txt" || true
  fi
  awk -v l="$label" -v rate="$rate" -v acks="$acks" -v dr="$drops" -v hz="$HZ" \
      -v cpu=$((t1 - t0)) -v ecpu=$((e1 - e0)) -v secs="$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" \
      -v puts=$((${p1:-0} - ${p0:-0})) -v txns=$((${x1:-0} - ${x0:-0})) -v store="$2" \
      -v racks="$racks" -v rputs=$((${q1:-0} - ${q0:-0})) -v rtxns=$((${r1:-0} - ${r0:-0})) 'BEGIN {
    us = acks ? cpu / hz / acks * 1e6 : 0; eus = acks ? ecpu / hz / acks * 1e6 : 0
    if (store == "sled") { tx = "–"; pu = "–"; rw = "–"; eus_t = "–" }
    else { tx = sprintf("%.3f", acks ? txns / acks : 0); pu = sprintf("%.2f", acks ? puts / acks : 0)
           rw = sprintf("%d txns, %d puts", rtxns, rputs); eus_t = sprintf("%.0f", eus) }
    printf "| %s | %s | %d | %s | %.1f | %.0f | %s | %s | %s | %d | %s |\n",
      l, rate, acks, dr, cpu / hz / secs * 100, us, eus_t, tx, pu, racks, rw }' | tee -a "$RESULTS"
}

if [[ " $PARTS " == *" dora "* ]]; then
  [ -x "$BIN" ] || { echo "build it first: cargo build --release --features cluster" >&2; exit 1; }
  start_etcd
  echo "| store, nodes | DORA/s | ACKs | RA drops % | nodes' CPU % | node µs/DORA | etcd µs/DORA | etcd txns/lease | etcd puts/lease | known clients' ACKs (2nd pass) | etcd writes in the 2nd pass |" | tee -a "$RESULTS"
  echo "|---|---|---|---|---|---|---|---|---|---|---|" | tee -a "$RESULTS"
  dora 1 sled 0
  for b in $BLOCK_SIZES; do for n in $NODES; do dora "$n" etcd "$b"; done; done
  # The sled store again at the last cluster's DORA/s per node: a node's CPU
  # per DORA grows as its rate falls (fewer packets per wake-up), and at
  # saturation each cluster node serves a fraction of what one sled node does.
  read -r n r <<< "${LAST:-1 0}"
  if [ "${PER_NODE:-1}" = 1 ] && [ "$n" -gt 1 ] && [ "$r" -gt 0 ]; then
    RATE=$((r / n)) dora 1 sled pernode "at $((r / n)) DORA/s, the $n-node cluster's rate per node"
  fi
  for p in "${ETCD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
fi

if [[ " $PARTS " == *" faults "* ]]; then
  cd "$REPO"
  VPCBOX_ETCD_OUTAGE=$OUTAGE cargo test --features cluster --test it cluster_faults -- --test-threads 1 --nocapture 2>&1 \
    | tee "$OUT/faults.txt" | grep -E "FIGURE|^test |test result|panicked" || true
  grep FIGURE "$OUT/faults.txt" | sed 's/^FIGURE /- /' >> "$RESULTS"
fi

if [[ " $PARTS " == *" history "* ]]; then
  cd "$REPO"
  CLUSTER=1 scripts/cluster-history "$HISTORY_SECONDS" 2>&1 | tee "$OUT/history.txt" \
    | grep -E "^nemesis|workload done|^history|test result|panicked" || true
  grep -E "workload done|^history|test result" "$OUT/history.txt" | sed 's/^/- /' >> "$RESULTS"
fi
[ -f "$OUT/where.txt" ] && { echo; sed 's/^/- /' "$OUT/where.txt"; } >> "$RESULTS"
echo; cat "$RESULTS"
