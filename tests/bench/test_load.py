"""The benchmark's raw-socket HTTP client reads whole responses, so its figures count real requests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import HttpConnection, prepared


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.path == "/chunked":
            self.send_response(201)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"abc", b"defgh"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(422 if b'"bad"' in body else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _server() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_requests_on_one_connection_read_each_whole_response() -> None:
    srv = _server()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/score"
        host, port, raws = prepared(url, [{"id": "L1"}, "bad", {"big": "x" * 200_000}], "k3y")
        c = HttpConnection(host, port)
        # in turn and again: a response left half-read would corrupt the next status line
        assert [c.request(r) for r in raws + raws] == [200, 422, 200] * 2
        chunked = prepared(url.replace("/score", "/chunked"), [{}], None)[2][0]
        assert [c.request(chunked), c.request(raws[0])] == [201, 200]
        c.close()
        assert srv.seen[0] == ("/score", "Bearer k3y", b'{"loan":{"id":"L1"}}')
        assert srv.seen[-2][1] is None  # no key, no header
        assert len(srv.seen) == 8
    finally:
        srv.shutdown()


def test_a_request_the_server_dropped_after_replying_in_part_is_an_error_not_a_resend() -> None:
    """A kept-alive connection closed while idle is reopened once and counted; a reply cut off midway is
    the caller's error (a worker that dies mid-request must show as an error, not a second 200)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    idle_closed = threading.Event()

    def serve() -> None:
        a, _ = srv.accept()  # first connection: one reply, then closed while idle
        a.recv(65536)
        a.sendall(ok)
        a.close()
        idle_closed.set()
        b, _ = srv.accept()  # the resend: one reply, then a reply cut short
        b.recv(65536)
        b.sendall(ok)
        b.recv(65536)
        b.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        b.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    _, _, raws = prepared(f"http://127.0.0.1:{port}/score", [{}], None)
    c = HttpConnection("127.0.0.1", port, timeout=5)
    assert c.request(raws[0]) == 200
    assert idle_closed.wait(5)
    assert c.request(raws[0]) == 200 and c.reconnects == 1
    with pytest.raises(EOFError):  # a reply cut short is no response
        c.request(raws[0])
    assert c.reconnects == 1
    srv.close()
