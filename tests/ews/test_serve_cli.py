"""`ews serve`'s supervision of the BentoML server, with a stand-in supervisor (no model, no BentoML)."""

from __future__ import annotations

import os
import socket
import sys
import time

from ews.cli import WORKER, _run_server

# a supervisor whose workers keep dying at start, as BentoML's do when the service cannot be built:
# BentoML restarts them without end, so `ews serve` must notice and stop it
FAILING_SUPERVISOR = f"""
import subprocess, sys
while True:
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", "{WORKER}"])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_that_keep_failing_stop_the_server_without_waiting_for_the_deadline(capsys) -> None:
    t0 = time.monotonic()
    rc = _run_server(
        [sys.executable, "-c", FAILING_SUPERVISOR], dict(os.environ), f"http://127.0.0.1:{_free_port()}", 120
    )
    assert rc == 1 and time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert "its workers keep failing to start (3 exited before one was ready); stopped it" in " ".join(
        err.split()
    )


def test_a_supervisor_that_exits_before_ready_is_reported(capsys) -> None:
    rc = _run_server(
        [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), "http://127.0.0.1:9", 60
    )
    assert rc == 1
    assert "the server exited with code 3 before it was ready" in " ".join(capsys.readouterr().err.split())
