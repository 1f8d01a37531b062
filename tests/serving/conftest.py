"""A real `ews serve` (BentoML) on a free loopback port, scoring with the champion of a temp MLflow store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import mlflow
import pytest

from serving.loans import BookIndex
from serving.model_loader import load_model
from serving.scorer import RiskScorer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(champion_store) -> dict[str, str]:
    root, uri, promote = champion_store
    assert promote.exit_code == 0, promote.output
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "EWS_MODELS_DIR": str(root / "models")}


@pytest.fixture(scope="session")
def server(champion_store, demo_book_dir):
    port = free_port()
    log = open(demo_book_dir.parent / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ews.cli", "serve", "--port", str(port), "--book", str(demo_book_dir)],
        env=serve_env(champion_store),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    ready = False
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                ready = True
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    if not ready:
        os.killpg(proc.pid, signal.SIGTERM)
        raise RuntimeError(
            "server did not become ready:\n" + (demo_book_dir.parent / "serve.log").read_text()
        )
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


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
