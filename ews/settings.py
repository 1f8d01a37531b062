"""Settings of the `ews` entry point, built once there and passed down (env prefix `EWS_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where things live and the demo defaults. `MLFLOW_TRACKING_URI` is left to MLflow itself."""

    model_config = SettingsConfigDict(env_prefix="EWS_")

    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    demo_loans: int = 20_000
    demo_months: int = 48
    seed: int = 7
    user: str = ""  # who is recorded in the audit log (default: the login name)
    model_name: str = "loan-ews-pd-12m"  # the model the service and the batch score with
    model_ref: str = "champion"  # an alias or a version number
    book: Path | None = None  # the book the service scores by loan id (none: request data only)
    top_k: int = 3  # reasons per loan

    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the SQLite store under models/."""
        import os

        return os.environ.get("MLFLOW_TRACKING_URI") or self.default_tracking_uri

    @property
    def demo_book(self) -> Path:
        return self.data_dir / "demo-book"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"
