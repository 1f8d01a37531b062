"""`ews serve` refuses every startup fault of issue 14 with one line and exit 1, never leaves anything
running or listening, and stops everything it started on SIGTERM or SIGINT.

No test trains here: faults are made in copies of the session's small champion store (paths inside
rewritten; `small_champion_store`, so these tests do not wait on the demo model) or book. Every
`ews serve` here carries a marker in its environment, which its children inherit (BentoML's workers run
in sessions of their own), so "nothing left running" is checked by that marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.serving.conftest import EWS, add_user, free_port, port_is_free, serve_env


@dataclass
class Outcome:
    rc: int
    out: str
    port: int
    marker: str

    @property
    def last_line(self) -> str:
        return [line for line in self.out.splitlines() if line.strip()][-1]


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("EWS_TEST_MARK") == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _cmd(p: psutil.Process) -> str:
    """A process's command line, or "" once it has exited (a zombie has none)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _reap(marker: str) -> list[psutil.Process]:
    """What carries the marker, killed so that a failing test leaves nothing running; the list."""
    found = _marked(marker)
    for p in found:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return found


def _start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, int, str]:
    port, marker = free_port(), uuid.uuid4().hex
    proc = subprocess.Popen(
        [*EWS, "serve", "--port", str(port), *args],
        env={**env, "EWS_TEST_MARK": marker, "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, port, marker


def serve(env: dict[str, str], *args: str, timeout: float = 120) -> Outcome:
    proc, port, marker = _start(env, *args)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        left = _reap(marker)
        raise AssertionError(f"ews serve did not exit within {timeout} s; left running: {left}") from None
    return Outcome(proc.returncode, out, port, marker)


def assert_refused(o: Outcome, *needles: str) -> None:
    """Exit 1, the reason as the one error line, no traceback, nothing listening or left running."""
    assert o.rc == 1, o.out
    assert "Traceback" not in o.out, o.out
    errors = [line for line in o.out.splitlines() if line.startswith("error:")]
    assert errors == [o.last_line], o.out
    for needle in needles:
        assert needle in o.last_line, o.out
    free, left = port_is_free(o.port), _reap(o.marker)
    assert free and left == [], (free, left)


# ------------------------------------------------------------------------------------- copies of faults


@pytest.fixture(scope="module")
def base_env(small_champion_store) -> dict[str, str]:
    """The small store's environment, with an officer's key in its users file (as a served store has)."""
    env = serve_env(small_champion_store)
    add_user(env, "pytest-officer", "officer")
    return env


@pytest.fixture
def store_copy(small_champion_store, tmp_path):
    return _store_copy(small_champion_store, tmp_path / "store")


def _store_copy(champion_store, dst: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the champion store (database and artifacts) whose paths point into the copy: an env."""
    root = champion_store[0]
    shutil.copytree(root / "models", dst / "models")
    shutil.copy(root / "mlflow.db", dst / "mlflow.db")
    con = sqlite3.connect(dst / "mlflow.db")
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for _, col, kind, *_ in con.execute(f"PRAGMA table_info({table})").fetchall():
            if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                con.execute(f"UPDATE {table} SET {col} = replace({col}, ?, ?)", (str(root), str(dst)))
    con.commit()
    con.close()
    env = {**serve_env(champion_store), "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}"}
    env["EWS_MODELS_DIR"] = str(dst / "models")
    return dst, env


def _bundle(store: Path) -> Path:
    (found,) = list((store / "models" / "mlartifacts").rglob("bundle.json"))
    return found.parent


# ------------------------------------------------------------------------------------------ the table


def _missing_artifacts(store: Path) -> None:
    shutil.rmtree(store / "models" / "mlartifacts")


def _truncated_booster(store: Path) -> None:
    booster = _bundle(store) / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 3])


def _altered_booster(store: Path) -> None:
    booster = _bundle(store) / "booster.txt"
    booster.write_text(booster.read_text().replace("leaf_value=", "leaf_value=9", 1))


def _unknown_schema_version(store: Path) -> None:
    meta_path = _bundle(store) / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = "9.9"
    meta_path.write_text(json.dumps(meta))


MODEL_FAULTS = {  # name: (args to ews serve, a fault made in a copy of the store or None, the reason)
    "no such model": (["--model", "no-such-model"], None, "no registered model named 'no-such-model'"),
    "no such alias": (
        ["--model", "loan-ews-pd-12m@nosuchalias"],
        None,
        "model 'loan-ews-pd-12m' has no alias @nosuchalias",
    ),
    "no such version": (
        ["--model", "loan-ews-pd-12m:99"],
        None,
        "model 'loan-ews-pd-12m' has no version 99",
    ),
    "missing artifacts": ([], _missing_artifacts, "model loan-ews-pd-12m@champion cannot be loaded"),
    "truncated booster": ([], _truncated_booster, "booster.txt does not match its checksum"),
    "altered booster": ([], _altered_booster, "booster.txt does not match its checksum"),
    "unknown bundle schema version": (
        [],
        _unknown_schema_version,
        "schema version '9.9' is not one this code knows",
    ),
}


def _faulty_env(name: str, base_env: dict[str, str], store, tmp_path: Path) -> dict[str, str]:
    """The environment of `ews serve` for fault `name` of MODEL_FAULTS (a faulty store copy if it has one)."""
    fault = MODEL_FAULTS[name][1]
    if fault is None:
        return base_env
    copy, env = _store_copy(store, tmp_path / name.replace(" ", "-"))
    fault(copy)
    return env


@pytest.mark.parametrize("name", list(MODEL_FAULTS))
def test_the_model_check_names_each_fault(name, base_env, small_champion_store, tmp_path) -> None:
    """The check `ews serve` runs before it starts anything (`serving.preflight.check_model`), in this
    process: each fault is refused with its reason (the command's own wiring: the test below)."""
    from model.ref import parse_ref
    from serving.preflight import StartupError, check_model

    args, _, reason = MODEL_FAULTS[name]
    env = _faulty_env(name, base_env, small_champion_store, tmp_path)
    ref = parse_ref(args[1] if args else env.get("EWS_MODEL_NAME", "loan-ews-pd-12m"))
    with pytest.raises(StartupError) as e:
        check_model(env["MLFLOW_TRACKING_URI"], ref.name, ref.ref)
    assert reason in str(e.value)


@pytest.mark.parametrize("name", ["no such version", "altered booster"])
def test_a_model_that_cannot_be_named_or_loaded_is_refused(
    name, base_env, small_champion_store, tmp_path
) -> None:
    """`ews serve` end to end with a model it cannot name and one it cannot load: one line, exit 1,
    nothing left running."""
    args, _, reason = MODEL_FAULTS[name]
    assert_refused(
        serve(_faulty_env(name, base_env, small_champion_store, tmp_path), *args),
        "cannot start the service",
        reason,
    )


def test_store_path_is_a_folder(base_env, tmp_path) -> None:
    env = {**base_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}"}
    assert_refused(serve(env), "is a folder, not a SQLite file")


def test_no_store_at_all(base_env, tmp_path) -> None:
    env = {**base_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"}
    assert_refused(serve(env), "no MLflow store at")
    assert not (tmp_path / "none.db").exists()  # not created as a side effect


def test_corrupt_store(base_env, store_copy) -> None:
    store, env = store_copy
    db = store / "mlflow.db"
    data = bytearray(db.read_bytes())
    data[:100] = os.urandom(100)  # the SQLite header
    db.write_bytes(bytes(data))
    assert_refused(serve(env), "is not a readable SQLite database")


def test_truncated_store(base_env, store_copy) -> None:
    store, env = store_copy
    db = store / "mlflow.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    assert_refused(serve(env), "the MLflow store", str(db))


def test_book_missing(base_env, tmp_path) -> None:
    assert_refused(serve(base_env, "--book", str(tmp_path / "nope")), "book folder", "does not exist")


def test_book_empty(base_env, tmp_path) -> None:
    assert_refused(serve(base_env, "--book", str(tmp_path)), "cannot be served")


def test_book_unusable_as_a_whole(base_env, small_book_dir, tmp_path) -> None:
    book = tmp_path / "book"
    shutil.copytree(small_book_dir, book)
    (book / "loans.parquet").write_bytes(b"PAR1 not really parquet")
    assert_refused(serve(base_env, "--book", str(book)), "cannot be served")


def test_port_in_use(base_env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            [*EWS, "serve", "--port", str(port)], env=base_env, capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip().splitlines()[-1]
        == f"error: cannot start the service: port {port} on 127.0.0.1 is in use"
    )


# --------------------------------------------------------------------------- never half up, signals


def test_workers_not_ready_in_time_stop_everything(base_env) -> None:
    """A server whose workers are not ready within EWS_STARTUP_TIMEOUT is stopped whole: exit 1."""
    o = serve({**base_env, "EWS_STARTUP_TIMEOUT": "1"})
    assert o.rc == 1 and "Traceback" not in o.out, o.out
    assert "the service did not become ready within 1 s" in o.last_line, o.out
    free, left = port_is_free(o.port), _reap(o.marker)
    assert free and left == [], (free, left)


def _wait(cond, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_sigint_while_starting_stops_everything(base_env) -> None:
    proc, port, marker = _start(base_env)
    try:  # wait for BentoML's workers to exist, then interrupt as Ctrl-C would
        assert _wait(lambda: any("worker.service" in _cmd(p) for p in _marked(marker)), 60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        free = port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = _reap(marker)
    assert proc.returncode == 0, out
    assert free and left == [], (free, left)


def test_sigterm_of_ews_serve_stops_the_server_and_its_workers(base_env) -> None:
    from tests.serving.conftest import wait_ready

    proc, port, marker = _start(base_env)
    try:
        assert wait_ready(proc, f"http://127.0.0.1:{port}"), "server did not start"
        workers = [p for p in _marked(marker) if "worker.service" in _cmd(p)]
        homes = {p.environ()["BENTOML_HOME"] for p in workers}
        assert workers and len(homes) == 1
        home = Path(homes.pop())
        assert home.is_dir() and home.name.startswith("ews-serve-")
        # BentoML's own temp folders (which its killed workers never remove) are made inside that home
        assert {p.environ()["TMPDIR"] for p in workers} == {str(home / "tmp")}
        assert list((home / "tmp").glob("bentoml-*")), list(home.rglob("*"))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        free = port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = _reap(marker)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert free and left == [], (free, left)
    assert not home.exists()  # its BENTOML_HOME (prometheus folder) is removed


def test_sigterm_during_the_startup_checks_stops_them_and_exits_0(base_env) -> None:
    """A stop in the first seconds, while the checks run, exited 143 and left the checks' process
    running (it then died on a broken pipe with a traceback)."""
    proc, port, marker = _start(base_env)
    try:
        checking = lambda: any("serving.preflight" in _cmd(p).split() for p in _marked(marker))  # noqa: E731
        assert _wait(checking, 60), "the start-up checks never ran"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        time.sleep(0.5)
        left = _reap(marker)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "stopped during the start-up checks" in out and left == [], (out, left)


def test_a_killed_bentoml_supervisor_has_its_workers_stopped_at_once(base_env) -> None:
    """SIGKILL of BentoML's own supervisor left its workers answering for the 20 s grace and `ews serve`
    exited 247; now the workers get SIGTERM as soon as the supervisor is seen gone, and the exit is 1."""
    proc, port, marker = _start(base_env)
    try:
        said, deadline = "", time.monotonic() + 120
        while "ready on" not in said and time.monotonic() < deadline:  # ews serve itself saw it ready
            line = proc.stdout.readline()
            if not line:
                break
            said += line
        assert "ready on" in said, said
        (bento,) = [p for p in _marked(marker) if _cmd(p).split()[1:4] == ["-m", "bentoml", "serve"]]
        killed = time.monotonic()
        bento.kill()
        out, _ = proc.communicate(timeout=60)
        out = said + out
        took = time.monotonic() - killed
        free = port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = _reap(marker)
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "the server exited with code -9; stopped its workers" in out, out
    assert free and left == [] and took < 15, (free, left, took)
