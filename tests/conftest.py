"""Shared, seeded fixtures: generated books are built once per session and written to temp folders, and
the default spec is trained once on the demo book and registered in a temp MLflow store; every test that
needs a model uses that one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from features.book import write_book
from features.generate import Generated, generate_book, profile

DEMO_LOANS, DEMO_MONTHS, DEMO_SEED = 20_000, 48, 7


SLOW_FIXTURES = frozenset(
    {"demo_trained", "champion_store", "small_champion_store", "server", "champion_scorer"}
)


def pytest_itemcollected(item) -> None:
    """Tests that train a model, start a server or run a command end to end are `slow`; the fast loop
    (`make test-fast`) deselects them. Every test of the demo book is in one xdist group: `make test` runs
    on both cores (pytest-xdist, `--dist loadgroup`), and the group keeps the demo book, its model, the
    champion store and the server to one worker, built once, while the other worker takes the rest.
    Marked as each test is collected: pytest-xdist reads the groups in its own collection hook."""
    names = set(getattr(item, "fixturenames", ()))
    if SLOW_FIXTURES & names:
        item.add_marker(pytest.mark.slow)
    if "demo_generated" in names:
        item.add_marker(pytest.mark.xdist_group("demo"))


_EMPTY_STORE: list[Path] = []  # one empty MLflow store per session, migrated once


def new_mlflow_store(root: Path) -> str:
    """An empty MLflow SQLite store at root/mlflow.db, its URI. Copied from one store migrated once per
    session: MLflow runs its ~60 schema migrations (about 2 s) on every fresh database."""
    import shutil
    import tempfile

    from mlflow import MlflowClient

    if not _EMPTY_STORE:
        import atexit

        folder = tempfile.mkdtemp(prefix="ews-empty-store-")
        atexit.register(shutil.rmtree, folder, True)  # gone with the test session
        db = Path(folder) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates and migrates it
        _EMPTY_STORE.append(db)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(_EMPTY_STORE[0], root / "mlflow.db")
    return f"sqlite:///{root / 'mlflow.db'}"


@contextlib.contextmanager
def in_store(root: Path, uri: str):
    """The environment and MLflow tracking URI of commands run on the store at `root` (as a user, pytest),
    put back after."""
    import mlflow

    prev = mlflow.get_tracking_uri()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("EWS_MODELS_DIR", str(root / "models"))
    mp.setenv("EWS_USER", "pytest")
    try:
        mlflow.set_tracking_uri(uri)
        yield
    finally:
        mp.undo()
        mlflow.set_tracking_uri(prev)


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """The CLI sets MLflow's global tracking URI (ews.cli._tracking); every test gets the one it found."""
    import mlflow

    prev = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(prev)


@pytest.fixture(scope="session")
def demo_generated() -> Generated:
    """The demo book `make demo` generates (20,000 loans, 48 months, seed 7), with its oracle and, as `make
    demo` writes it, the point-in-time oracle for the default spec's test window, in memory. The suite had
    used half its loans to save time, but that book's model sat at ECE 0.0097 against the 0.01 promotion
    gate, so any change to fitting could flip every test that needs a champion on one gate, and the suite
    did not test the book `make demo` promotes."""
    from model.spec import load_spec, test_months_of_book

    spec = load_spec("models/pd_90d_12m.yaml")
    pit = test_months_of_book(spec, profile("clean").end_month, DEMO_MONTHS)
    return generate_book(DEMO_LOANS, DEMO_MONTHS, DEMO_SEED, pit_months=pit)


@pytest.fixture(scope="session")
def small_generated() -> Generated:
    return generate_book(1500, 30, 11)


@pytest.fixture(scope="session")
def small_book_dir(small_generated: Generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "small"
    write_book(small_generated.book, folder, extras={"oracle": small_generated.oracle})
    return folder


@pytest.fixture(scope="session")
def card_generated() -> Generated:
    """A short card book as a bank reports it: one vintage, whole-cycle DPD, re-defaults, gaps."""
    return generate_book(6000, 10, 21, profile("card"))


@pytest.fixture(scope="session")
def card_book_dir(card_generated: Generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "card"
    write_book(card_generated.book, folder, extras={"oracle": card_generated.oracle})
    return folder


@pytest.fixture(scope="session")
def demo_book_dir(demo_generated, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("books") / "demo"
    write_book(demo_generated.book, folder, extras={"oracle": demo_generated.oracle})
    return folder


@pytest.fixture(scope="session")
def demo_context(demo_generated):
    from features.context import context_table

    b = demo_generated.book
    return context_table(b.performance, b.loans, b.borrowers)


@pytest.fixture(scope="session")
def demo_trained(demo_generated, demo_context):
    """The default spec trained once on the demo book's panel in memory: (spec, panel, TrainResult)."""
    from features.months import month_range
    from model.spec import load_spec, resolve_windows
    from training.fit import train_model
    from training.panel import build_panel

    book = demo_generated.book
    spec = load_spec("models/pd_90d_12m.yaml")
    w = resolve_windows(spec, book.performance["month"].min(), book.last_month)
    months = month_range(w["train"][0], w["test"][1])
    panel = build_panel(book, months, spec.label.rule, 12, demo_generated.oracle, demo_context)
    return spec, panel, train_model(spec, panel, w)


@pytest.fixture(scope="session")
def demo_panel_sample(demo_trained):
    """The demo panel's rows of a seeded quarter of its loans: for tests that need some model trained and
    evaluated on the demo book's shape (reproducibility, a stump, tuning, challengers), not its full size;
    a quarter of the rows cuts each such training and evaluation about fourfold."""
    import numpy as np

    _, panel, _ = demo_trained
    ids = np.sort(panel["loan_id"].unique())
    keep = np.random.default_rng(0).choice(ids, size=len(ids) // 4, replace=False)
    return panel[panel["loan_id"].isin(keep)].reset_index(drop=True)


@pytest.fixture(scope="session")
def champion_store(demo_trained, demo_book_dir, tmp_path_factory):
    """A real MLflow SQLite store in a temp dir holding the session's model as version 1 of the default
    spec (logged by the function `ews train` uses), made champion by a real `ews promote`.
    Yields (root, tracking_uri, promote_output)."""
    from typer.testing import CliRunner

    from ews.cli import app
    from training.tracking import log_training

    spec, panel, result = demo_trained
    root = tmp_path_factory.mktemp("mlflow")
    uri = new_mlflow_store(root)
    with in_store(root, uri):
        log_training(
            result,
            spec,
            Path("models/pd_90d_12m.yaml"),
            demo_book_dir,
            len(panel),
            root / "models" / "mlartifacts",
        )
        promote = CliRunner().invoke(
            app, ["promote", "--model", "loan-ews-pd-12m", "--book", str(demo_book_dir)]
        )
    yield root, uri, promote
