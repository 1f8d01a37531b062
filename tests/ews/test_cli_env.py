"""What every command sets up before it runs: MLflow sends no usage telemetry unless the user asks."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from ews.cli import app

runner = CliRunner()


def test_mlflow_telemetry_is_off_unless_the_user_turned_it_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "unset")  # records the variable's state, to restore it
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    res = runner.invoke(app, ["book", "validate", str(tmp_path / "no-book")])
    assert res.exit_code == 1  # the command ran (and refused the missing book)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    runner.invoke(app, ["book", "validate", str(tmp_path / "no-book")])
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"  # an explicit choice stands
