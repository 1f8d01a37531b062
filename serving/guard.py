"""What every HTTP request meets before BentoML parses it, and the audit line after it.

`RequestGuard` is an ASGI middleware on the BentoML service (`LoanEWS.add_asgi_middleware`). In order:
public paths pass (liveness, readiness, and the front page and OpenAPI document, which it serves
itself from `serving.openapi`); a path the service does not have is called OTHER_PATH from here on, in
every log line and metric (`printable`, `bound_request_paths`); then the API key (401, the same body
for a missing, unknown or wrong key) and its role (403); then for a POST the content type (415 unless
JSON), the body size (413 from the Content-Length header, or as soon as a streamed body passes the
limit, without reading the rest) and the time the body may take to arrive (408). A body the client
abandons half-sent is never scored.

A request that reads a loan is written to the audit log when its answer starts, before any of it is
sent: a read that cannot be recorded is not answered (503), so the log never misses a loan that left.

The guard holds no settings of its own: it reads `Access` from the service instance, which the service
builds from the settings at startup, so settings are read once per worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
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
ADMIN = frozenset({"/model_info", "/metrics"})
LOAN_READS = frozenset({"/score", "/score_by_id", "/score_batch", "/explain"})
BATCH = "/score_batch"
MAX_KEY_CHARS = 256
OTHER_PATH = "/(other)"  # what logs and metrics call a path the service does not have


class FailedKeys:
    """Failed key checks per client address in a sliding window: past `limit` in `window` seconds an
    address gets 429 without another scrypt, so a flood of wrong keys cannot take the CPU that real
    requests need (55 wrong keys a second had raised a real request's p50 from 0.13 s to 1 s). A key
    this worker already verified never meets the limit."""

    MAX_ADDRESSES = 10_000  # addresses held at once: past it, those seen longest ago are forgotten

    def __init__(self, limit: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        now = self.clock()
        q = self._seen.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._seen[client]  # the table holds only addresses that failed lately
            return deque()
        return q

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.limit

    def failed(self, client: str) -> None:
        self._recent(client)
        q = self._seen.pop(client, deque())  # re-inserted: the dict runs from least to most recent
        q.append(self.clock())
        self._seen[client] = q
        while len(self._seen) > self.MAX_ADDRESSES:  # many addresses (IPv6 is cheap): memory stays bounded
            del self._seen[next(iter(self._seen))]


@dataclass
class Access:
    """Who may call, what they may send, where reads are recorded: built once per worker."""

    users: UserStore
    audit: AuditLog
    max_body_bytes: int
    max_batch_body_bytes: int
    model_name: str
    model_version: str
    body_timeout: float = 30.0  # seconds a request body may take to arrive (then 408)
    failed_keys: FailedKeys = field(default_factory=FailedKeys)

    def body_limit(self, path: str) -> int:
        return self.max_batch_body_bytes if path == BATCH else self.max_body_bytes


def _bearer(authorization: str | None) -> str:
    """The key of an `Authorization: Bearer KEY` header; "-" for anything else (which still costs a
    full check: the answer's timing tells nothing)."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key and len(key) <= MAX_KEY_CHARS else "-"


def _audit(access: Access, user: User, path: str, status: int, loans: list[tuple[str, str | None]]) -> bool:
    """Write the audit line of one request to a loan endpoint (who, when, status, the loans it read);
    False, logged as one line, when it cannot be written (a full disk, a folder gone)."""
    try:
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
    except OSError as e:
        log.error(
            "audit log cannot be written (%s): %s %s by %s refused with 503", e, path, status, user.name
        )
        return False
    return True


async def _send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    headers = dict(headers or {})
    if status in (408, 413):
        headers["connection"] = "close"  # the unread rest of the body cannot be skipped
    await _send(send, status, json.dumps(body).encode(), b"application/json", headers)


def _error(msg: str, loc: list[str] | None = None) -> dict:
    return {"error": msg, "detail": [{"loc": loc, "msg": msg}] if loc else []}


AUTH = ["header", "authorization"]
UNAUTHORIZED = _error("a valid API key is required: send Authorization: Bearer KEY", AUTH)
FORBIDDEN = _error("this key's role may not call this endpoint", AUTH)
NOT_READY = _error("the service is starting")
TOO_MANY = _error("too many requests with wrong keys from this address: wait and retry", AUTH)
AUDIT_DOWN = _error("the audit log cannot be written, so no loan is read: tell the service's operator")
KEYS_DOWN = _error("the service cannot check API keys now (its users file is unreadable): tell its operator")
GONE = 499  # the audit status of a request whose client left before its body was complete (nginx's code)


SYSTEM_PATHS = frozenset({*PUBLIC, *ADMIN, *LOAN_READS})


def printable(path: str, known: frozenset[str]) -> str:
    """A request path as logs and metrics may show it: a path the service has, or OTHER_PATH, so a
    caller can neither write lines of its own into the log (`%0A`) nor make each request a new metric
    series (each costs the server disk)."""
    return path if path in known else OTHER_PATH


class RequestGuard:
    """ASGI middleware: authentication, roles, content type, body size, audit (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        access: Callable[[], Access | None],
        openapi: Callable[[], dict],
        paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.access = access  # None until the service instance has started
        self.openapi = openapi
        self.known = SYSTEM_PATHS | paths  # the service's endpoints
        self._docs: bytes | None = None
        self._page: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the service has no websocket endpoint: refused unheard
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = printable(scope["path"], self.known)
        if path != scope["path"]:  # nothing behind the guard sees (or logs) a path the service lacks
            scope = {**scope, "path": path, "raw_path": path.encode()}
        if path == "/docs.json" and scope["method"] in ("GET", "HEAD"):
            return await self._serve_docs(send)
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            return await self._serve_page(send)
        if path in PUBLIC:
            return await self.app(scope, receive, send)
        access = self.access()
        if access is None:
            return await _send_json(send, 503, NOT_READY, {"retry-after": "5"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # two Authorization headers are no key (the last one had won: a wrong key, then a valid one, passed)
        auth = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"]
        key = _bearer(auth[0] if len(auth) == 1 else None)
        client = (scope.get("client") or ("-",))[0]
        user = access.users.cached(key)
        if user is None and access.users.unreadable:  # not the caller's key at fault: no 401, no count
            log.warning("503 %s %s: the users file is unreadable", scope["method"], path)
            return await _send_json(send, 503, KEYS_DOWN, {"retry-after": "30"})
        if user is None and access.failed_keys.blocked(client):
            log.warning("429 %s %s: %s sent too many wrong keys", scope["method"], path, client)
            retry = {"retry-after": f"{access.failed_keys.window:g}"}
            return await _send_json(send, 429, TOO_MANY, retry)
        if user is None:  # a key not seen before: one scrypt, off the event loop
            user = await anyio.to_thread.run_sync(access.users.verify, key)
        if user is None:
            access.failed_keys.failed(client)
            log.warning("401 %s %s: no valid API key", scope["method"], path)
            return await _send_json(send, 401, UNAUTHORIZED, {"www-authenticate": "Bearer"})
        if path in ADMIN and not user.may("admin"):
            log.warning("403 %s %s: user %s (role %s)", scope["method"], path, user.name, user.role)
            return await _send_json(send, 403, FORBIDDEN)
        if scope["method"] == "POST":
            refused = self._refuse_content(headers, access.body_limit(path))
            if refused is None:
                refused, body_bytes = await _read_body(receive, access.body_limit(path), access.body_timeout)
            if refused is not None:
                status, body = refused
                log.info("%d %s %s: %s", status, scope["method"], path, body["error"])
                # a known key's request to a loan endpoint is audited, even refused
                if path in LOAN_READS and not _audit(access, user, path, status, []):
                    status, body = 503, AUDIT_DOWN
                if status == GONE:
                    return None  # nobody is there to answer
                return await _send_json(send, status, body)
            receive = _replay(body_bytes, receive)
        scope.setdefault("state", {})["user"] = user
        if path not in LOAN_READS:
            return await self.app(scope, receive, _error_bodies(send))
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
        """Run the endpoint; its answer goes out only once its audit line is written (else 503)."""
        path = scope["path"]
        started = refused = False

        answer = _error_bodies(send)

        async def watch(message: Message) -> None:
            nonlocal started, refused
            if message["type"] == "http.response.start":
                started = True
                if not _audit(access, user, path, message["status"], scope["state"].get("loans", [])):
                    refused = True
                    return await _send_json(send, 503, AUDIT_DOWN)
            if not refused:
                await answer(message)

        status = 500  # the endpoint raised: the server answers 500
        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            status = 504  # BentoML's request timeout answered and cancelled the endpoint
            raise
        finally:
            if not started:
                _audit(access, user, path, status, scope["state"].get("loans", []))

    def _document(self) -> dict | None:
        try:
            return self.openapi()
        except Exception:
            log.exception("cannot build the OpenAPI document")
            return None

    async def _serve_docs(self, send: Send) -> None:
        if self._docs is None:
            if (doc := self._document()) is None:
                return await _send_json(send, 500, _error("the OpenAPI document cannot be built"))
            self._docs = json.dumps(doc).encode()
        await _send(send, 200, self._docs, b"application/json")

    async def _serve_page(self, send: Send) -> None:
        """The service's own front page: its endpoints and a link to the OpenAPI document. It replaces
        BentoML's stock page, which loads Google Tag Manager into every officer's browser; nothing on
        it comes from another host (the Content-Security-Policy forbids it)."""
        if self._page is None:
            if (doc := self._document()) is None:
                return await _send_json(send, 500, _error("the OpenAPI document cannot be built"))
            self._page = front_page(doc).encode()
        await _send(send, 200, self._page, b"text/html; charset=utf-8", PAGE_HEADERS)


PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def _send(
    send: Send, status: int, data: bytes, media: bytes, headers: dict[str, str] | None = None
) -> None:
    raw = [(b"content-type", media), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def front_page(doc: dict) -> str:
    """A plain HTML page of the OpenAPI document's endpoints (method, path, summary)."""
    import re
    from html import escape

    def first_line(text: object) -> str:
        # BentoML's own descriptions hold HTML ("<code>200</code>"): shown as text, not as escaped tags
        return escape(re.sub(r"<[^>]*>", "", str(text or "")).strip().split("\n")[0])

    info = doc.get("info", {})
    rows = "".join(
        f"<tr><td>{escape(method.upper())}</td><td><code>{escape(path)}</code></td>"
        f"<td>{first_line(op.get('summary') or op.get('description'))}</td></tr>"
        for path, ops in sorted(doc.get("paths", {}).items())
        for method, op in ops.items()
        if isinstance(op, dict)
    )
    title = escape(str(info.get("title") or "loan-ews"))
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em .2em 0}</style></head>"
        f"<body><h1>{title}</h1><p>{first_line(info.get('description'))}</p>"
        "<p>Every endpoint but <code>/livez</code>, <code>/readyz</code>, <code>/healthz</code>, this page "
        'and <a href="/docs.json">the OpenAPI document</a> needs <code>Authorization: Bearer KEY</code>.</p>'
        f"<table><tr><th>method</th><th>path</th><th>what it does</th></tr>{rows}</table></body></html>"
    )


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


