#!/usr/bin/env bash
# DHCPv6: vpcbox vs ISC Kea 2.2 (kea-dhcp6, memfile) under perfdhcp -6, in one run.
#
#   sudo bench/dhcp6.sh                          # Kea only (no vpcbox binary given)
#   sudo bench/dhcp6.sh target/release/vpcbox    # vpcbox, then Kea, same tests
#   RATE=6000 DUR=5 TESTS="na napd na-relayed napd-relayed flood flood-relayed" sudo bench/dhcp6.sh BIN
#   SKIP_KEA=1 sudo bench/dhcp6.sh BIN           # ours only
#
# Namespaces (prefix d6): bridge d6br in d6srv (fd00:77::1/64, fd00:79::1/64) with a
# veth to d6cli (v6c0, fd00:79::2: the load) and one to d6fl (v6f0, fd00:79::3: the
# flooder). Direct clients (perfdhcp -l v6c0, multicast) get fd00:77::/64 and /56s of
# fd00:78::/40; relayed ones (-A1, link-address = source = fd00:79::2 or ::3, unicast
# to fd00:79::1) get fd00:90::/64 and /56s of fd00:91::/40.
#
# Each test starts the server afresh (empty store) pinned to CPU 0, runs perfdhcp
# pinned to CPU 1 at a fixed rate (RATE) and appends one TSV row to
# $BENCH_OUT/results.tsv: Solicit-Advertise-Request-Reply exchanges/s (Replies
# received / run time), drops, delays, and the server's CPU per exchange from
# /proc/PID/stat (utime + stime, all its threads) over the run. The flood tests run
# legit clients (LEGIT_RATE, new DUIDs) while a second perfdhcp in d6fl sends from
# one DUID as fast as it can (or FLOOD_RATE), and report the legit clients' success.
set -euo pipefail
BIN=${1:-}
[ -z "$BIN" ] || BIN=$(realpath "$BIN")
export BENCH_OUT=${BENCH_OUT:-/var/tmp/dhcp6-bench-vpcbox}
RATE=${RATE:-6000} DUR=${DUR:-5} CLIENTS=${CLIENTS:-500000}
TESTS=${TESTS:-"na napd na-relayed napd-relayed flood flood-relayed"}
LEGIT_RATE=${LEGIT_RATE:-200} LEGIT_CLIENTS=${LEGIT_CLIENTS:-10000}
FLOOD_DUID=${FLOOD_DUID:-00030001020000000001}   # DUID-LL 02:00:00:00:00:01
FLOOD_RATE=${FLOOD_RATE:-}                        # empty: as fast as perfdhcp sends
SERVER_CPUS=${SERVER_CPUS-0} LOADGEN_CPUS=${LOADGEN_CPUS-1}
SRV=d6srv CLI=d6cli FL=d6fl
RUN=$BENCH_OUT/run LOGS=$BENCH_OUT/logs RESULTS=$BENCH_OUT/results.tsv
mkdir -p "$RUN" "$LOGS"
rm -f "$RESULTS"
command -v kea-dhcp6 >/dev/null && command -v perfdhcp >/dev/null ||
  { echo "needs kea-dhcp6-server and kea-admin (apt-get install -y kea-dhcp6-server kea-admin)" >&2; exit 1; }

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# The server is started without a shell function between: $! is its PID.
srvpin=(); [ -z "$SERVER_CPUS" ] || srvpin=(taskset -c "$SERVER_CPUS")
lgpin=(); [ -z "$LOADGEN_CPUS" ] || lgpin=(taskset -c "$LOADGEN_CPUS")

setup() {
  teardown
  for ns in $SRV $CLI $FL; do
    ip netns add $ns
    # No duplicate address detection: addresses are usable at once.
    nsx $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    nsx $ns ip link set lo up
  done
  nsx $SRV ip link add d6br type bridge mcast_snooping 0
  ip link add v6s0 netns $SRV type veth peer name v6c0 netns $CLI
  ip link add v6s1 netns $SRV type veth peer name v6f0 netns $FL
  for s in v6s0 v6s1; do nsx $SRV ip link set $s master d6br up; done
  nsx $SRV ip addr add fd00:77::1/64 dev d6br nodad
  nsx $SRV ip addr add fd00:79::1/64 dev d6br nodad
  nsx $SRV ip link set d6br up
  nsx $CLI ip addr add fd00:79::2/64 dev v6c0 nodad
  nsx $FL ip addr add fd00:79::3/64 dev v6f0 nodad
  nsx $CLI ip link set v6c0 up
  nsx $FL ip link set v6f0 up
}
teardown() { for ns in $SRV $CLI $FL; do ip netns del $ns 2>/dev/null || true; done; }

