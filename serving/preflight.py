"""What `ews serve` checks before it starts a server, so every fault is one clear line, not a half-up
server: the port, the MLflow store, the users file and the audit log, the book, the model and its bundle.

Each check raises `StartupError` naming the fault. The model is loaded whole (`load_model`, which
verifies the booster's checksum before LightGBM parses it) and the book through `BookIndex.load`, exactly
as a worker will, so what passes here loads there. `ews serve` runs them as `python -m serving.preflight
HOST PORT` with the workers' environment: the model and the book are not kept in memory by the process
that then only waits on the server, and a crash in a library is a refusal, not a crash of `ews serve`.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from serving.settings import ServingSettings

if TYPE_CHECKING:
    from model.bundle import ModelBundle
    from serving.loans import BookIndex

log = logging.getLogger(__name__)

MLFLOW_TABLES = {"registered_models", "model_versions", "runs"}


class StartupError(Exception):
    """A fault that stops `ews serve` before it starts anything."""


def one_line(e: BaseException, limit: int = 400) -> str:
    """An exception's message on one line, cut at `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI, or None for any other kind of store."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def check_store(uri: str) -> None:
    """A SQLite store must be a readable, whole SQLite file with MLflow's tables (MLflow itself would
    create an empty store where there is none, retry forever on a folder, and fail with a traceback on
    a truncated file). Other stores are left to MLflow."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.is_dir():
        raise StartupError(f"the MLflow store {path} is a folder, not a SQLite file")
    if not path.exists():
        raise StartupError(
            f"no MLflow store at {path}: train and promote a model first (ews train, ews promote)"
        )
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        raise StartupError(f"the MLflow store {path} is not a readable SQLite database: {one_line(e)}") from e
    if ok != "ok":
        raise StartupError(f"the MLflow store {path} is corrupt: {one_line(ok)}")
    if not tables >= MLFLOW_TABLES:
        raise StartupError(f"{path} is a SQLite file but not an MLflow store (no {sorted(MLFLOW_TABLES)})")


def check_model(uri: str, name: str, ref: str) -> ModelBundle:
    """Load the model the server will serve, bundle and booster included."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from serving.model_loader import load_model

    mlflow.set_tracking_uri(uri)
    try:
        bundle = load_model(name, ref)
    except ValueError as e:
        raise StartupError(one_line(e)) from e
    except (MlflowException, SQLAlchemyError, OSError) as e:
        raise StartupError(f"model {name}@{ref} cannot be loaded: {one_line(e)}") from e
    return bundle


def check_book(folder: Path) -> BookIndex:
    """The book must load as the service loads it (a book with a few bad loans is served without them;
    one that is unusable as a whole is refused)."""
    from serving.loans import BookIndex

    if not folder.is_dir():
        raise StartupError(f"book folder {str(folder)!r} does not exist")
    try:
        return BookIndex.load(folder)
    except (ValueError, OSError) as e:
        raise StartupError(f"book {str(folder)!r} cannot be served: {one_line(e)}") from e


def check_access(settings: ServingSettings) -> int:
    """The users file must be readable and the audit log writable; the number of users."""
    from serving.audit import JsonlAuditLog
    from serving.users import UserStore

    users = UserStore(settings.users_path)
    try:
        users.check()
    except ValueError as e:
        raise StartupError(one_line(e)) from e
    try:
        JsonlAuditLog(settings.audit_path).open().close()
    except OSError as e:
        raise StartupError(f"the audit log {settings.audit_path} cannot be written: {one_line(e)}") from e
    return len(users.users())


class PortInUse(StartupError):
    """Another process listens on the port."""


def check_port(host: str, port: int) -> None:
    """Nothing may listen on host:port already (the supervisor would fail after the checks)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use") from e
        raise StartupError(f"cannot listen on {host}:{port}: {one_line(e)}") from e


@dataclass(frozen=True)
class Passed:
    model_name: str
    model_version: str
    users: int


def run_checks(settings: ServingSettings, host: str, port: int) -> Passed:
    """Every check, cheapest first; `StartupError` at the first fault (a fault of the port, the store, the
    users file or the book comes before anything heavy is imported)."""
    check_port(host, port)
    uri = settings.tracking_uri()
    check_store(uri)
    users = check_access(settings)
    book = check_book(settings.book) if settings.book is not None else None
    bundle = check_model(uri, settings.model_name, settings.model_ref)
    from serving.runtime import ScoringRuntime

    try:  # what a worker builds from them
        ScoringRuntime(bundle, book, settings.model_ref, settings.top_k)
    except ValueError as e:
        raise StartupError(f"the service cannot be built: {one_line(e)}") from e
    return Passed(bundle.name, bundle.version, users)


def main(argv: list[str]) -> int:
    """`python -m serving.preflight HOST PORT`: prints one JSON line, {"ok": true, ...} or {"ok": false,
    "error": "..."}, and exits 0 or 1; logs go to stderr."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    host, port = argv[0], int(argv[1])
    try:
        verdict = {"ok": True, **asdict(run_checks(ServingSettings(), host, port))}
    except StartupError as e:
        verdict = {"ok": False, "error": str(e)}
    print(json.dumps(verdict), flush=True)
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
