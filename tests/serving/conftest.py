"""A real `ews serve` (BentoML) on a free loopback port, scoring with the champion of a temp MLflow store,
with API keys made by the real `ews user add`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest

from serving.loans import BookIndex
from serving.model_loader import load_model
from serving.scorer import RiskScorer

EWS = [sys.executable, "-m", "ews.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve_env(champion_store) -> dict[str, str]:
    """The environment of an `ews serve` (or any command) on a store: (root, tracking URI, the promotion's
    CLI result, or None where the champion alias was set directly)."""
    root, uri, promote = champion_store
    assert promote is None or promote.exit_code == 0, promote.output
    # a data folder of its own: `ews serve` with no --book serves the demo book when data/ in the
    # working folder has one (a `make demo` run), and a test must not depend on that
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "EWS_MODELS_DIR": str(root / "models"),
        "EWS_DATA_DIR": str(root / "data"),
    }


def add_user(env: dict[str, str], name: str, role: str) -> str:
    """`ews user add NAME --role ROLE` against the store of `env`; the key it prints."""
    res = subprocess.run([*EWS, "user", "add", name, "--role", role], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def api_keys(champion_store) -> dict[str, str]:
    """One key per role, made with the real command line in the temp store's users file."""
    env = serve_env(champion_store)
    return {role: add_user(env, f"pytest-{role}", role) for role in ("officer", "admin")}


@dataclass
class Served:
    """The running server: its address, clients per role, its process and files."""

    url: str
    officer: httpx.Client
    admin: httpx.Client
    anonymous: httpx.Client
    proc: subprocess.Popen
    log: Path
    audit_log: Path


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> bool:
    """Whether the server `proc` started answers /readyz within `timeout`, by the supervisor's own rule
    (False too when it exits first or its workers keep failing)."""
    from serving.supervisor import wait_ready as ready

    return ready(proc, url, timeout, []) is None


@pytest.fixture(scope="session")
def served(champion_store, demo_book_dir, api_keys):
    port = free_port()
    log_path = demo_book_dir.parent / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*EWS, "serve", "--port", str(port), "--book", str(demo_book_dir)],
        # the tests send many keyless and wrong-key requests from one address; the limit on those is
        # tested in process (tests/serving/test_guard.py)
        env={**serve_env(champion_store), "EWS_MAX_FAILED_KEYS": "100000"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_ready(proc, url):
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        raise RuntimeError("server did not become ready:\n" + log_path.read_text())

    def client(key: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=url, timeout=30, headers=headers)

    root = champion_store[0]
    with client(api_keys["officer"]) as off, client(api_keys["admin"]) as adm, client(None) as anon:
        yield Served(url, off, adm, anon, proc, log_path, root / "models" / "audit.jsonl")
    proc.send_signal(signal.SIGTERM)  # ews serve stops the supervisor and its workers
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="session")
def server(served) -> httpx.Client:
    """An HTTP client of the running server holding an officer's key."""
    return served.officer


@pytest.fixture(scope="session")
def champion_scorer(champion_store) -> RiskScorer:
    _, uri, _ = champion_store
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return RiskScorer(load_model("loan-ews-pd-12m", "champion"))
    finally:
        mlflow.set_tracking_uri(prev)


@pytest.fixture(scope="session")
def book_index(demo_book_dir) -> BookIndex:
    return BookIndex.load(demo_book_dir)


@pytest.fixture(scope="session")
def small_champion_store(small_generated, small_book_dir, tmp_path_factory):
    """A real MLflow store whose champion is the default spec trained on the small book (1,500 loans,
    about a second to train), for tests of `ews serve` that need a champion to load but not the demo
    model: they then run beside the demo book's tests on the other pytest-xdist worker. The small
    book's model fails the promotion floors (AUC, ECE), so its champion alias is set directly, as an
    administrator could; promotion's own tests use the demo store. Yields (root, tracking_uri, None)."""
    from mlflow import MlflowClient

    from features.context import context_table
    from features.months import month_range
    from model.spec import load_spec, resolve_windows
    from tests.conftest import in_store, new_mlflow_store
    from training.fit import train_model
    from training.panel import build_panel
    from training.tracking import log_training

    book = small_generated.book
    spec_path = Path("models/pd_90d_12m.yaml")
    spec = load_spec(spec_path)
    w = resolve_windows(spec, book.performance["month"].min(), book.last_month)
    ctx = context_table(book.performance, book.loans, book.borrowers)
    months = month_range(w["train"][0], w["test"][1])
    panel = build_panel(book, months, spec.label.rule, spec.label.horizon_months, small_generated.oracle, ctx)
    result = train_model(spec, panel, w)
    root = tmp_path_factory.mktemp("mlflow-small")
    uri = new_mlflow_store(root)
    with in_store(root, uri):
        log_training(result, spec, spec_path, small_book_dir, len(panel), root / "models" / "mlartifacts")
        MlflowClient(uri).set_registered_model_alias(spec.name, "champion", "1")
    return root, uri, None
