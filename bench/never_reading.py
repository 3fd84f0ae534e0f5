#!/usr/bin/env python3
"""Peak RSS of vpcbox under N HTTP/2 connections that ask for large responses
and never read them (issue 18, item 6), at the shipped defaults.

Runs the given vpcbox binary with ./config.toml changed only in ports, paths and
the route's upstream; an asyncio upstream answers /big with 8 MiB and anything
else with 64 KiB. Each attacking connection comes from its own 127.0.0.x (the
per-IP quota is not what is measured), sends SETTINGS_INITIAL_WINDOW_SIZE =
2^31-1 and a connection WINDOW_UPDATE as large, opens STREAMS GETs of /big and
never reads its socket. Meanwhile a well-behaved client (curl, h2c, from
127.0.0.2) fetches 64 KiB every 100 ms. Prints peak and final RSS, the peak of
vpcbox_gateway_response_buffered_bytes and the well-behaved client's results.

usage: bench/never_reading.py BIN [CONNS=40] [STREAMS=100] [SECS=20] [OVERRIDE]
"""
import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
CONNS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
STREAMS = int(sys.argv[3]) if len(sys.argv) > 3 else 100
SECS = float(sys.argv[4]) if len(sys.argv) > 4 else 20
# Optional: `key = value` lines replacing the shipped [gateway] ones, `;`-separated
# (e.g. 'response_budget = "64GiB";send_stall_timeout = "1h"' for the budget off).
OVERRIDE = sys.argv[5] if len(sys.argv) > 5 else ""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def upstream(port, ready):
    big, small = b"x" * (8 << 20), b"x" * (64 << 10)

    async def serve(r, w):
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                body = big if b" /big" in head.split(b"\r\n", 1)[0] else small
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
                for i in range(0, len(body), 65536):
                    w.write(body[i:i + 65536])
                    await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    async def main():
        srv = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
        ready.set()
        await srv.serve_forever()

    asyncio.run(main())


def frame(kind, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def lit(name, value):
    # HPACK literal without indexing, new name, no Huffman.
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def attacker(i, port, socks):
    s = socket.socket()
    s.bind((f"127.0.0.{10 + i}", 0))
    s.connect(("127.0.0.1", port))
    block = lit(b":method", b"GET") + lit(b":scheme", b"http") + lit(b":path", b"/upstream/big") + lit(b":authority", b"x")
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += frame(4, 0, 0, struct.pack(">HI", 4, 0x7FFFFFFF))
    out += frame(8, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535))
    out += b"".join(frame(1, 0x5, 2 * k + 1, block) for k in range(STREAMS))
    s.sendall(out)
    socks.append(s)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+)", f.read())
    return int(m.group(1)) if m else 0


def main():
    up, gw = free_port(), free_port()
    ready = threading.Event()
    threading.Thread(target=upstream, args=(up, ready), daemon=True).start()
    ready.wait()
    tmp = tempfile.mkdtemp(prefix="vpcbox-nr-")
    cfg = open("config.toml").read()
    cfg = cfg.replace('path = "./data"', f'path = "{tmp}/data"')
    cfg = cfg.replace('listen = "127.0.0.1:6767"', 'listen = "127.0.0.1:0"')
    cfg = cfg.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{gw}"')
    cfg = cfg.replace('admin_token_file = "./data/admin.token"', f'admin_token_file = "{tmp}/admin.token"')
    cfg = cfg.replace('upstream = "http://127.0.0.1:9000"', f'upstream = "http://127.0.0.1:{up}"')
    cfg = cfg.replace('strip_prefix = false', 'strip_prefix = true')
    for line in filter(None, OVERRIDE.split(";")):
        key = line.split("=")[0].strip()
        cfg = re.sub(rf"^{key} = .*$", line.strip(), cfg, count=1, flags=re.M)
    open(f"{tmp}/config.toml", "w").write(cfg)
    proc = subprocess.Popen([BIN, "--headless", "--config", f"{tmp}/config.toml"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/log", "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", gw), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1)
    idle = rss_kib(proc.pid)
    peak = [idle]
    buffered = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(proc.pid))
            time.sleep(0.05)

    def metrics():
        while not stop.is_set():
            r = subprocess.run(["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{gw}/metrics",
                                "--interface", "127.0.0.3"], capture_output=True, text=True)
            m = re.search(r"^vpcbox_gateway_response_buffered_bytes (\d+)", r.stdout, re.M)
            if m:
                buffered[0] = max(buffered[0], int(m.group(1)))
            time.sleep(0.25)

    ok, bad, worst = 0, 0, 0.0

    def good_client():
        nonlocal ok, bad, worst
        while not stop.is_set():
            t = time.time()
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                "--http2-prior-knowledge", "--max-time", "10", "--interface", "127.0.0.2",
                                f"http://127.0.0.1:{gw}/upstream/small"], capture_output=True, text=True)
            worst = max(worst, time.time() - t)
            if r.stdout.strip() == f"200 {64 << 10}":
                ok += 1
            else:
                bad += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=f, daemon=True) for f in (sample, metrics, good_client)]
    for t in threads:
        t.start()
    socks = []
    for i in range(CONNS):
        attacker(i, gw, socks)
    time.sleep(SECS)
    during = rss_kib(proc.pid)
    for s in socks:
        s.close()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    after = rss_kib(proc.pid)
    proc.terminate()
    proc.wait(timeout=20)
    mib = lambda k: f"{k / 1024:.1f} MiB"
    print(f"override='{OVERRIDE}' conns={CONNS} streams={STREAMS} secs={SECS:g} idle={mib(idle)} peak={mib(peak[0])} "
          f"end_of_attack={mib(during)} 3s_after_close={mib(after)} "
          f"peak_response_buffered={mib(buffered[0] / 1024)} "
          f"good_client ok={ok} failed={bad} slowest={worst:.2f}s")


if __name__ == "__main__":
    main()