kea_config() {
  cat > "$RUN/kea-dhcp6.json" <<JSON
{ "Dhcp6": {
  "interfaces-config": { "interfaces": [ "d6br/fd00:79::1" ] },
  "data-directory": "$RUN",
  "lease-database": { "type": "memfile", "persist": true, "name": "$RUN/kea-leases6.csv", "lfc-interval": 3600 },
  "preferred-lifetime": 1800, "valid-lifetime": 3600, "renew-timer": 900, "rebind-timer": 1440,
  ${KEA_EXTRA:+$KEA_EXTRA,}
  "subnet6": [
    { "id": 1, "subnet": "fd00:77::/64", "interface": "d6br",
      "pools": [ { "pool": "fd00:77::1:0 - fd00:77::ff:ffff" } ],
      "pd-pools": [ { "prefix": "fd00:78::", "prefix-len": 40, "delegated-len": 56 } ],
      "option-data": [ { "name": "dns-servers", "data": "fd00:77::1" } ] },
    { "id": 2, "subnet": "fd00:90::/64", "relay": { "ip-addresses": [ "fd00:79::2", "fd00:79::3" ] },
      "pools": [ { "pool": "fd00:90::1:0 - fd00:90::ff:ffff" } ],
      "pd-pools": [ { "prefix": "fd00:91::", "prefix-len": 40, "delegated-len": 56 } ],
      "option-data": [ { "name": "dns-servers", "data": "fd00:77::1" } ] } ],
  "loggers": [ { "name": "kea-dhcp6", "output_options": [ { "output": "$LOGS/kea-dhcp6.log" } ],
                 "severity": "WARN", "debuglevel": 0 } ]
} }
JSON
}

vpcbox_config() {
  cat > "$RUN/vpcbox.toml" <<TOML
[storage]
path = "$RUN/data"
[dhcp]
enabled = false
# As bench/dhcp.sh: thousands of new clients a second, all through one relay
# without an Interface-Id; the brakes on a runaway relay are not measured here.
new_lease_rate = "${NEW_LEASE_RATE:-1000000/s}"
max_leases_per_port = 0
[gateway]
enabled = false
[dhcp6]
enabled = true
listen = "[::]:547"
interfaces = ["d6br"]
[[subnet6]]
id = "direct6"
prefix = "fd00:77::/64"
pools = ["fd00:77::1:0-fd00:77::ff:ffff"]
pd_pools = [{ prefix = "fd00:78::/40", delegated_len = 56 }]
dns = ["fd00:77::1"]
preferred_lifetime = "30m"
valid_lifetime = "1h"
[[subnet6]]
id = "relayed6"
prefix = "fd00:90::/64"
pools = ["fd00:90::1:0-fd00:90::ff:ffff"]
pd_pools = [{ prefix = "fd00:91::/40", delegated_len = 56 }]
dns = ["fd00:77::1"]
preferred_lifetime = "30m"
valid_lifetime = "1h"
relays = ["fd00:79::2", "fd00:79::3"]
TOML
}

