"""A bounded HTTP load against a running loan-ews server (run as its own process by `python -m bench`).

python -m bench.load URL BODIES.json CONCURRENCY REQUESTS  → prints one JSON line: p50, p99, rate.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx
import numpy as np


def main(url: str, bodies_file: str, concurrency: int, n: int) -> None:
    with open(bodies_file) as f:
        bodies = json.load(f)
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=30) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                r = c.post(url, json={"loan": bodies[i % len(bodies)]})
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
                    errors += r.status_code != 200

    # warm-up (connections, first-call costs), not measured
    with httpx.Client(timeout=30) as c:
        for b in bodies[:10]:
            c.post(url, json={"loan": b})
    t0 = time.perf_counter()
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
                "p50_ms": float(np.percentile(a, 50)),
                "p99_ms": float(np.percentile(a, 99)),
                "rate": n / wall,
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
