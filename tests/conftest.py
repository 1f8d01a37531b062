"""Shared, seeded fixtures: generated books are built once per session and written to temp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.book import write_book
from features.generate import Generated, generate_book

DEMO_LOANS, DEMO_MONTHS, DEMO_SEED = 20_000, 48, 7


@pytest.fixture(scope="session")
def demo_generated() -> Generated:
    """The demo-size book (20,000 loans x 48 months, seed 7) with its oracle, in memory."""
    return generate_book(DEMO_LOANS, DEMO_MONTHS, DEMO_SEED)


@pytest.fixture(scope="session")
def small_generated() -> Generated:
    return generate_book(1500, 30, 11)


@pytest.fixture(scope="session")
def small_book_dir(small_generated: Generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "small"
    write_book(small_generated.book, folder, extras={"oracle": small_generated.oracle})
    return folder


@pytest.fixture(scope="session")
def demo_trained(demo_generated):
    """The default spec trained on the demo book's panel in memory: (spec, panel, TrainResult)."""
    from model.spec import load_spec, resolve_windows
    from training.fit import train_model
    from training.panel import build_panel, month_range

    book = demo_generated.book
    spec = load_spec("models/pd_90d_12m.yaml")
    w = resolve_windows(spec, book.last_month)
    panel = build_panel(book, month_range(w["train"][0], w["test"][1]), 12, 90, demo_generated.oracle)
    return spec, panel, train_model(spec, panel, book.last_month)


@pytest.fixture(scope="session")
def demo_book_dir(demo_generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "demo"
    write_book(demo_generated.book, folder, extras={"oracle": demo_generated.oracle})
    return folder


@pytest.fixture(scope="session")
def champion_store(demo_book_dir, tmp_path_factory):
    """A real MLflow SQLite store in a temp dir where `ews train` registered version 1 of the default
    spec and `ews promote` made it champion. Yields (root, tracking_uri, train_output, promote_output)."""
    from typer.testing import CliRunner

    from ews.cli import app

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("EWS_MODELS_DIR", str(root / "models"))
    mp.setenv("EWS_USER", "pytest")
    runner = CliRunner()
    train = runner.invoke(app, ["train", "--spec", "models/pd_90d_12m.yaml", "--book", str(demo_book_dir)])
    promote = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m", "--book", str(demo_book_dir)])
    mp.undo()
    yield root, uri, train, promote
