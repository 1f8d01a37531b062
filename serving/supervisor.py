"""Supervision of the BentoML server `ews serve` runs: start-up checks in a fresh interpreter, the
supervisor in a session of its own, readiness, and a stop that leaves nothing behind.

Why here and not in the command line: it is the service's life cycle (what counts as ready, when workers
are failing rather than flaky, which processes belong to one server), and the command line only words
its outcome. Messages for the user go through the `say` / `error` callbacks the caller passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)

WORKER = "_bentoml_impl.worker.service"  # in the command line of each BentoML worker
SERVER_ID = "EWS_SERVER_ID"  # in the environment of everything one `ews serve` starts
MAX_WORKER_EXITS = 3  # workers that exit before the server is ready: they are failing, not flaky


class StopSignals:
    """SIGTERM and SIGINT, recorded instead of ending the process, from `with` until its end (the
    previous handlers are restored then): `ews serve` holds them over its start-up checks and its
    server alike, so a stop at any moment stops what runs and exits 0."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        import signal

        self._previous = {
            s: signal.signal(s, lambda signum, _frame: self.received.append(signum))
            for s in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def __bool__(self) -> bool:
        return bool(self.received)


def preflight(host: str, port: int, env: dict[str, str], stop: StopSignals | list | None = None) -> dict:
    """`serving.preflight` in a fresh interpreter with the workers' environment: {"ok": True, model_name,
    model_version, users, ...} or {"ok": False, "error": why} (a crash of the checks is such an error);
    {"ok": False, "stopped": True, ...} when a stop signal arrived first (the checks are then ended).
    The checks run in a session of their own, so a terminal's Ctrl-C reaches only this process."""
    check = subprocess.Popen(
        [sys.executable, "-m", "serving.preflight", host, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_stop_with_parent,
    )
    out = ""
    while not stop:
        try:
            out, _ = check.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            continue
    if stop:
        check.kill()
        check.communicate()
        return {"ok": False, "stopped": True, "error": "stopped by a signal during the start-up checks"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"ok": False, "error": f"the startup checks crashed (exit code {check.returncode})"}


def server_home() -> Path:
    """A BENTOML_HOME of this server's own (BentoML keeps its prometheus multiprocess folder there,
    wiped by each server that starts), named by this process's id; the homes of servers whose process is
    gone (killed with SIGKILL, so they never removed theirs) are removed first."""
    import psutil

    for old in Path(tempfile.gettempdir()).glob("ews-serve-*-*"):
        pid = old.name.split("-")[2]
        if old.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"ews-serve-{os.getpid()}-"))


def bentoml_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:LoanEWS",
        "--host",
        host,
        "--port",
        str(port),
    ]


def run_server(
    cmd: list[str],
    env: dict[str, str],
    url: str,
    startup_timeout: float,
    say: Callable[[str], None],
    error: Callable[[str], None],
    stop: StopSignals | None = None,
) -> int:
    """Run the BentoML supervisor until it exits or SIGTERM/SIGINT arrives; the exit code of `ews serve`.

    The supervisor runs in a session of its own (so a terminal's Ctrl-C reaches only this process, which
    forwards it) and is told to stop if this process dies. Whatever happens, everything it started is
    stopped before this returns (`stop_server`): never a half-up server. `stop` is the caller's
    `StopSignals`, already held (else this holds its own)."""
    if stop is None:
        with StopSignals() as own:
            return run_server(cmd, env, url, startup_timeout, say, error, own)
    import uuid

    server_id = uuid.uuid4().hex
    env = {**env, SERVER_ID: server_id}  # inherited by everything the supervisor starts
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_stop_with_parent)
    try:
        not_ready = wait_ready(proc, url, startup_timeout, stop)
        if stop:
            return 0
        if not_ready:
            stop_server(proc, server_id)  # first, so nothing the server prints lands after the error line
            taken = _port_taken(url) if proc.returncode is not None else None  # the supervisor could not bind
            error(f"{not_ready}{f': {taken}' if taken else ''}; stopped it (its log is above)")
            return 1
        say(f"ready on {url} (docs at {url}/); SIGTERM or Ctrl-C stops it")
        while not stop and proc.poll() is None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        if stop:
            return 0
        stop_server(proc, server_id)
        error(f"the server exited with code {proc.returncode}; stopped its workers")
        return 1
    finally:
        stop_server(proc, server_id)


def _port_taken(url: str) -> str | None:
    """Why a server that failed to start could not listen, when another process took its port after
    the start-up checks (two `ews serve` started together): the checks' own words, else None."""
    from urllib.parse import urlsplit

    from serving.preflight import PortInUse, check_port

    parts = urlsplit(url)
    try:
        check_port(parts.hostname or "127.0.0.1", parts.port or 80)
    except PortInUse as e:
        return f"{e} (taken while this server was starting)"
    return None


def wait_ready(proc, url: str, timeout: float, stop: list[int]) -> str | None:
    """Poll /readyz until a worker answers 200 (None); otherwise why the server is not ready: the
    supervisor exited, its workers keep exiting (BentoML restarts them forever), or the deadline passed.
    A signal ends the wait too (`stop` is then non-empty)."""
    import httpx

    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while not stop:
        if proc.poll() is not None:
            return f"the server exited with code {proc.returncode} before it was ready"
        live = _workers(proc.pid)
        seen |= live
        if len(seen - live) >= MAX_WORKER_EXITS:
            return f"its workers keep failing to start ({len(seen - live)} exited before one was ready)"
        if time.monotonic() > deadline:
            return f"the service did not become ready within {timeout:g} s (EWS_STARTUP_TIMEOUT)"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return None


def _workers(pid: int) -> set[int]:
    """The pids of the BentoML workers among the descendants of `pid`."""
    import psutil

    found = set()
    with suppress(psutil.Error):
        for p in psutil.Process(pid).children(recursive=True):
            with suppress(psutil.Error):
                if WORKER in p.cmdline():
                    found.add(p.pid)
    return found


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM it if `ews serve` dies (even by SIGKILL), Linux only."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _started_by(server_id: str) -> list:
    """Every live process carrying this server's SERVER_ID in its environment: the supervisor and its
    workers, also those orphaned by a supervisor that died while starting them (BentoML's workers run
    in sessions of their own, so neither the process group nor the tree finds them all)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        with suppress(psutil.Error):
            if p.environ().get(SERVER_ID) == server_id:
                found.append(p)
    return found


def stop_server(proc, server_id: str, grace: float = 20.0) -> None:
    """Stop the supervisor and every process it started: SIGTERM to the supervisor, which stops its
    workers; once the supervisor is gone (it stopped, or was killed and left its workers serving),
    SIGTERM to whatever still carries the server's id; after `grace` seconds SIGKILL to what is left."""
    import psutil

    with suppress(psutil.NoSuchProcess):
        psutil.Process(proc.pid).terminate()
    deadline = time.monotonic() + grace
    orphans_told = False
    while time.monotonic() < deadline and (left := _started_by(server_id)):
        if proc.poll() is not None and not orphans_told:
            for p in left:
                with suppress(psutil.NoSuchProcess):
                    p.terminate()
            orphans_told = True
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)  # reaps the supervisor once it exits
    left = _started_by(server_id)
    if left:
        log.warning("stopping %d process(es) that did not stop within %g s", len(left), grace)
        for p in left:
            with suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=5)
    proc.wait()
