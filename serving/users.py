"""API keys and roles: who may call the scoring service.

`ews user add NAME --role ROLE` creates a key, prints it once and stores only its salted scrypt hash in
one JSON file (the `EWS_USERS_FILE` setting, by default `models/users.json`, git-ignored). A key reads
`ews_<key id>_<secret>`: the key id finds the user without trying every hash, the secret is checked
against the hash in constant time. An unknown key id costs the same scrypt as a wrong secret, so neither
the answer nor its timing tells a caller which key ids exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("officer", "admin")  # officer: score and read loans; admin: also model info and metrics
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_KEY = re.compile(r"ews_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# A key's secret is 256 random bits, so the work factor only slows an attacker who has the file; kept
# modest (~4 MB, ~13 ms here) because an unauthenticated request costs one check too.
_SCRYPT = {"n": 2**12, "r": 8, "p": 1, "dklen": 32}
_DUMMY = ("x" * 43, bytes(16))  # checked for an unknown key id, so it costs a real scrypt too


@dataclass(frozen=True)
class User:
    name: str
    role: str
    key_id: str
    created: str  # UTC, ISO 8601

    def may(self, role: str) -> bool:
        """Whether this user holds `role` (admin holds officer's rights too)."""
        return self.role == role or self.role == "admin"


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


class UserStore:
    """The users file: read by the server on each change, written whole (atomically) by `ews user`.

    `recheck_after` is how many seconds the file's stamp is trusted before it is looked at again (0:
    on every check). The server trusts it for a second: a `stat` on every request, on the event loop
    that every request of a worker waits on, cost 5-10% of its throughput at concurrency 16 (the loop
    gives the interpreter lock away at each system call, to the thread that scores), and a key added or
    removed then takes effect within a second instead of on the next request."""

    def __init__(
        self, path: Path, recheck_after: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.recheck_after, self.clock = recheck_after, clock
        self._checked_at: float | None = None  # when the file's stamp was last read (clock)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, dict] = {}  # key id -> stored record
        self._verified: dict[bytes, User] = {}  # sha256 of a key already checked -> its user
        self._generation = 0  # bumped on each re-read, so a check begun before it is not cached after
        self.unreadable: str | None = None  # why the file last read does not read as a users file

    # ------------------------------------------------------------------------------------- reading
    def _read(self) -> dict[str, dict]:
        """The file's records by key id; no file means no users. ValueError for a file that does not
        read as a users file."""
        if not self.path.exists():
            return {}
        try:
            records = json.loads(self.path.read_text())["users"]
            for r in records:
                _check_record(r)
            return {r["key_id"]: r for r in records}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"users file {str(self.path)!r} is unreadable: {e}") from e

    def _load(self) -> tuple[dict[str, dict], int]:
        """The records and their generation, re-read when the file changes (a key added or removed
        while the server runs takes effect on the next check made `recheck_after` seconds or more after
        the last look). A file that no longer parses refuses every key (logged)."""
        now = self.clock()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self.recheck_after:
                return self._records, self._generation
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._records, self.unreadable = self._read(), None
                except ValueError as e:
                    log.error(
                        "users file %s is unreadable (%s): every key is refused until it is fixed",
                        self.path,
                        e,
                    )
                    self._records, self.unreadable = {}, str(e)
                self._verified = {}
                self._stamp = stamp
                self._generation += 1
            self._checked_at = now
            return self._records, self._generation

    def users(self) -> list[User]:
        return [_user(r) for r in sorted(self._read().values(), key=lambda r: r["name"])]

    def check(self) -> None:
        """Raise ValueError if the file exists but cannot be read as a users file (startup check)."""
        self._read()

    def cached(self, key: str) -> User | None:
        """The user of a key this server has already checked, without scrypt (None: not checked yet)."""
        self._load()
        with self._lock:
            return self._verified.get(hashlib.sha256(key.encode()).digest())

    def verify(self, key: str) -> User | None:
        """The user whose key this is, or None. Costs one scrypt whatever the key."""
        records, generation = self._load()
        m = _KEY.fullmatch(key)
        rec = records.get(m.group(1)) if m else None
        secret, salt = (m.group(2), bytes.fromhex(rec["salt"])) if rec else _DUMMY
        digest = _hash(secret, salt)
        if rec is None or not hmac.compare_digest(digest, bytes.fromhex(rec["hash"])):
            return None
        user = _user(rec)
        with self._lock:
            # The file may have been re-read during the scrypt (a user removed): cache only a check
            # made against the records still current, or a removed key would stay accepted.
            if generation == self._generation:
                self._verified[hashlib.sha256(key.encode()).digest()] = user
        return user

    # ------------------------------------------------------------------------------------- writing
    def add(self, name: str, role: str) -> str:
        """Create a user and return its key (shown once; only its hash is stored)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        record = {
            **asdict(User(name, role, key_id, created)),
            "salt": salt.hex(),
            "hash": _hash(secret, salt).hex(),
        }
        with self._writing():
            records = list(self._read().values())
            if any(r["name"] == name for r in records):
                raise ValueError(f"user {name!r} exists: remove it first (`ews user remove {name}`)")
            self._write([*records, record])
        return f"ews_{key_id}_{secret}"

    def remove(self, name: str) -> bool:
        """Delete a user (a running server stops taking its key within its `recheck_after`); False if
        there is none. Works on a file with a broken record too, so the broken one can be removed."""
        with self._writing():
            records = self._raw_records()
            kept = [r for r in records if r.get("name") != name]
            if len(kept) == len(records):
                return False
            self._write(kept)
        return True

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the users file's lock across a read-modify-write, so two `ews user` commands run at
        once cannot each write the file without the other's change."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # opened read-only (flock needs no write access), so another admin of the folder can take it too
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _raw_records(self) -> list[dict]:
        """The file's records as stored, unchecked (only `remove` reads them so)."""
        if not self.path.exists():
            return []
        try:
            records = json.loads(self.path.read_text())["users"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"users file {str(self.path)!r} is unreadable: {e}") from e
        return [r for r in records if isinstance(r, dict)]

    def _write(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"users": sorted(records, key=lambda r: r["name"])}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.debug("wrote %d users to %s", len(records), self.path)


_FIELDS = {
    "name": _NAME,
    "key_id": re.compile(r"[0-9a-f]{12}"),
    "salt": re.compile(r"[0-9a-f]{32}"),
    "hash": re.compile(r"[0-9a-f]{64}"),
    "created": re.compile(r"\S{1,40}"),
}


def _check_record(r: object) -> None:
    """ValueError naming the user and field of a record `ews user add` could not have written (a hand
    edit): such a record would fail at its first request, after the server said it was ready."""
    if not isinstance(r, dict):
        raise ValueError(f"a user record is {type(r).__name__}, not an object")
    who = r.get("name") if isinstance(r.get("name"), str) else "?"
    for name, pattern in _FIELDS.items():
        if not (isinstance(r.get(name), str) and pattern.fullmatch(r[name])):
            raise ValueError(f"user {who!r}: {name} is missing or malformed")
    if r.get("role") not in ROLES:
        raise ValueError(f"user {who!r}: role {r.get('role')!r} is not one of {', '.join(ROLES)}")


def _user(r: dict) -> User:
    return User(r["name"], r["role"], r["key_id"], r["created"])
