"""Load the model bundle a server or batch run should use: by alias (champion) or version, from MLflow."""

from __future__ import annotations

import logging

import mlflow
from mlflow import MlflowClient

from model.bundle import ModelBundle
from model.registry import ModelRef, load_bundle, require

log = logging.getLogger(__name__)


def load_model(name: str, ref: str = "champion") -> ModelBundle:
    """The bundle of `name` at `ref` (an alias or a version number) with its name and version set;
    ValueError with a clear message if the registry has no such model, or the bundle's schema version is
    unknown to this code."""
    try:
        version = require(MlflowClient(), ModelRef.of(name, ref))
    except ValueError as e:  # says what the registry has, or that it cannot be read; add where it is
        raise ValueError(f"{e} (MLflow registry at {mlflow.get_tracking_uri()})") from e
    return load_bundle(name, version)
