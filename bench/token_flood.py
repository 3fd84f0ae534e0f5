#!/usr/bin/env python3
"""Requests one source IP gets admitted per second when it sends a new random
bearer token with every request (issue 18, item 1).

    bench/token_flood.py HOST:PORT [--secs 5] [--conns 8] [--source 127.0.0.1] [--path /healthz]

HTTP/1.1 keep-alive connections, all from --source, each sending GET --path
with `Authorization: Bearer <16 random bytes, hex>` back to back. Prints the
answers by status and the 2xx per second over the run. Stdlib only.
"""

import argparse
import asyncio
import collections
import secrets
import time


async def one_conn(host, port, source, path, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        while time.monotonic() < deadline:
            token = secrets.token_hex(16)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            counts[status] += 1
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--source", default="127.0.0.1")
    ap.add_argument("--path", default="/healthz")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    counts = collections.Counter()
    t0 = time.monotonic()
    deadline = t0 + a.secs
    await asyncio.gather(
        *(one_conn(host, int(port), a.source, a.path, deadline, counts) for _ in range(a.conns))
    )
    secs = time.monotonic() - t0
    ok = sum(n for s, n in counts.items() if 200 <= s < 300)
    print(f"source {a.source}, {a.secs:.0f} s, new random token per request: "
          f"answers {dict(sorted(counts.items()))}, admitted {ok / secs:.0f}/s")


if __name__ == "__main__":
    asyncio.run(main())
