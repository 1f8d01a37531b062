"""Settings of the `ews` entry point, built once there and passed down (env prefix `EWS_`)."""

from __future__ import annotations

from pathlib import Path

from serving.settings import ServingSettings


class Settings(ServingSettings):
    """Where things live, plus the serving settings (model, reference, book, reject limit)."""

    data_dir: Path = Path("data")
    user: str = ""  # who is recorded in the audit log (default: the login name)

    @property
    def demo_book(self) -> Path:
        return self.data_dir / "demo-book"