def bound_request_paths(known: frozenset[str]) -> None:
    """Make BentoML's outermost middleware (its request metrics, then the access log) see OTHER_PATH for
    every path the service does not have, before anything records it. Otherwise each distinct unknown
    path, even a keyless 401, becomes new Prometheus series in the server's folder (2,000 such requests
    grew it by 84 MB and made /metrics 87 MB) and is printed as sent in the access log (a `%0A` forges a
    line). BentoML 1.4 builds that middleware from this module attribute when a worker builds its app,
    after it imports the service, so the subclass is installed from the service module."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "bounds_paths", False):
        return

    class _BoundedPaths(base):  # type: ignore[misc, valid-type]
        bounds_paths = True

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket") and printable(scope["path"], known) != scope["path"]:
                scope = {**scope, "path": OTHER_PATH, "raw_path": OTHER_PATH.encode()}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = _BoundedPaths


def quiet_client_errors() -> None:
    """Install `_ClientErrorsOneLine` on the logger of BentoML's request errors (once per process)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ClientErrorsOneLine) for f in logger.filters):
        logger.addFilter(_ClientErrorsOneLine())


_PYDANTIC_SUMMARY = re.compile(r"\d+ validation errors? for ")
SERVER_ERROR = _error("an error of the server, not of the request (its log has the details)")


