"""A bounded HTTP load against a running loan-ews server (run as its own process by `python -m bench`).

python -m bench.load URL BODIES.json CONCURRENCY REQUESTS          # closed loop, a fixed count
python -m bench.load URL BODIES.json CONCURRENCY --seconds S       # closed loop for S seconds
python -m bench.load URL BODIES.json CONCURRENCY --seconds S --rate R   # open loop at R requests/s
python -m bench.load URL - CONCURRENCY REQUESTS --get               # GET URL: the HTTP stack's ceiling

Prints one JSON line: requests, errors by status, p50, p99, rate, and the CPU seconds this process spent
per request. The API key is read from EWS_BENCH_KEY (never from the command line, which other users of
the host can read). At a fixed rate each request has a scheduled start and its latency counts from then,
so a server that falls behind shows in p99 instead of slowing the load down (no coordinated omission).

Why raw sockets: the server and this client share the machine's cores, so every millisecond of CPU the
client spends per request is taken from the server it measures. An httpx client spent 1.2-1.7 ms of CPU
per /score request (building and encoding each request, parsing each response), about as much as the
server's HTTP path; here each request's bytes are encoded once, before the clock starts, and a response is
read by its Content-Length (or its chunks), so the client costs about 0.1-0.2 ms of CPU a request.
The connections are opened one after another, each with a first request, before the load starts, so
BentoML's workers (which share one listening socket) both get some.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads whole responses."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""
        self.received = False  # a byte of the current response has come back
        self.reconnects = 0

    def _connect(self) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, b""
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def request(self, raw: bytes) -> int:
        """Send one prepared request; its status code once the whole response is read.

        A kept-alive connection the server closed while it was idle (its keep-alive timeout) fails
        before any byte of a response comes back: that request is sent once more on a new connection
        and counted in `reconnects`, so a run that needed them says so. A failure after part of a
        response, or on a new connection, is the caller's error."""
        fresh = self.sock is None
        s = self.sock or self._connect()
        self.received = False
        try:
            s.sendall(raw)
            return self._response()
        except (ConnectionError, EOFError):
            self.close()
            if fresh or self.received:
                raise
        self.reconnects += 1
        self._connect().sendall(raw)
        return self._response()

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.received = True
        self.buf += chunk

    def _response(self) -> int:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if fields.get("transfer-encoding", "").lower().rsplit(",", 1)[-1].strip() == "chunked":
            self._chunked()
        else:
            n = int(fields.get("content-length", "0"))
            while len(self.buf) < n:
                self._recv()
            self.buf = self.buf[n:]
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status

    def _chunked(self) -> None:
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                self._recv()
            size = int(self.buf[:end].split(b";")[0], 16)
            while len(self.buf) < end + 2 + size + 2:
                self._recv()
            self.buf = self.buf[end + 2 + size + 2 :]
            if size == 0:
                return


def prepared(url: str, bodies: list | None, key: str | None) -> tuple[str, int, list[bytes]]:
    """(host, port, the raw bytes of each request): a POST per body, or one GET when `bodies` is None."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path or "/"
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    if bodies is None:
        return host, port, [f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}\r\n".encode()]
    out = []
    for b in bodies:
        body = json.dumps({"loan": b}, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return host, port, out


def main(
    url: str,
    bodies_file: str,
    concurrency: int,
    n: int | None,
    seconds: float | None,
    rate: float | None,
    get: bool = False,
) -> None:
    bodies = None
    if not get:
        with open(bodies_file) as f:
            bodies = json.load(f)
    host, port, raws = prepared(url, bodies, os.environ.get("EWS_BENCH_KEY"))
    lat: list[float] = []
    status: collections.Counter = collections.Counter()
    lock = threading.Lock()
    counter = iter(range(n if n is not None else 10**12))

    # warm-up (first-call costs), not measured
    warm = HttpConnection(host, port)
    for raw in raws[:10]:
        warm.request(raw)
    warm.close()
    conns = []
    for _ in range(concurrency):  # one after another, so both workers accept some
        c = HttpConnection(host, port)
        c.request(raws[0])
        conns.append(c)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + seconds if seconds is not None else float("inf")

    def worker(c: HttpConnection) -> None:
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
                code: int | str = c.request(raws[i % len(raws)])
            except (OSError, EOFError, ValueError, IndexError) as e:  # IndexError: a garbled status line
                c.close()
                code = type(e).__name__
            dt = time.perf_counter() - start
            with lock:
                lat.append(dt)
                status[code] += 1

    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    a = np.array(lat) * 1000
    print(
        json.dumps(
            {
                "requests": len(lat),
                "p50_ms": float(np.percentile(a, 50)),
                "p99_ms": float(np.percentile(a, 99)),
                "rate": len(lat) / wall,
                "client_cpu_ms": 1000 * cpu / max(len(lat), 1),
                "reconnects": sum(c.reconnects for c in conns),
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
