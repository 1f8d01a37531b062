"""Supervision of the BentoML server `ews serve` runs, with a stand-in supervisor (no model, no BentoML)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from serving.supervisor import WORKER, run_server

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


def _run(cmd: list[str], url: str, timeout: float) -> tuple[int, list[str], list[str]]:
    said, errors = [], []
    return run_server(cmd, dict(os.environ), url, timeout, said.append, errors.append), said, errors


def test_workers_that_keep_failing_stop_the_server_without_waiting_for_the_deadline() -> None:
    t0 = time.monotonic()
    rc, said, errors = _run(
        [sys.executable, "-c", FAILING_SUPERVISOR], f"http://127.0.0.1:{_free_port()}", 120
    )
    assert rc == 1 and time.monotonic() - t0 < 30 and not said
    assert errors == [
        "its workers keep failing to start (3 exited before one was ready); stopped it (its log is above)"
    ]


def test_a_supervisor_that_exits_before_ready_is_reported() -> None:
    rc, _, errors = _run([sys.executable, "-c", "raise SystemExit(3)"], "http://127.0.0.1:9", 60)
    assert rc == 1
    assert errors == ["the server exited with code 3 before it was ready; stopped it (its log is above)"]


def test_a_port_taken_while_starting_is_named() -> None:
    """Two `ews serve` started together both pass the port check; the one that loses says why."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        rc, _, errors = _run([sys.executable, "-c", "raise SystemExit(1)"], f"http://127.0.0.1:{port}", 60)
    assert rc == 1
    why = f"port {port} on 127.0.0.1 is in use (taken while this server was starting)"
    assert errors == [
        f"the server exited with code 1 before it was ready: {why}; stopped it (its log is above)"
    ]


def test_a_killed_server_s_home_is_removed_by_the_next_one(tmp_path, monkeypatch) -> None:
    """`ews serve` killed with SIGKILL cannot remove its BENTOML_HOME; the next server does, and only the
    homes of processes that are gone."""
    import tempfile

    from serving.supervisor import server_home

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"ews-serve-{dead.pid}-abc"
    alive = tmp_path / f"ews-serve-{os.getpid()}-def"
    for d in (gone, alive):
        (d / "prometheus").mkdir(parents=True)
    home = server_home()
    assert home.parent == tmp_path and home.name.startswith(f"ews-serve-{os.getpid()}-") and home.is_dir()
    assert not gone.exists() and alive.exists()
