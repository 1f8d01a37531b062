"""The registry's own commands against a real MLflow SQLite store: listing versions, and rolling the
champion back to a version promoted before, with the audit record a validator reads."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ews.cli import app
from model.registry import CHALLENGER, CHAMPION, ModelRef, resolve
from tests.conftest import new_mlflow_store
from training.promote import Decision
from training.registry import history, log_decision, rollback, versions

NAME = "loan-ews-pd-12m"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Three versions of NAME, each from a training run that logged what `ews train` logs about the label,
    the book and the test AUC; the audit log holds v1's and then v2's promotion (champion: v2)."""
    uri = new_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("EWS_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("EWS_USER", "dora")
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.create_experiment(NAME, artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model(NAME)
    for i, auc in enumerate((0.89, 0.90, 0.85), start=1):
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_params(
                {
                    "dpd_threshold": 90,
                    "horizon_months": 12,
                    "book_sha256": f"{i}" * 64,
                    "window_test": "2024-07..2024-12",
                }
            )
            mlflow.log_metric("test_auc", auc)
        client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run.info.run_id)
    art = tmp_path / "art"
    for before, after in ((None, "1"), ("1", "2")):
        log_decision(
            Decision(
                NAME,
                after,
                before,
                after,
                True,
                "passes",
                ("2024-07", "2024-12"),
                [],
                {"auc": 0.9},
                who="alice",
            ),
            art,
        )
        client.set_registered_model_alias(NAME, CHAMPION, after)
    yield client, art
    mlflow.set_tracking_uri(prev)


def test_rollback_moves_the_champion_back_with_an_audit_record(registry) -> None:
    client, art = registry
    d = rollback(
        client,
        NAME,
        "1",
        who="dora",
        why="v2 flags twice its capacity since the 2025-11 run",
        artifact_root=art,
    )
    assert d.champion_before == "2" and d.champion_after == "1" and d.kind == "rollback"
    assert resolve(client, ModelRef(NAME, alias=CHAMPION)) == "1"
    last = history(client, NAME)[-1]
    assert last["decision"] == "rollback" and last["who"] == "dora"
    assert last["champion_before"] == "2" and last["champion_after"] == "1"
    assert "twice its capacity" in last["reason"]
    assert client.get_model_version(NAME, "1").tags["loan_ews.promotion"].startswith("rollback")
    assert last["challenger_auc"] is None  # nothing is measured at a rollback
    # and back again: v2 was champion too, so it can be rolled back to; a challenger on it goes (the batch
    # would shadow-score the champion against itself)
    client.set_registered_model_alias(NAME, CHALLENGER, "2")
    rollback(
        client, NAME, "2", who="dora", why="the capacity issue was the batch's, not v2's", artifact_root=art
    )
    assert resolve(client, ModelRef(NAME, alias=CHAMPION)) == "2"
    assert resolve(client, ModelRef(NAME, alias=CHALLENGER)) is None


def test_rollback_refuses_a_version_never_promoted_the_champion_and_no_reason(registry) -> None:
    client, art = registry
    with pytest.raises(ValueError, match=r"was never champion \(champions so far: 1, 2\).*ews promote"):
        rollback(client, NAME, "3", who="dora", why="it looks better", artifact_root=art)
    with pytest.raises(ValueError, match="already the champion"):
        rollback(client, NAME, "2", who="dora", why="x", artifact_root=art)
    with pytest.raises(ValueError, match="needs a reason"):
        rollback(client, NAME, "1", who="dora", why="  ", artifact_root=art)
    assert resolve(client, ModelRef(NAME, alias=CHAMPION)) == "2"  # nothing moved
    assert len(history(client, NAME)) == 2  # nothing logged


def test_a_rollback_whose_audit_record_cannot_be_written_moves_nothing(registry, monkeypatch) -> None:
    import training.registry

    client, art = registry
    client.set_registered_model_alias(NAME, CHALLENGER, "1")

    def audit_store_down(decision, artifact_root=None):
        raise OSError("the audit store is unreachable")

    monkeypatch.setattr(training.registry, "log_decision", audit_store_down)
    with pytest.raises(OSError, match="audit store"):
        rollback(client, NAME, "1", who="dora", why="v2 misbehaves", artifact_root=art)
    assert resolve(client, ModelRef(NAME, alias=CHAMPION)) == "2"  # the champion is where the log says
    assert resolve(client, ModelRef(NAME, alias=CHALLENGER)) == "1"
    assert "loan_ews.promotion" not in (client.get_model_version(NAME, "1").tags or {})
    assert len(history(client, NAME)) == 2


def test_versions_list_every_version_newest_first_with_what_it_predicts(registry) -> None:
    client, _ = registry
    rows = versions(client, NAME)
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    assert rows[1]["aliases"] == [CHAMPION] and rows[0]["aliases"] == []
    assert {r["label"] for r in rows} == {"90+ DPD in 12 months"}
    assert [r["test_auc"] for r in rows] == pytest.approx([0.85, 0.90, 0.89])
    assert rows[2]["book_sha256"] == "1" * 64
    assert versions(client) == rows  # every model: here the one


def test_registry_commands(registry) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list"])
    assert listed.exit_code == 0, listed.output
    assert "champion" in listed.output and "90+ DPD in 12" in listed.output and "0.8500" in listed.output
    never = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}:3", "--reason", "x"])
    assert never.exit_code == 2 and "was never champion" in never.output  # refused
    alias = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}@champion", "--reason", "x"])
    assert alias.exit_code == 64 and "NAME:version" in alias.output  # a wrong command line
    no_reason = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}:1"])
    assert no_reason.exit_code == 64 and "--reason" in no_reason.output
    blank = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}:1", "--reason", " "])
    assert blank.exit_code == 64 and "--reason is empty" in blank.output
    missing = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}:9", "--reason", "x"])
    assert missing.exit_code == 1 and "has no version 9" in missing.output  # as promote says it
    done = runner.invoke(app, ["registry", "rollback", "--model", f"{NAME}:1", "--reason", "v2 misbehaves"])
    assert done.exit_code == 0, done.output
    assert f"ROLLED BACK: {NAME} champion v2 -> v1" in done.output
    hist = runner.invoke(app, ["registry", "history", "--model", NAME])
    assert "ROLLBACK" in hist.output and "dora" in hist.output and "3 decisions" in hist.output
    assert "champion none -> v1" in hist.output  # the first promotion: there was no champion
    assert "window -" in hist.output and "window .." not in hist.output  # a rollback measures nothing
    nosuch = runner.invoke(app, ["registry", "history", "--model", "nosuch"])
    assert nosuch.exit_code == 1 and "no registered model named 'nosuch'" in nosuch.output
    listed_nosuch = runner.invoke(app, ["registry", "list", "--model", "nosuch"])  # it exited 0
    assert listed_nosuch.exit_code == 1 and "no registered model named 'nosuch'" in listed_nosuch.output
    report = runner.invoke(app, ["report", "--model", "nosuch"])
    assert report.exit_code == 1 and "champion" not in report.output  # no 'no champion yet' first


def test_an_audit_record_that_fails_half_written_is_no_decision(registry, monkeypatch) -> None:
    """MLflow keeps a run whose block raised (status FAILED) with the tags already set: the log said
    'rollback to v1' while the champion, put back, was still v2."""
    client, art = registry

    def artifact_store_down(*args, **kwargs):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(mlflow, "log_dict", artifact_store_down)  # tags and metrics are written first
    with pytest.raises(OSError, match="artifact store"):
        rollback(client, NAME, "1", who="dora", why="v2 misbehaves", artifact_root=art)
    assert resolve(client, ModelRef(NAME, alias=CHAMPION)) == "2"
    assert [r["decision"] for r in history(client, NAME)] == ["promoted", "promoted"]
    monkeypatch.undo()
    rollback(client, NAME, "1", who="dora", why="v2 misbehaves", artifact_root=art)  # a retry: one record
    assert [r["decision"] for r in history(client, NAME)] == ["promoted", "promoted", "rollback"]
