"""What every HTTP request meets before BentoML parses it, and the audit line after it.

`RequestGuard` is an ASGI middleware on the BentoML service (`LoanEWS.add_asgi_middleware`). In order:
public paths pass (liveness, readiness, the docs page, whose document it serves itself from
`serving.openapi`); then the API key (401, the same body for a missing, unknown or wrong key) and its
role (403); then for a POST the content type (415 unless JSON) and the body size (413 from the
Content-Length header, or as soon as a streamed body passes the limit, without reading the rest). A
request that reads a loan is then written to the audit log with its status once answered.

The guard holds no settings of its own: it reads `Access` from the service instance, which the service
builds from the settings at startup, so settings are read once per worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from serving.audit import AuditLog, AuditRecord
from serving.users import User, UserStore

log = logging.getLogger("loan_ews.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC = frozenset({"/livez", "/healthz", "/readyz", "/", "/docs.json"})
PUBLIC_PREFIXES = ("/static_content/",)  # the docs page's scripts and styles
ADMIN = frozenset({"/model_info", "/metrics"})
LOAN_READS = frozenset({"/score", "/score_by_id", "/score_batch", "/explain"})
BATCH = "/score_batch"
MAX_KEY_CHARS = 256


@dataclass
class Access:
    """Who may call, what they may send, where reads are recorded: built once per worker."""

    users: UserStore
    audit: AuditLog
    max_body_bytes: int
    max_batch_body_bytes: int
    model_name: str
    model_version: str

    def body_limit(self, path: str) -> int:
        return self.max_batch_body_bytes if path == BATCH else self.max_body_bytes

    async def authenticate(self, authorization: str | None) -> User | None:
        """The user of a `Bearer` key, or None; a key not seen before is checked off the event loop."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_CHARS:
            key = "-"  # still costs a full check: the answer's timing tells nothing
        user = self.users.cached(key)
        if user is None:
            user = await anyio.to_thread.run_sync(self.users.verify, key)
        return user


def _audit(access: Access, user: User, path: str, status: int, loans: list[tuple[str, str | None]]) -> None:
    """The audit line of one request to a loan endpoint: who, when, status and the loans it read."""
    access.audit.append(
        AuditRecord(
            who=user.name,
            role=user.role,
            when=datetime.now(UTC).isoformat(timespec="milliseconds"),
            endpoint=path,
            status=status,
            model_name=access.model_name,
            model_version=access.model_version,
            loan_ids=[lid for lid, _ in loans],
            as_of=[t for _, t in loans],
        )
    )


async def _send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if status == 413:
        raw.append((b"connection", b"close"))  # the unread rest of the body cannot be skipped
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _error(msg: str, loc: list[str] | None = None) -> dict:
    return {"error": msg, "detail": [{"loc": loc, "msg": msg}] if loc else []}


UNAUTHORIZED = _error("a valid API key is required: send Authorization: Bearer KEY")
FORBIDDEN = _error("this key's role may not call this endpoint")
NOT_READY = _error("the service is starting")


class RequestGuard:
    """ASGI middleware: authentication, roles, content type, body size, audit (see the module doc)."""

    def __init__(
        self, app: ASGIApp, access: Callable[[], Access | None], openapi: Callable[[], dict]
    ) -> None:
        self.app = app
        self.access = access  # None until the service instance has started
        self.openapi = openapi
        self._docs: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/docs.json" and scope["method"] in ("GET", "HEAD"):
            return await self._serve_docs(send)
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)
        access = self.access()
        if access is None:
            return await _send_json(send, 503, NOT_READY, {"retry-after": "5"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        user = await access.authenticate(headers.get("authorization"))
        if user is None:
            log.warning("401 %s %s: no valid API key", scope["method"], path)
            return await _send_json(send, 401, UNAUTHORIZED, {"www-authenticate": "Bearer"})
        if path in ADMIN and not user.may("admin"):
            log.warning("403 %s %s: user %s (role %s)", scope["method"], path, user.name, user.role)
            return await _send_json(send, 403, FORBIDDEN)
        if scope["method"] == "POST":
            refused = self._refuse_content(headers, access.body_limit(path))
            if refused is None and (body_bytes := await _read_body(receive, access.body_limit(path))) is None:
                refused = 413, _too_large(access.body_limit(path))
            if refused is not None:
                status, body = refused
                log.info("%d %s %s: %s", status, scope["method"], path, body["error"])
                if path in LOAN_READS:  # a known key's request to a loan endpoint: audited, even refused
                    _audit(access, user, path, status, [])
                return await _send_json(send, status, body)
            receive = _replay(body_bytes, receive)
        scope.setdefault("state", {})["user"] = user
        if path not in LOAN_READS:
            return await self.app(scope, receive, send)
        await self._audited(scope, receive, send, access, user)

    def _refuse_content(self, headers: dict[str, str], limit: int) -> tuple[int, dict] | None:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            what = f"content type {media!r}" if media else "no content type"
            return 415, _error(f"{what}: send application/json", ["header", "content-type"])
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return 413, _too_large(limit)
        return None

    async def _audited(self, scope: Scope, receive: Receive, send: Send, access: Access, user: User) -> None:
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            _audit(access, user, scope["path"], status, scope["state"].get("loans", []))

    async def _serve_docs(self, send: Send) -> None:
        if self._docs is None:
            try:
                self._docs = json.dumps(self.openapi()).encode()
            except Exception:
                log.exception("cannot build the OpenAPI document")
                return await _send_json(send, 500, _error("the OpenAPI document cannot be built"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._docs)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._docs})


class _ClientErrorsOneLine(logging.Filter):
    """BentoML logs every request its validation rejects as a traceback at ERROR; a malformed request is
    the caller's error, not the server's: rewrite it as one INFO line with the fields at fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            locs = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors()[:5])
            status, what = 400, f"{exc.error_count()} problem(s) at {locs}"
        elif isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
            status, what = int(exc.error_code), type(exc).__name__
        else:
            return True
        path, method = record.args if isinstance(record.args, tuple) else ("?", "?")
        record.msg, record.args = "%d %s %s: %s", (status, method, path, what)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install `_ClientErrorsOneLine` on the logger of BentoML's request errors (once per process)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ClientErrorsOneLine) for f in logger.filters):
        logger.addFilter(_ClientErrorsOneLine())


def _too_large(limit: int) -> dict:
    return _error(f"the body is larger than {limit:,} bytes", ["body"])


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` (the rest is never read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the client (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
