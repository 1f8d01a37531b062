"""A bounded HTTP load against a running loan-ews server (run as its own process by `python -m bench`).

python -m bench.load URL BODIES.json CONCURRENCY REQUESTS          # closed loop, a fixed count
python -m bench.load URL BODIES.json CONCURRENCY --seconds S       # closed loop for S seconds
python -m bench.load URL BODIES.json CONCURRENCY --seconds S --rate R   # open loop at R requests/s
python -m bench.load URL - CONCURRENCY REQUESTS --get               # GET URL: the HTTP stack's ceiling

Prints one JSON line: requests, errors by status, p50, p99, rate. The API key is read from EWS_BENCH_KEY
(never from the command line, which other users of the host can read). At a fixed rate each request has
a scheduled start and its latency counts from then, so a server that falls behind shows in p99 instead
of slowing the load down (no coordinated omission).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import threading
import time

import httpx
import numpy as np


def main(
    url: str,
    bodies_file: str,
    concurrency: int,
    n: int | None,
    seconds: float | None,
    rate: float | None,
    get: bool = False,
) -> None:
    if get:
        bodies = [None]
    else:
        with open(bodies_file) as f:
            bodies = json.load(f)
    headers = (
        {"authorization": f"Bearer {os.environ['EWS_BENCH_KEY']}"} if os.environ.get("EWS_BENCH_KEY") else {}
    )
    lat: list[float] = []
    status: collections.Counter = collections.Counter()
    lock = threading.Lock()
    counter = iter(range(n if n is not None else 10**12))

    # warm-up (connections, first-call costs), not measured
    with httpx.Client(timeout=30, headers=headers) as c:
        for b in bodies[:10]:
            c.get(url) if get else c.post(url, json={"loan": b})
    t0 = time.perf_counter()
    end = t0 + seconds if seconds is not None else float("inf")

    def worker() -> None:
        with httpx.Client(timeout=30, headers=headers) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = t0 + i / rate if rate else time.perf_counter()
                if start >= end or (rate is None and time.perf_counter() >= end):
                    return
                if rate:
                    time.sleep(max(0.0, start - time.perf_counter()))
                try:
                    r = c.get(url) if get else c.post(url, json={"loan": bodies[i % len(bodies)]})
                    code = r.status_code
                except httpx.HTTPError as e:
                    code = type(e).__name__
                dt = time.perf_counter() - start
                with lock:
                    lat.append(dt)
                    status[code] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    print(
        json.dumps(
            {
                "requests": len(lat),
                "p50_ms": float(np.percentile(a, 50)),
                "p99_ms": float(np.percentile(a, 99)),
                "rate": len(lat) / wall,
                "errors": sum(v for k, v in status.items() if k != 200),
                "status": {str(k): v for k, v in sorted(status.items(), key=str)},
            }
        )
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("bodies")
    p.add_argument("concurrency", type=int)
    p.add_argument("requests", type=int, nargs="?")
    p.add_argument("--seconds", type=float)
    p.add_argument("--rate", type=float)
    p.add_argument("--get", action="store_true", help="GET the URL instead of posting bodies")
    a = p.parse_args()
    if (a.requests is None) == (a.seconds is None):
        p.error("give REQUESTS or --seconds")
    main(a.url, a.bodies, a.concurrency, a.requests, a.seconds, a.rate, a.get)
