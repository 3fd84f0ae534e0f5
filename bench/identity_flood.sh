#!/usr/bin/env bash
# A random-identity flood at line rate against a release vpcbox, RSS sampled
# once a second (item 5 of issue 18: every per-client map has a fixed cap).
#
#   bench/identity_flood.sh                  # target/release/vpcbox, 60 s
#   BIN=/tmp/vpcbox-base DUR=60 bench/identity_flood.sh
#   MAX_CLIENT_QUOTAS=2000 bench/identity_flood.sh   # a cap the senders can outrun
#
# Floods, all at once, as fast as the senders go:
#   - DHCP: DISCOVERs relayed from 127.0.0.2, each with a fresh random MAC,
#     every other one with a fresh random client-id (option 61), from
#     DHCP_SENDERS processes;
#   - gateway: HTTP/1.1 GET /healthz, one connection each, from random
#     source addresses in 127.0.0.0/8, from GW_SENDERS processes.
# Prints "t rss_kib tracked_keys" lines (the gauge is absent before max_client_quotas), then the RSS before, peak, at the end and
# 10 s after, and what the server counted (packets, drops, tracked keys).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/target/release/vpcbox}
DUR=${DUR:-60}
DHCP_SENDERS=${DHCP_SENDERS:-2}
GW_SENDERS=${GW_SENDERS:-1}
RUN=$(mktemp -d /tmp/identity-flood.XXXXXX)
DHCP_PORT=${DHCP_PORT:-16767}
HTTP_PORT=${HTTP_PORT:-18080}

cat > "$RUN/config.toml" <<TOML
[storage]
path = "$RUN/data"
[dhcp]
listen = "127.0.0.1:$DHCP_PORT"
server_id = "10.0.0.1"
${MAX_CLIENT_QUOTAS:+max_client_quotas = $MAX_CLIENT_QUOTAS}
[gateway]
listen = "127.0.0.1:$HTTP_PORT"
admin_token_file = "$RUN/data/admin.token"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
relays = ["127.0.0.2"]
TOML

"$BIN" run --headless --config "$RUN/config.toml" 2> "$RUN/vpcbox.log" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; jobs -p | xargs -r kill 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
sleep 2
BEFORE=$(rss)
echo "binary $BIN; rss_kib before=$BEFORE"

cat > "$RUN/dhcp.py" <<'PY'
import os, socket, struct, sys, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 0))
def discover(mac, cid):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s4s", 1, 1, 6, 1,
        int.from_bytes(os.urandom(4), "big"), 0, 0, bytes(4), bytes(4), bytes(4),
        bytes([127, 0, 0, 2]), mac + bytes(10), bytes(64), bytes(128), b"\x63\x82\x53\x63")
    opts = b"\x35\x01\x01"
    if cid:
        opts += b"\x3d\x0d\xff" + cid
    return head + opts + b"\xff"
to = ("127.0.0.1", port)
end = time.time() + dur
n = 0
while time.time() < end:
    for _ in range(1000):
        r = os.urandom(18)
        try:
            s.sendto(discover(r[:6], r[6:] if n & 1 else None), to)
        except OSError:
            pass
        n += 1
print(f"dhcp sender: {n} DISCOVERs, {n / dur:.0f}/s", flush=True)
PY

cat > "$RUN/gw.py" <<'PY'
import os, socket, sys, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + dur
n = ok = 0
req = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
while time.time() < end:
    a = os.urandom(3)
    src = f"127.{a[0]}.{a[1]}.{max(a[2], 1)}"
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.settimeout(1)
    try:
        c.bind((src, 0)); c.connect(("127.0.0.1", port)); c.sendall(req)
        ok += c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        pass
    finally:
        c.close()
    n += 1
print(f"gateway sender: {n} connections from random 127/8 sources, {ok} answered 200", flush=True)
PY

tracked() { curl -s -m 1 "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^vpcbox_dhcp_tracked_clients / {print $2}'; }
( for t in $(seq "$((DUR + 12))"); do echo "$t $(rss) $(tracked)"; sleep 1; done ) > "$RUN/rss.log" &
SAMPLER=$!
for _ in $(seq "$DHCP_SENDERS"); do python3 "$RUN/dhcp.py" "$DHCP_PORT" "$DUR" >> "$RUN/senders.log" & done
for _ in $(seq "$GW_SENDERS"); do python3 "$RUN/gw.py" "$HTTP_PORT" "$DUR" >> "$RUN/senders.log" & done
sleep "$DUR"; sleep 1
END=$(rss)
sleep 10
AFTER=$(rss)
wait "$SAMPLER" 2>/dev/null || true
TRACKED=$(awk 'BEGIN {m = 0} $3 > m {m = $3} END {print m}' "$RUN/rss.log")
PEAK=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$RUN/rss.log")
echo "t rss_kib tracked_keys"; cat "$RUN/rss.log"; cat "$RUN/senders.log"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" > "$RUN/metrics.txt"
grep -E '^vpcbox_(dhcp_packets_total\{type="discover"|client_drops_total)' "$RUN/metrics.txt" | grep -v " 0$" || true
echo "rss_kib before=$BEFORE peak=$PEAK end=$END after10s=$AFTER; tracked_keys peak=${TRACKED:-n/a} (dur ${DUR}s, $DHCP_SENDERS dhcp + $GW_SENDERS gateway senders)"