def error_body(status: int, data: bytes) -> dict:
    """The `ErrorBody` of an error the app behind the guard answered in its own shape: BentoML's 400
    (summary "1 validation error for Input", pydantic's documentation links in each entry), its other
    4xx (a JSON list), Starlette's plain-text 404/405 and 500. The summary names the fields at fault;
    each entry keeps loc, msg and type only; a 5xx says nothing of the server."""
    if status >= 500:
        return SERVER_ERROR
    try:
        body = json.loads(data)
    except ValueError:
        body = {"error": data.decode("utf-8", "replace").strip() or f"HTTP {status}"}
    if isinstance(body, list):
        body = body[0] if body and isinstance(body[0], dict) else {"error": f"HTTP {status}"}
    if not isinstance(body, dict):
        body = {"error": f"HTTP {status}"}
    if isinstance(body.get("detail"), str) and not body.get("error"):  # Starlette's {"detail": "Not Found"}
        body = {"error": body["detail"]}
    detail = [
        {"loc": list(d.get("loc") or ["body"]), "msg": str(d.get("msg", "")), "type": d.get("type")}
        for d in body.get("detail") or []
        if isinstance(d, dict)
    ]
    summary = str(body.get("error") or f"HTTP {status}")
    if detail and _PYDANTIC_SUMMARY.match(summary):  # BentoML's words for a request pydantic refused
        shown = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail[:3])
        more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
        summary = f"{len(detail)} problem(s): {shown}{more}"
    return {"error": summary, "detail": detail}


