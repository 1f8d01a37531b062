"""`ews train` end to end against a real MLflow SQLite store in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ews.cli import app
from model.pyfunc import bundle_from_model_uri
from training.panel import build_panel, month_range

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_store(champion_store):
    root, _, train, _ = champion_store
    return root, train


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
        "validation/model_card.md",
    } <= names
    plots = {a.path: a.file_size for a in client.list_artifacts(mv.run_id, "plots")}
    for p in ("roc_ks", "reliability_by_grade", "shap_summary", "score_distribution"):
        assert plots.get(f"plots/{p}.png", 0) > 10_000, plots
    assert "test_lead_median_months" in run.data.metrics
    card = Path(client.download_artifacts(mv.run_id, "validation/model_card.md")).read_text()
    for section in (
        "## Purpose",
        "## Data",
        "## Label and exclusions",
        "## Calibration",
        "## Stability",
        "## Monotonicity",
        "## Limitations",
        "model / oracle",
        run.data.params["book_sha256"],
    ):
        assert section in card, section


def test_demo_promotes_the_first_model_and_report_prints_the_checks(champion_store) -> None:
    root, uri, _, promote = champion_store
    assert promote.exit_code == 0, promote.output
    assert "PROMOTED" in promote.output
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("EWS_MODELS_DIR", str(root / "models"))
    try:
        rep = runner.invoke(app, ["report", "loan-ews-pd-12m"])
        hist = runner.invoke(app, ["registry", "history", "loan-ews-pd-12m"])
        again = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m", "--version", "7"])
    finally:
        mp.undo()
    assert rep.exit_code == 0, rep.output
    assert "version 1 (champion)" in rep.output and "FAIL" not in rep.output
    assert rep.output.count("PASS") == 4
    assert "PROMOTED" in hist.output and "pytest" in hist.output
    assert again.exit_code == 1 and "has no version 7" in again.output


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
