"""Settings of the scoring service and the batch (env prefix `EWS_`), read once in their entry points.

`ews.settings.Settings` extends these, so the command line and the BentoML service read the same names.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EWS_")

    models_dir: Path = Path("models")
    model_name: str = "loan-ews-pd-12m"  # the model the service and the batch score with
    model_ref: str = "champion"  # an alias or a version number
    book: Path | None = None  # the book the service scores by loan id (none: request data only)
    top_k: int = 3  # reasons per loan
    max_reject_share: float = 0.2  # more of a book's loans breaking the contract than this stops a command

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the SQLite store under models/."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.default_tracking_uri
