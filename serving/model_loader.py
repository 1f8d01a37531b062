"""Load the model bundle a server or batch run should use: by alias (champion) or version, from MLflow."""

from __future__ import annotations

import logging

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.bundle import ModelBundle
from model.pyfunc import bundle_from_model_uri

log = logging.getLogger(__name__)


def resolve(client: MlflowClient, name: str, ref: str) -> str | None:
    """The version `ref` names: a version number, or an alias such as champion; None if there is none."""
    try:
        if ref.isdigit():
            return str(client.get_model_version(name, ref).version)
        return str(client.get_model_version_by_alias(name, ref).version)
    except MlflowException:
        return None


def load_model(name: str, ref: str = "champion") -> ModelBundle:
    """The bundle of `name` at `ref` with its name and version set; ValueError with a clear message if the
    registry has no such model, or the bundle's schema version is unknown to this code."""
    client = MlflowClient()
    version = resolve(client, name, ref)
    if version is None:
        what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
        raise ValueError(
            f"no model {name!r} with {what} in the MLflow registry at {mlflow.get_tracking_uri()}: "
            "train one with `ews train` and promote it with `ews promote` (or pass --model/--ref)"
        )
    bundle = bundle_from_model_uri(f"models:/{name}/{version}")
    bundle.name, bundle.version = name, version
    log.info("loaded model %s version %s (ref %s)", name, version, ref)
    return bundle
