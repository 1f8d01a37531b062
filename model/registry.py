"""Naming and finding a registered model: one syntax for every command, one lookup in the MLflow registry.

`NAME` (the champion), `NAME@alias` or `NAME:version`. Parsing is pure and cheap, so a command checks its
arguments before anything heavy loads; resolving needs the registry.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.bundle import ModelBundle
from model.pyfunc import bundle_from_model_uri

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|:(?P<version>\d+))?$"
)


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return self.name + (f"@{self.alias}" if self.alias else f":{self.version}" if self.version else "")

    @property
    def ref(self) -> str:
        """The alias or version, as the service reports it."""
        return self.version or self.alias or CHAMPION


def parse_ref(text: str, default_alias: str | None = CHAMPION) -> ModelRef:
    """`NAME`, `NAME@alias` or `NAME:version`; ValueError naming the expected form otherwise."""
    m = _REF.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"--model {text!r} is not NAME, NAME@alias or NAME:version (e.g. loan-ews-pd-12m@champion)"
        )
    alias, version = m["alias"], m["version"]
    return ModelRef(m["name"], alias or (None if version else default_alias), version)


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
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location and f"{location}/{name}")
