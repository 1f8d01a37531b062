"""Finding and making experiments in a real MLflow store: a copied store whose experiment still keeps
its files in the original's folder is said, not silently written into."""

from __future__ import annotations

import logging
import shutil

import mlflow

from model.registry import ensure_experiment
from tests.conftest import new_mlflow_store


def test_an_experiment_whose_files_live_outside_this_stores_folder_is_said(tmp_path, caplog) -> None:
    prev = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(new_mlflow_store(tmp_path / "original"))
        made = ensure_experiment("loan-ews-batch", tmp_path / "original" / "mlartifacts")
        with caplog.at_level(logging.WARNING, logger="model.registry"):
            assert ensure_experiment("loan-ews-batch", tmp_path / "original" / "mlartifacts") == made
        assert not _said(caplog)  # its own store: nothing to say
        (tmp_path / "copy").mkdir()
        shutil.copyfile(tmp_path / "original" / "mlflow.db", tmp_path / "copy" / "mlflow.db")
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'copy' / 'mlflow.db'}")
        with caplog.at_level(logging.WARNING, logger="model.registry"):
            assert ensure_experiment("loan-ews-batch", tmp_path / "copy" / "mlartifacts") == made
    finally:
        mlflow.set_tracking_uri(prev)
    (said,) = _said(caplog)
    assert "outside this store's artifact folder" in said
    assert str(tmp_path / "original" / "mlartifacts") in said


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "model.registry"]