# Starts server $1 (kea | vpcbox) afresh; waits until UDP 547 is bound in d6srv.
start() {
  stop
  rm -rf "$RUN/data" "$RUN"/kea-leases6.csv* "$RUN"/*.kea-dhcp6.pid
  case $1 in
    kea) KEA_PIDFILE_DIR=$RUN KEA_LOCKFILE_DIR=$RUN nsx $SRV kea-dhcp6 -t "$RUN/kea-dhcp6.json" >/dev/null
         KEA_PIDFILE_DIR=$RUN KEA_LOCKFILE_DIR=$RUN "${srvpin[@]}" ip netns exec $SRV kea-dhcp6 -c "$RUN/kea-dhcp6.json" > "$LOGS/server.log" 2>&1 & ;;
    vpcbox) "${srvpin[@]}" ip netns exec $SRV "$BIN" run --headless --config "$RUN/vpcbox.toml" > "$LOGS/server.log" 2>&1 & ;;
  esac
  echo $! > "$RUN/server.pid"
  for _ in $(seq 100); do
    nsx $SRV ss -Hlun 'sport = :547' | grep -q . && { sleep 0.3; return 0; }
    kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $1 did not start:" >&2; cat "$LOGS/server.log" >&2; return 1
}
stop() {
  [ -f "$RUN/server.pid" ] || return 0
  local pid; pid=$(cat "$RUN/server.pid"); rm -f "$RUN/server.pid"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# Datagrams the server's socket buffer had no room for (the kernel drops them).
rcvbuf_errs() { nsx $SRV awk '$1 == "Udp6RcvbufErrors" {print $2}' /proc/net/snmp6; }
# Busy ticks of the whole machine; quiet_wait waits (at most QUIET_TIMEOUT s) until
# it is below QUIET_MAX % busy: other work on a shared box distorts the figures.
sys_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
quiet_wait() { local waited=0 b0 b1 busy
  while :; do b0=$(sys_busy); sleep 1; b1=$(sys_busy)
    busy=$(( (b1 - b0) * 100 / $(getconf CLK_TCK) / $(nproc) ))
    [ "$busy" -le "${QUIET_MAX:-15}" ] && break
    waited=$((waited + 1)); [ "$waited" -ge "${QUIET_TIMEOUT:-20}" ] && break; done; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$RUN/server.pid")/stat"; }
# "TID NAME UTIME STIME" per server thread: where the server's CPU goes.
thread_ticks() { local t
  for t in /proc/"$(cat "$RUN/server.pid")"/task/*; do
    echo "${t##*/} $(tr ' ' _ < "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done 2>/dev/null; }

# perf LABEL NS [perfdhcp options]: one run, one TSV row.
perf() {
  local label=$1 ns=$2; shift 2
  local out="$LOGS/perf-$label.txt" t0 t1 s0 s1 e0 e1 b0 b1
  [ -n "${NO_QUIET_WAIT:-}" ] || quiet_wait
  thread_ticks > "$out.threads0"
  t0=$(cpu_ticks); s0=$(date +%s.%N); e0=$(rcvbuf_errs); b0=$(sys_busy)
  /usr/bin/time -f "%U %S" -o "$out.time" "${lgpin[@]}" ip netns exec "$ns" perfdhcp -6 "$@" > "$out" 2>&1 || true
  s1=$(date +%s.%N); t1=$(cpu_ticks); e1=$(rcvbuf_errs); b1=$(sys_busy)
  # The run's user and system ticks by thread name, busiest first.
  { echo "user sys thread"
    thread_ticks | awk 'NR == FNR {u[$1] = $3; k[$1] = $4; next}
      {user[$2] += $3 - u[$1]; sys[$2] += $4 - k[$1]}
      END {for (n in user) if (user[n] + sys[n] > 0) print user[n], sys[n], n}' "$out.threads0" - |
      sort -k1,1nr -k2,2nr; } > "$out.threads"
  # Other CPU: the whole machine's busy time less the server's and this perfdhcp's.
  local other; other=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    -v s="$s0" -v e="$s1" 'END {printf "%.0f", 100 * ((b - t) / hz - $1 - $2) / (e - s)}' "$out.time")
  awk -v label="$label" -v rcvbuf=$((e1 - e0)) -v other="$other" -v hz="$(getconf CLK_TCK)" -v ticks=$((t1 - t0)) \
      -v secs="$(awk -v s="$s0" -v e="$s1" 'BEGIN{print e-s}')" '
    /Statistics for: SOLICIT-ADVERTISE/ {sec="SA"} /Statistics for: REQUEST-REPLY/ {sec="RR"}
    /^sent packets:/ {sent[sec]=$3} /^received packets:/ {recv[sec]=$3}
    /^drops ratio:/ {dr[sec]=$3} /^avg delay:/ && $3 ~ /^[0-9.]+$/ {avg[sec]=$3}
    /^non unique addresses:/ {nu+=$4} /^rejected leases:/ {rej+=$3}
    END { x = recv["RR"] + 0; cpu = ticks / hz
      printf "%s\twall_s=%.1f\texch_per_s=%.0f\tsol_sent=%s\tadv_recv=%s\tSA_drop%%=%s\treq_sent=%s\treply_recv=%s\tRR_drop%%=%s\tSA_avg_ms=%s\tRR_avg_ms=%s\tsrv_cpu%%=%.0f\tus_per_exch=%s\tsuccess%%=%s\tnon_unique=%d\trejected=%d\tsrv_rcvbuf_drops=%d\tother_cpu%%=%s\n",
        label, secs, x / secs, sent["SA"], recv["SA"], dr["SA"], sent["RR"], x, dr["RR"],
        avg["SA"], avg["RR"], 100 * cpu / secs, (x > 0 ? sprintf("%.1f", cpu / x * 1e6) : "NA"),
        (sent["SA"] > 0 ? sprintf("%.2f", 100 * x / sent["SA"]) : "NA"), nu, rej, rcvbuf, other }' "$out" | tee -a "$RESULTS"
}

