"""The audit log: one record per request that reads a loan (score, score_by_id, score_batch, explain).

Behind a small interface (`AuditLog.append`) so the officer pages and a database store can use it later;
today it is `JsonlAuditLog`, an append-only file of JSON lines under the models folder (the
`EWS_AUDIT_LOG` setting). Each record is one `write` to a file opened with O_APPEND, so the lines of
several workers never interleave and nothing already written is ever rewritten. A file moved or deleted
(log rotation) is noticed at the next record, which starts a new file at the path, as `logging`'s
WatchedFileHandler does; a record that cannot be written raises OSError, and the guard then refuses the
request it records.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class AuditRecord:
    who: str  # user name of the API key
    role: str
    when: str  # UTC, ISO 8601, when the answer was sent
    endpoint: str  # e.g. /score_by_id
    status: int  # HTTP status of the answer
    model_name: str
    model_version: str
    loan_ids: list[str] = field(default_factory=list)  # the loans asked for, in request order
    as_of: list[str | None] = field(default_factory=list)  # each loan's month (None: not resolved)


class AuditLog(Protocol):
    def append(self, record: AuditRecord) -> None: ...


class JsonlAuditLog:
    """Append-only JSON lines in one file (created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._file: tuple[int, int] = (-1, -1)  # (device, inode) of the open file
        self._lock = threading.Lock()

    def open(self) -> JsonlAuditLog:
        """Open (creating the folder and file) now, so a log that cannot be opened stops startup."""
        with self._lock:
            self._current()
        return self

    def append(self, record: AuditRecord) -> None:
        line = (json.dumps(asdict(record), ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._current()
            if os.write(fd, line) != len(line):  # one write per line, or the lines could interleave
                raise OSError(f"audit log {self.path}: short write")

    def _current(self) -> int:
        """The open file, reopened when the path no longer names it (rotated or deleted)."""
        if self._fd is not None:
            try:
                on_path = os.stat(self.path)
                moved = (on_path.st_dev, on_path.st_ino) != self._file
            except FileNotFoundError:
                moved = True
            if moved:
                os.close(self._fd)
                self._fd = None
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            ours = os.fstat(self._fd)  # an open file keeps its identity: read once, not per line (a
            self._file = (ours.st_dev, ours.st_ino)  # system call on the event loop costs throughput)
        return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
