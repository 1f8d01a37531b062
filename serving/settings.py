"""Settings of the scoring service and the batch (env prefix `EWS_`), read once in their entry points.

`ews.settings.Settings` extends these, so the command line and the BentoML service read the same names.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 2**20


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EWS_")

    models_dir: Path = Path("models")
    model_name: str = "loan-ews-pd-12m"  # the model the service and the batch score with
    model_ref: str = "champion"  # an alias or a version number
    book: Path | None = None  # the book the service scores by loan id (none: request data only)
    top_k: int = 3  # reasons per loan
    max_reject_share: float = 0.2  # more of a book's loans breaking the contract than this stops a command
    users_file: Path | None = None  # API keys (salted hashes) and roles; default models_dir/users.json
    audit_log: Path | None = None  # every read of a loan, JSON lines; default models_dir/audit.jsonl
    max_body_bytes: int = 2 * MiB  # request bodies above this get 413 unread...
    max_batch_body_bytes: int = 16 * MiB  # ...except /score_batch (1,000 full loans are about 7 MB)
    # wrong keys per client address in 10 s before 429, counted by each worker (so up to workers x this)
    max_failed_keys: int = Field(20, ge=1)
    # seconds a worker trusts the users file unchanged: a key added or removed takes effect within this
    users_recheck_seconds: float = Field(1.0, ge=0, le=60)
    # seconds a request body may take to arrive before a 408: under BentoML's 60 s request timeout
    body_timeout: float = Field(30.0, gt=0, lt=60)
    startup_timeout: float = 180.0  # seconds `ews serve` waits for its workers before it gives up

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the SQLite store under models/."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.default_tracking_uri

    @property
    def users_path(self) -> Path:
        return self.users_file or self.models_dir / "users.json"

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.models_dir / "audit.jsonl"
