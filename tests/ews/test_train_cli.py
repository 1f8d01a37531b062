"""The command line end to end against a real MLflow SQLite store in a temp dir: `ews train` logs a
complete run and registers it; a short card book and a messy mixed book validate with warnings only,
train, promote and score with the shipped specs and no hand edits; `ews report` applies the spec's gates."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ews.cli import app
from features.book import write_book
from features.generate import generate_book, profile
from features.months import month_range
from model.pyfunc import bundle_from_model_uri
from tests.conftest import new_mlflow_store
from training.panel import build_panel

runner = CliRunner()


def _env(mp: pytest.MonkeyPatch, root: Path) -> str:
    uri = f"sqlite:///{root / 'mlflow.db'}" if (root / "mlflow.db").exists() else new_mlflow_store(root)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("EWS_MODELS_DIR", str(root / "models"))
    mp.setenv("EWS_USER", "pytest")
    return uri


def test_train_logs_a_complete_run_and_registers_the_model(champion_store) -> None:
    root, uri, _ = champion_store
    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version("loan-ews-pd-12m", "1")
    run = client.get_run(mv.run_id)
    assert run.data.params["book_sha256"] and run.data.params["window_test"] == "2024-07..2024-12"
    assert run.data.tags["code_version"] and run.data.tags["lib.lightgbm"]
    for k in (
        "test_auc",
        "test_ks",
        "test_ece",
        "test_oe_low",
        "test_oracle_auc",
        "test_unseen_auc",  # the members blind to each loan (training.ensemble.unseen_raw)
        "challenger_auc",
        "monotonicity_pass",
    ):
        assert k in run.data.metrics, k
    # the master scale spreads the test window over most of its ten grades (a model that cannot rank
    # puts everyone in one or two), and the metric counts the grade table's populated rows
    grades = pd.read_csv(
        client.download_artifacts(mv.run_id, "validation/calibration_by_grade.csv", str(root))
    )
    assert run.data.metrics["test_grades_populated"] == (grades["count"] > 0).sum() >= 6
    names = {a.path for a in client.list_artifacts(mv.run_id, "validation")}
    assert {
        "validation/deciles.csv",
        "validation/calibration_by_grade.csv",
        "validation/psi.json",
        "validation/monotonicity.json",
        "validation/fairness.csv",
        "validation/model_card.md",
    } <= names
    plots = {a.path: a.file_size for a in client.list_artifacts(mv.run_id, "plots")}
    for p in ("roc_ks", "reliability_by_grade", "shap_summary", "score_distribution"):
        assert plots.get(f"plots/{p}.png", 0) > 10_000, plots
    card = Path(client.download_artifacts(mv.run_id, "validation/model_card.md")).read_text()
    for section in (
        "## Purpose",
        "## Data",
        "## Label and exclusions",
        "## Lists and capacity",
        "## Calibration",
        "Jeffreys",
        "## Stability",
        "## Monotonicity",
        "## Fairness",
        "age band",
        "## Signs of a degenerate model",
        "## Limitations",
        "model / oracle",
        "the cross-fitted member that never trained on each loan",
        run.data.params["book_sha256"],
    ):
        assert section in card, section
    grades = pd.read_csv(client.download_artifacts(mv.run_id, "validation/calibration_by_grade.csv"))
    assert list(grades["grade"]) == list(range(1, 11))
    assert "| 1 | " in card and "1.0000 |" not in card.split("Observed vs expected")[1][:400]


@pytest.mark.slow  # trains a model (uses no shared fixture the conftest marks by)
def test_train_command_on_a_small_book(small_book_dir, tmp_path) -> None:
    mp = pytest.MonkeyPatch()
    _env(mp, tmp_path)
    try:
        res = runner.invoke(app, ["train", "--spec", "models/pd_90d_12m.yaml", "--book", str(small_book_dir)])
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    assert "trained loan-ews-pd-12m version 1" in res.output and "model/oracle" in res.output
    assert "test AUC by the members blind to each loan 0." in res.output
    assert "windows: train 2023-07..2023-12" in res.output  # clipped to the book's first month


@pytest.mark.slow  # trains and promotes a model
def test_training_says_which_gates_the_new_version_fails(small_book_dir, tmp_path) -> None:
    """Training warned only of the degenerate signs: a version that `ews report` then failed on its AUC
    floor, or that a logistic scorecard beat, was registered without a word."""
    spec = tmp_path / "stump.yaml"
    text = Path("models/pd_90d_12m.yaml").read_text()
    for key, value in (("num_leaves: 4 ", "num_leaves: 2 "), ("n_estimators: 2000", "n_estimators: 2")):
        assert key in text
        text = text.replace(key, value, 1)
    spec.write_text(text.replace("name: loan-ews-pd-12m", "name: stump-12m", 1))
    mp = pytest.MonkeyPatch()
    _env(mp, tmp_path)
    try:
        res = runner.invoke(app, ["train", "--spec", str(spec), "--book", str(small_book_dir)])
        report = runner.invoke(app, ["report", "--model", "stump-12m:1"])
        runner.invoke(app, ["promote", "--model", "stump-12m:1", "--book", str(small_book_dir)])
        after = runner.invoke(app, ["report", "--model", "stump-12m:1"])
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output  # registered all the same: the gates decide at promotion
    said = [x.split(": ", 1)[1] for x in res.output.splitlines() if x.startswith("WARNING fails a gate")]
    failed = [x.split("FAIL", 1)[1].strip() for x in report.output.splitlines() if "FAIL" in x]
    assert said and set(said) <= set(failed), (res.output, report.output)
    warned = [x for x in res.output.splitlines() if x.startswith("WARNING")]
    for sign in ("boosting rounds", "distinct PDs"):  # said once: on the calibration window, not again
        assert sum(sign in x for x in warned) <= 1, warned
    assert sum("boosting rounds" in x for x in warned) == 1, warned
    assert "is below the scorecard challenger's" in res.output
    # the report says whether promotion decided on the version, and what: its own checks are not all
    assert "promotion: not yet decided" in report.output
    assert "promotion: refused: " in after.output, after.output


def test_demo_promotes_the_first_model_and_report_prints_the_checks(
    champion_store, demo_book_dir, small_book_dir
) -> None:
    root, uri, promote = champion_store
    assert promote.exit_code == 0, promote.output
    assert "PROMOTED" in promote.output
    rounds = next(x for x in promote.output.splitlines() if x.strip("│ ").startswith("iterations"))
    assert ".0000" not in rounds, rounds  # a count of rounds is a whole number
    mono = next(x for x in promote.output.splitlines() if x.strip("│ ").startswith("monotonicity"))
    assert "0.0000" not in mono, mono  # no declared direction fails: 0, a count
    mp = pytest.MonkeyPatch()
    _env(mp, root)
    try:
        rep = runner.invoke(app, ["report", "--model", "loan-ews-pd-12m"])
        hist = runner.invoke(app, ["registry", "history", "--model", "loan-ews-pd-12m"])
        again = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m:7", "--book", str(demo_book_dir)])
        no_book = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m:1", "--book", "/no/such/book"])
        bad = runner.invoke(app, ["report", "--model", "no such/name"])
        other = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m:1", "--book", str(small_book_dir)])
        same = runner.invoke(app, ["promote", "--model", "loan-ews-pd-12m:1", "--book", str(demo_book_dir)])
    finally:
        mp.undo()
    assert rep.exit_code == 0, rep.output
    assert "version 1 (champion)" in rep.output and "FAIL" not in rep.output
    assert "promotion: promoted" in rep.output
    assert "the AUC check is the floor for a first champion" in rep.output
    assert "boosting rounds" in rep.output and "distinct PDs" in rep.output and "no leak" in rep.output
    # the demo book carries the point-in-time oracle: the report sets the model's calibration beside it
    assert re.search(r"point-in-time oracle .*: O/E \d\.\d\d, \d+ grades failing", rep.output), rep.output
    assert "PROMOTED" in hist.output and "pytest" in hist.output
    assert again.exit_code == 1 and "has no version 7" in again.output
    assert no_book.exit_code == 1 and "does not exist" in no_book.output  # checked before anything loads
    assert bad.exit_code == 64 and "is not NAME, NAME@alias or NAME:version" in bad.output  # usage
    # promoting on another book than the version's own is said (a newer extract is the usual case)
    assert "version 1 was trained on another book" in other.output, other.output
    assert "already the champion" in other.output and other.exit_code == 1
    assert "another book" not in same.output and "already the champion" in same.output


def test_report_of_a_champion_that_is_not_there(champion_store) -> None:
    """NAME@champion names the champion: without one it is an error, never another version reported in its
    place; a bare NAME falls back to the newest version and says so. (The alias is put back after.)"""
    root, uri, _ = champion_store
    client = MlflowClient(tracking_uri=uri)
    name = "loan-ews-pd-12m"
    version = client.get_model_version_by_alias(name, "champion").version
    mp = pytest.MonkeyPatch()
    _env(mp, root)
    client.delete_registered_model_alias(name, "champion")
    try:
        explicit = runner.invoke(app, ["report", "--model", f"{name}@champion"])
        bare = runner.invoke(app, ["report", "--model", name])
    finally:
        client.set_registered_model_alias(name, "champion", version)
        mp.undo()
    assert explicit.exit_code == 1 and "has no alias @champion" in explicit.output, explicit.output
    assert "version" not in explicit.output.split("has no alias")[0]  # no report of another version
    assert "has no champion yet: its newest version" in bare.output, bare.output
    assert f"{name} version {version}" in bare.output


def test_registered_model_loads_back_into_an_identical_bundle(
    champion_store, demo_generated, demo_context
) -> None:
    _, uri, _ = champion_store
    import mlflow

    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        bundle = bundle_from_model_uri("models:/loan-ews-pd-12m/1")
        panel = build_panel(
            demo_generated.book,
            month_range("2024-07", "2024-09"),
            bundle.model_spec.label.rule,
            12,
            context=demo_context,
        )
        pd1 = bundle.pd_from_raw(bundle.raw_score(panel))
        pf = mlflow.pyfunc.load_model("models:/loan-ews-pd-12m/1")
    finally:
        mlflow.set_tracking_uri(prev)
    X = panel[bundle.features].copy()
    for c in bundle.categories:
        X[c] = X[c].astype(object).where(X[c].notna(), "missing")
    pd2 = pf.predict(X)["pd"].to_numpy()
    np.testing.assert_allclose(pd1, pd2, rtol=0, atol=0)
    # logged as code, not as a pickle (a pickled PythonModel is code run on load; MLflow warned of it)
    flavor = pf.metadata.flavors["python_function"]
    assert flavor.get("model_code_path") and "python_model" not in flavor, flavor


@pytest.mark.slow
@pytest.mark.parametrize(
    ("book", "spec", "as_of"),
    [("card", "models/card_30d_1m.yaml", None), ("mixed", "models/pd_90d_12m.yaml", "2025-12")],
)
def test_messy_books_validate_train_promote_and_score_without_hand_edits(
    book, spec, as_of, card_book_dir, small_book_dir, tmp_path
) -> None:
    if book == "card":
        folder = card_book_dir
    else:
        folder = write_book(generate_book(3000, 40, 31, profile("mixed")).book, tmp_path / "mixed")
    mp = pytest.MonkeyPatch()
    _env(mp, tmp_path)
    try:
        val = runner.invoke(app, ["book", "validate", str(folder)])
        train = runner.invoke(app, ["train", "--spec", spec, "--book", str(folder)])
        name = "loan-ews-card-1m" if book == "card" else "loan-ews-pd-12m"
        promote = runner.invoke(app, ["promote", "--model", name, "--book", str(folder)])
        month = as_of or f"{pd.read_parquet(folder / 'performance.parquet')['month'].max():%Y-%m}"
        score = runner.invoke(
            app,
            [
                "score-book",
                "--book",
                str(folder),
                "--as-of",
                month,
                "--model",
                f"{name}:1",
                "--out",
                str(tmp_path / "scores"),
            ],
        )
        # the card model on a book of installment loans: scored, and said
        other = runner.invoke(
            app,
            ["score-book", "--book", str(small_book_dir), "--as-of", "2025-12", "--model", f"{name}:1"]
            + ["--out", str(tmp_path / "other-scores")],
        )
        report = runner.invoke(app, ["report", "--model", f"{name}:1"])
        champion_report = runner.invoke(app, ["report", "--model", f"{name}@champion"])
        client = MlflowClient()
        run_id = client.get_model_version(name, "1").run_id
        card = Path(client.download_artifacts(run_id, "validation/model_card.md", str(tmp_path))).read_text()
    finally:
        mp.undo()
    # a list with no snapshot (in arrears, under a current-only card population) said 'nan%'
    assert "nan%" not in card, [x for x in card.splitlines() if "nan%" in x]
    # the card's actions and risks are those of its loans: no collateral for a card book
    purpose = card.split("## Data")[0]
    assert "cut or freeze the credit line" in purpose, purpose
    assert ("revalue collateral" in purpose) == (book == "mixed"), purpose
    assert ("house-price" in card) == (book == "mixed")
    if promote.exit_code == 0:
        assert "version 1 (champion" in champion_report.output, champion_report.output
    else:  # asked for the champion by name: there is none, and no other version stands in for it
        assert champion_report.exit_code == 1, champion_report.output
        assert "has no alias @champion" in champion_report.output, champion_report.output
    assert val.exit_code == 0 and "WARNING performance.days_past_due [dpd_jump]" in val.output, val.output
    assert train.exit_code == 0, train.output
    assert "WARNING degenerate" not in train.output
    if book == "card":  # the card spec's one-month test window is said as one month, not as 2025-11..2025-11
        assert re.search(r"\btest \d{4}-\d\d(?!\.\.)\b", train.output), train.output
    assert promote.exit_code in (0, 2), promote.output  # a decision either way, never a crash
    assert "REFUSED: refused" not in promote.output
    assert score.exit_code == 0, score.output
    assert "early warning:" in score.output and "in arrears:" in score.output
    assert report.exit_code in (0, 2) and "boosting rounds" in report.output, report.output
    summary = (tmp_path / "scores" / month / "summary.json").read_text()
    assert '"rejected": 0' in summary
    assert "unseen_" not in score.output  # the model's own kind of book
    # an officer sees a card's use of its limit where a secured loan shows its LTV, and neither is made up
    watch = pd.read_csv(tmp_path / "scores" / month / "watchlist.csv")
    cards = watch["product"] == "revolving"
    assert cards.any(), watch["product"].value_counts()
    assert watch.loc[cards, "utilisation"].notna().all() and watch.loc[cards, "current_ltv"].isna().all()
    assert watch.loc[~cards, "utilisation"].isna().all()
    if book == "card":  # every training account was a card: a book of other products is said to be one
        assert other.exit_code == 0, other.output
        said = [x for x in other.output.splitlines() if x.startswith("warning: unseen_product:")]
        assert said and "the model was trained on product revolving alone" in said[0], other.output


def test_a_spec_with_another_label_is_refused_under_a_models_name_before_training(
    champion_store, demo_book_dir, tmp_path
) -> None:
    """A 60+ DPD spec kept the 90+ DPD model's name: it trained and registered as its next version, and
    promotion then refused to compare the two, after a failed attempt had made it the challenger."""
    root, _, _ = champion_store
    spec = tmp_path / "pd_60.yaml"
    text = Path("models/pd_90d_12m.yaml").read_text()
    spec.write_text(text.replace("dpd_threshold: 90", "dpd_threshold: 60", 1))
    client = MlflowClient(tracking_uri=champion_store[1])
    before = len(client.search_model_versions("name = 'loan-ews-pd-12m'"))
    mp = pytest.MonkeyPatch()
    _env(mp, root)
    try:
        res = runner.invoke(app, ["train", "--spec", str(spec), "--book", str(demo_book_dir)])
    finally:
        mp.undo()
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "predicts another label (dpd_threshold 90; this spec: dpd_threshold 60)" in res.output, res.output
    assert "a `name` of its own" in res.output
    assert len(client.search_model_versions("name = 'loan-ews-pd-12m'")) == before  # nothing registered