direct=(-l v6c0)
relayed=(-A1 -l fd00:79::2)
suite() {
  local srv=$1 t flood_args legit_args dst flooder
  for t in $TESTS; do
    case $t in
      na)           start "$srv"; perf "$srv-na-r$RATE" $CLI "${direct[@]}" -r "$RATE" -R "$CLIENTS" -p "$DUR" ;;
      napd)         start "$srv"; perf "$srv-napd-r$RATE" $CLI "${direct[@]}" -e address-and-prefix -r "$RATE" -R "$CLIENTS" -p "$DUR" ;;
      na-relayed)   start "$srv"; perf "$srv-na-relayed-r$RATE" $CLI "${relayed[@]}" -r "$RATE" -R "$CLIENTS" -p "$DUR" fd00:79::1 ;;
      napd-relayed) start "$srv"; perf "$srv-napd-relayed-r$RATE" $CLI "${relayed[@]}" -e address-and-prefix -r "$RATE" -R "$CLIENTS" -p "$DUR" fd00:79::1 ;;
      flood|flood-relayed)
        start "$srv"
        flood_args=(-l v6f0) legit_args=("${direct[@]}") dst=()
        if [ $t = flood-relayed ]; then
          flood_args=(-A1 -l fd00:79::3) legit_args=("${relayed[@]}") dst=(fd00:79::1)
        fi
        quiet_wait
        NO_QUIET_WAIT=1 perf "$srv-$t-flooder" $FL "${flood_args[@]}" ${FLOOD_RATE:+-r "$FLOOD_RATE"} -R 1 -b "duid=$FLOOD_DUID" -p $((DUR + 4)) "${dst[@]}" &
        flooder=$!
        sleep 2
        NO_QUIET_WAIT=1 perf "$srv-$t-legit-r$LEGIT_RATE" $CLI "${legit_args[@]}" -r "$LEGIT_RATE" -R "$LEGIT_CLIENTS" -p "$DUR" "${dst[@]}"
        wait "$flooder" ;;
      *) echo "unknown test $t" >&2; exit 64 ;;
    esac
  done
  stop
}

# As bench/dhcp.sh: perfdhcp reads every reply on one socket, whose default
# 208 KiB buffer overflows at these rates (each lost reply is a drop). Raised for
# the run, for both servers alike (the setting is host-wide), and put back at exit;
# RMEM_DEFAULT= (empty) leaves it alone.
RMEM_DEFAULT=${RMEM_DEFAULT-4194304}
old_rmem=$(sysctl -n net.core.rmem_default)
trap 'stop; teardown; sysctl -qw net.core.rmem_default="$old_rmem"' EXIT
[ -z "$RMEM_DEFAULT" ] || sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
setup
kea_config
if [ -n "$BIN" ]; then vpcbox_config; echo "== vpcbox $BIN"; suite vpcbox; fi
if [ -z "${SKIP_KEA:-}" ]; then echo "== kea-dhcp6 $(kea-dhcp6 -v)"; suite kea; fi
echo
awk -F'\t' '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-32s %7s exch/s  server %6s us/exch  success %6s %%  drops SA %s RR %s  non-unique %s  other CPU %s %%\n",
    $1, v["exch_per_s"], v["us_per_exch"], v["success%"], v["SA_drop%"], v["RR_drop%"], v["non_unique"], v["other_cpu%"] }' "$RESULTS"