def _error_bodies(send: Send) -> Send:
    """A `send` that passes answers below 400 as they are and rewrites the app's error answers as
    `ErrorBody` JSON (`error_body`): every error a caller meets has one shape."""
    held: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held = message
            return None
        if held is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        data = json.dumps(error_body(held["status"], b"".join(chunks))).encode()
        keep = [(k, v) for k, v in held["headers"] if k.lower() not in (b"content-type", b"content-length")]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            *keep,
        ]
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return wrapped


def _too_large(limit: int) -> dict:
    return _error(f"the body is larger than {limit:,} bytes", ["body"])


async def _read_body(receive: Receive, limit: int, timeout: float) -> tuple[tuple[int, dict] | None, bytes]:
    """(None, the whole body), or why it is refused: 413 as soon as it passes `limit` (the rest is never
    read), 408 when it takes longer than `timeout` seconds, GONE when the client leaves before its end
    (a half-sent body is not a request, so it is never scored)."""
    chunks, size = [], 0
    with anyio.move_on_after(timeout) as waited:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return (GONE, _error("the client left before its body was complete", ["body"])), b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return (413, _too_large(limit)), b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                return None, b"".join(chunks)
    assert waited.cancelled_caught
    return (408, _error(f"the body did not arrive within {timeout:g} s", ["body"])), b""


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
