"""How a command names a registered model: `NAME` (the champion), `NAME@alias` or `NAME:version`.

Pure and cheap (no MLflow, no LightGBM), so a command checks its arguments before anything heavy loads;
`model.registry` resolves a reference against the registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a registered model's name (a spec's `name` must be one)
_REF = re.compile(rf"^(?P<name>{NAME})(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|:(?P<version>\d+))?$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return self.name + (f"@{self.alias}" if self.alias else f":{self.version}" if self.version else "")

    @classmethod
    def of(cls, name: str, ref: str) -> ModelRef:
        """A model and a version number or alias, as the settings hold them (EWS_MODEL_REF=champion or 3)."""
        return cls(name, version=ref) if ref.isdigit() else cls(name, alias=ref)

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
