#!/usr/bin/env python3
"""Memory by owner during the incident replay (issue 22).

Runs `vpcbox replay --spawn config.toml` (the shipped protections), polls the
spawned target's /metrics every 250 ms for `vpcbox_memory_bytes{owner}`, and
prints the breakdown just before the load starts (end of the idle phase), at
its end (the last poll before the tail) and 5 s after it stops (5 s into the
tail). Results: bench/RESULTS-memory.md.

    bench/memory_owners.py [VPCBOX_BIN]     # default target/release/vpcbox
"""
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

OWNERS = ["store", "clients", "gateway_buffers", "dhcp_queues",
          "allocator_retained", "allocator_dirty", "other"]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/vpcbox"
    out = tempfile.mkdtemp(prefix="vpcbox-owners.", dir="/var/tmp")
    cmd = [binary, "replay", "--spawn", "config.toml", "--tail-secs", "8", "--out", out]
    print("#", " ".join(cmd), file=sys.stderr)
    replay = subprocess.Popen(cmd, stdout=open(os.path.join(out, "replay.txt"), "w"),
                              stderr=subprocess.STDOUT)
    cfg = os.path.join(out, "target-config.toml")
    while not os.path.exists(cfg) and replay.poll() is None:
        time.sleep(0.02)
    listen = re.search(r'\[gateway\][^\[]*?listen = "([^"]+)"', open(cfg).read()).group(1)
    # The replay's clock starts when the target is ready: so does ours, at
    # the first answer that carries figures.
    t0 = None
    polls = []  # (t since ready, {owner: bytes, "rss": bytes, "allocated": bytes})
    while replay.poll() is None:
        t = time.monotonic() - (t0 or time.monotonic())
        try:
            text = urllib.request.urlopen(f"http://{listen}/metrics", timeout=1).read().decode()
        except OSError:
            time.sleep(0.25)
            continue
        row = {}
        for m in re.finditer(r'^vpcbox_memory_bytes\{owner="(\w+)"\} (\S+)$', text, re.M):
            row[m.group(1)] = float(m.group(2))
        for name, key in (("vpcbox_memory_rss_bytes", "rss"), ("vpcbox_heap_allocated_bytes", "allocated")):
            m = re.search(rf"^{name} (\S+)$", text, re.M)
            if m:
                row[key] = float(m.group(1))
        if row.get("rss"):
            if t0 is None:
                t0, t = time.monotonic(), 0.0
            polls.append((t, row))
        time.sleep(0.25)
    timeline = list(csv.DictReader(open(os.path.join(out, "timeline.csv"))))
    load_start = next(float(r["t"]) for r in timeline if r["phase"] != "idle")
    load_end = next(float(r["t"]) for r in timeline if r["phase"] == "tail")
    before = max((p for p in polls if p[0] < load_start - 0.3), key=lambda p: p[0])
    end = max((p for p in polls if p[0] < load_end), key=lambda p: p[0])
    after = min(polls, key=lambda p: abs(p[0] - (load_end + 5.0)))
    print(f"replay output: {out}")
    print(f"| owner | before the load (t={before[0]:.1f} s) | end of the load (t={end[0]:.1f} s) "
          f"| 5 s after it (t={after[0]:.1f} s) |")
    print("|---|---:|---:|---:|")
    mib = lambda v: f"{v / 1048576:.1f} MiB"
    for o in OWNERS + ["sum", "rss", "allocated"]:
        cells = [sum(p[1].get(x, 0) for x in OWNERS) if o == "sum" else p[1].get(o, 0)
                 for p in (before, end, after)]
        print(f"| {o} | " + " | ".join(mib(c) for c in cells) + " |")
    print(open(os.path.join(out, "verdict.txt")).read() if os.path.exists(os.path.join(out, "verdict.txt")) else "")


if __name__ == "__main__":
    main()
