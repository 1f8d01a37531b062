"""Load the model bundle a server or batch run should use: by alias (champion) or version, from MLflow."""

from __future__ import annotations

import logging

import mlflow
from mlflow import MlflowClient

from model.bundle import ModelBundle
from model.registry import ModelRef, load_bundle, resolve

log = logging.getLogger(__name__)


def model_ref(name: str, ref: str) -> ModelRef:
    """A version number or an alias such as champion, as a reference."""
    return ModelRef(name, version=ref) if ref.isdigit() else ModelRef(name, alias=ref)


def load_model(name: str, ref: str = "champion") -> ModelBundle:
    """The bundle of `name` at `ref` with its name and version set; ValueError with a clear message if the
    registry has no such model, or the bundle's schema version is unknown to this code."""
    version = resolve(MlflowClient(), model_ref(name, ref))
    if version is None:
        what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
        raise ValueError(
            f"no model {name!r} with {what} in the MLflow registry at {mlflow.get_tracking_uri()}: "
            "train one with `ews train` and promote it with `ews promote` "
            "(or pass --model NAME@alias|NAME:version)"
        )
    return load_bundle(name, version)
