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

    @property
    def demo_book(self) -> Path:
        return self.data_dir / "demo-book"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"
