"""`ews train` end to end against a real MLflow SQLite store in a temp dir."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ews.cli import app
from features.book import write_book
from features.pyfunc import bundle_from_model_uri
from training.panel import build_panel, month_range

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_store(demo_generated, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    book = root / "book"
    write_book(demo_generated.book, book, extras={"oracle": demo_generated.oracle})
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("EWS_MODELS_DIR", str(root / "models"))
    res = runner.invoke(app, ["train", "--spec", "models/pd_90d_12m.yaml", "--book", str(book)])
    yield root, res
    mp.undo()


def test_train_logs_a_complete_run_and_registers_the_model(trained_store) -> None:
    root, res = trained_store
    assert res.exit_code == 0, res.output
    assert "model/oracle" in res.output and "all declared directions hold" in res.output
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    mv = client.get_model_version("loan-ews-pd-12m", "1")
    run = client.get_run(mv.run_id)
    assert run.data.params["book_sha256"] and run.data.params["window_test"] == "2024-07..2024-12"
    assert run.data.tags["code_version"] and run.data.tags["lib.lightgbm"]
    for k in (
        "test_auc",
        "test_ks",
        "test_ece",
        "test_oracle_auc",
        "challenger_auc",
        "psi_score",
        "monotonicity_pass",
    ):
        assert k in run.data.metrics, k
    names = {a.path for a in client.list_artifacts(mv.run_id, "validation")}
    assert {
        "validation/deciles.csv",
        "validation/calibration_by_grade.csv",
        "validation/psi.json",
        "validation/monotonicity.json",
    } <= names


def test_registered_model_loads_back_into_an_identical_bundle(trained_store, demo_generated) -> None:
    root, _ = trained_store
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    bundle = bundle_from_model_uri("models:/loan-ews-pd-12m/1")
    panel = build_panel(demo_generated.book, month_range("2024-07", "2024-09"))
    pd1 = bundle.pd_from_raw(bundle.raw_score(panel))
    pf = mlflow.pyfunc.load_model("models:/loan-ews-pd-12m/1")
    X = panel[bundle.features].copy()
    for c in bundle.categories:
        X[c] = X[c].astype(object).where(X[c].notna(), "missing")
    pd2 = pf.predict(X)["pd"].to_numpy()
    np.testing.assert_allclose(pd1, pd2, rtol=0, atol=0)
