"""Naming and finding a registered model: one syntax for every command, one lookup in the MLflow registry.

`NAME` (the champion), `NAME@alias` or `NAME:version`, parsed in `model.ref` (pure and cheap, so a
command checks its arguments before anything heavy loads); resolving needs the registry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.bundle import ModelBundle
from model.pyfunc import bundle_from_model_uri
from model.ref import CHALLENGER, CHAMPION, ModelRef, parse_ref

log = logging.getLogger(__name__)

# the reference types are re-exported: a caller that resolves names them from here
__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ModelRef",
    "ensure_experiment",
    "load_bundle",
    "parse_ref",
    "require",
    "resolve",
]


def resolve(client: MlflowClient, ref: ModelRef) -> str | None:
    """The version a reference names; None when the registry has no such model, version or alias."""
    try:
        if ref.version is not None:
            return str(client.get_model_version(ref.name, ref.version).version)
        if ref.alias is not None:
            return str(client.get_model_version_by_alias(ref.name, ref.alias).version)
        versions = client.search_model_versions(f"name = '{ref.name}'")
        return str(max(int(v.version) for v in versions)) if versions else None
    except MlflowException:
        return None


def require(client: MlflowClient, ref: ModelRef) -> str:
    """`resolve`, or a ValueError that says what the registry has."""
    v = resolve(client, ref)
    if v is not None:
        return v
    try:
        versions = sorted(int(x.version) for x in client.search_model_versions(f"name = '{ref.name}'"))
    except MlflowException as e:
        raise ValueError(f"cannot read the MLflow registry: {e.message}") from e
    if not versions:
        raise ValueError(f"no registered model named {ref.name!r} (train one with `ews train`)")
    what = f"version {ref.version}" if ref.version else f"alias @{ref.alias}"
    raise ValueError(f"model {ref.name!r} has no {what} (versions: {versions})")


def load_bundle(name: str, version: str) -> ModelBundle:
    bundle = bundle_from_model_uri(f"models:/{name}/{version}")
    bundle.name, bundle.version = name, str(version)
    log.info("loaded model %s version %s", name, version)
    return bundle


def ensure_experiment(name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created with its artifacts under `artifact_root`. An existing one keeps
    the folder it was made with (MLflow stores it as an absolute path): one outside `artifact_root` is
    said, since a copied store then writes its runs' files into the original's folder."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if artifact_root is not None and exp.artifact_location.startswith("file:"):
            root = Path(artifact_root).resolve().as_uri()
            if not exp.artifact_location.startswith(f"{root}/"):
                log.warning(
                    "experiment %s keeps its artifacts at %s, outside this store's artifact folder %s "
                    "(a copied store?): its runs write their files there",
                    name,
                    exp.artifact_location,
                    root,
                )
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location and f"{location}/{name}")
