"""The request guard in process (an ASGI app behind it, real users and audit files): a read that cannot
be audited is not answered, a half-sent or too slow body is never scored, unknown paths get one name,
the front page loads nothing from elsewhere; the audit log follows rotation; a hand-broken users file is
refused naming the record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import httpx
import pytest

from serving.audit import AuditRecord, JsonlAuditLog
from serving.guard import OTHER_PATH, Access, FailedKeys, RequestGuard, _error_bodies
from serving.users import UserStore


class _App:
    """The endpoint behind the guard: answers 200 and names one loan it read."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls.append(scope["path"])
        await receive()
        scope["state"]["loans"] = [("L1", "2025-12")]
        body = b'{"pd": 0.1}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _access(tmp_path: Path, audit_path: Path, body_timeout: float = 30.0) -> tuple[Access, str]:
    users = UserStore(tmp_path / "users.json")
    key = users.add("olivia", "officer")
    access = Access(
        users=users,
        audit=JsonlAuditLog(audit_path),
        max_body_bytes=10_000,
        max_batch_body_bytes=10_000,
        model_name="m",
        model_version="1",
        body_timeout=body_timeout,
    )
    return access, key


def _guard(app, access: Access) -> RequestGuard:
    paths = {"/score": {"post": {"summary": "s <code>200</code> & 3"}}}
    doc = {"info": {"title": "t <b>", "description": "d"}, "paths": paths}
    return RequestGuard(app, access=lambda: access, openapi=lambda: doc, paths=frozenset({"/score"}))


async def _post(guard: RequestGuard, key: str, path: str = "/score") -> httpx.Response:
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.post(path, json={"loan_id": "L1"}, headers={"authorization": f"Bearer {key}"})


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_read_that_cannot_be_audited_is_refused_and_nothing_of_its_answer_leaves(tmp_path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (a device that is always full)")
    app = _App()
    access, key = _access(tmp_path, Path("/dev/full"))
    r = anyio.run(_post, _guard(app, access), key)
    assert app.calls == ["/score"]  # the endpoint ran, but its answer was held back
    assert r.status_code == 503 and "audit log cannot be written" in r.json()["error"]
    assert "pd" not in r.text
    # the same guard with a writable log answers, and the line is written before the answer
    ok_access, ok_key = _access(tmp_path / "ok", tmp_path / "audit.jsonl")
    r = anyio.run(_post, _guard(_App(), ok_access), ok_key)
    assert r.status_code == 200 and r.json() == {"pd": 0.1}
    (line,) = _lines(tmp_path / "audit.jsonl")
    assert line["status"] == 200 and line["loan_ids"] == ["L1"] and line["who"] == "olivia"


def _raw_call(guard: RequestGuard, key: str, messages: list[dict], delay: float = 0.0):
    """Call the guard with the request body messages given (then, if they run out, wait `delay` s and
    disconnect); what it sent back."""
    sent: list[dict] = []
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        await anyio.sleep(delay)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
    }
    anyio.run(guard, scope, receive, send)
    return sent


def test_a_body_the_client_abandons_half_sent_is_never_scored_and_is_audited_as_gone(tmp_path) -> None:
    app = _App()
    access, key = _access(tmp_path, tmp_path / "audit.jsonl")
    part = {"type": "http.request", "body": b'{"loan_id": "L0', "more_body": True}
    sent = _raw_call(_guard(app, access), key, [part, {"type": "http.disconnect"}])
    assert app.calls == [] and sent == []  # not scored; nobody left to answer
    (line,) = _lines(tmp_path / "audit.jsonl")
    assert line["status"] == 499 and line["loan_ids"] == []


def test_a_body_slower_than_the_limit_is_408_audited_and_the_connection_closed(tmp_path) -> None:
    app = _App()
    access, key = _access(tmp_path, tmp_path / "audit.jsonl", body_timeout=0.3)
    part = {"type": "http.request", "body": b'{"loan_id"', "more_body": True}
    sent = _raw_call(_guard(app, access), key, [part], delay=5.0)
    assert app.calls == []
    start = sent[0]
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert json.loads(sent[1]["body"])["detail"][0]["loc"] == ["body"]
    assert [x["status"] for x in _lines(tmp_path / "audit.jsonl")] == [408]


def test_unknown_paths_reach_nothing_under_their_own_name(tmp_path) -> None:
    app = _App()
    access, key = _access(tmp_path, tmp_path / "audit.jsonl")
    guard = _guard(app, access)
    anyio.run(_post, guard, key, "/x%0A2026 [ERROR] forged")
    anyio.run(_post, guard, key, "/score")
    assert app.calls == [OTHER_PATH, "/score"]


def test_the_front_page_lists_the_endpoints_and_loads_nothing_from_elsewhere(tmp_path) -> None:
    access, _ = _access(tmp_path, tmp_path / "audit.jsonl")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=_guard(_App(), access))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/")

    r = anyio.run(get)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "<code>/score</code>" in r.text and "t &lt;b&gt;" in r.text  # escaped
    # BentoML's descriptions hold HTML: the page shows their text, not '&lt;code&gt;200&lt;/code&gt;'
    assert "<td>s 200 &amp; 3</td>" in r.text, r.text
    assert "http://" not in r.text and "https://" not in r.text and "<script" not in r.text


def _record(n: int) -> AuditRecord:
    return AuditRecord("u", "officer", f"2026-01-01T00:00:0{n}", "/score", 200, "m", "1", [f"L{n}"], [None])


def test_the_audit_log_starts_a_new_file_when_its_file_is_rotated_or_deleted(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = JsonlAuditLog(path).open()
    audit.append(_record(1))
    path.rename(tmp_path / "audit.1")  # logrotate without copytruncate
    audit.append(_record(2))
    assert [x["loan_ids"] for x in _lines(tmp_path / "audit.1")] == [["L1"]]
    assert [x["loan_ids"] for x in _lines(path)] == [["L2"]]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.unlink()
    audit.append(_record(3))
    assert [x["loan_ids"] for x in _lines(path)] == [["L3"]]
    audit.close()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("salt"), "user 'ann': salt is missing or malformed"),
        (lambda r: r.update(salt="zz"), "user 'ann': salt is missing or malformed"),
        (lambda r: r.update(role="Admin"), "user 'ann': role 'Admin' is not one of officer, admin"),
        (lambda r: r.update(hash=5), "user 'ann': hash is missing or malformed"),
    ],
)
def test_a_hand_broken_users_file_is_refused_naming_the_user_and_field(tmp_path, edit, message) -> None:
    store = UserStore(tmp_path / "users.json")
    key = store.add("ann", "officer")
    bob = store.add("bob", "admin")
    assert store.verify(bob) is not None
    data = json.loads(store.path.read_text())
    edit(next(r for r in data["users"] if r["name"] == "ann"))
    store.path.write_text(json.dumps(data))
    os.utime(store.path, ns=(1, 1))  # a change the running server notices (its stamp differs)
    with pytest.raises(ValueError, match=message):
        store.check()
    # a running server refuses every key until the file is fixed (a tampered file locks the door) ...
    assert store.verify(key) is None and store.verify(bob) is None
    # ... and `ews user remove` can take the broken record out
    assert store.remove("ann") and store.check() is None and store.verify(bob) is not None


def test_every_error_the_app_answers_in_its_own_shape_becomes_an_error_body() -> None:
    from serving.guard import error_body

    bentoml_400 = {
        "error": "2 validation errors for Input",
        "detail": [
            {
                "type": "missing",
                "loc": ["loan", "loan_id"],
                "msg": "Field required",
                "url": "https://errors.x/2",
            },
            {"type": "float_type", "loc": ["loan", "principal"], "msg": "Input should be a number"},
        ],
    }
    b = error_body(400, json.dumps(bentoml_400).encode())
    assert (
        b["error"] == "2 problem(s): loan.loan_id: Field required; loan.principal: Input should be a number"
    )
    assert b["detail"][0] == {"loc": ["loan", "loan_id"], "msg": "Field required", "type": "missing"}
    assert error_body(400, b'[{"error": "Invalid JSON input"}]') == {
        "error": "Invalid JSON input",
        "detail": [],
    }
    assert error_body(404, b"Not Found") == {"error": "Not Found", "detail": []}
    assert "server" in error_body(500, b"Internal Server Error\nTraceback ...")["error"]
    assert "Traceback" not in json.dumps(error_body(500, b"Traceback"))
    ours = {"error": "loan_id: unknown loan id 'X'", "detail": [{"loc": ["loan_id"], "msg": "unknown"}]}
    assert error_body(404, json.dumps(ours).encode())["error"] == ours["error"]  # ours are kept


def test_an_address_sending_wrong_keys_gets_429_without_more_checks_and_known_keys_still_pass(
    tmp_path,
) -> None:
    now = [0.0]
    access, key = _access(tmp_path, tmp_path / "audit.jsonl")
    access.failed_keys = FailedKeys(limit=3, window=10.0, clock=lambda: now[0])
    app = _App()
    guard = _guard(app, access)
    assert anyio.run(_post, guard, key).status_code == 200  # this worker now knows the real key

    async def post(key: str, client: tuple[str, int] = ("10.0.0.1", 5)) -> httpx.Response:
        transport = httpx.ASGITransport(app=guard, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/score", json={}, headers={"authorization": f"Bearer {key}"})

    checks = []
    verify = access.users.verify
    access.users.verify = lambda k: checks.append(k) or verify(k)  # count the scrypt checks
    assert [anyio.run(post, "wrong").status_code for _ in range(3)] == [401, 401, 401]
    r = anyio.run(post, "wrong")
    assert r.status_code == 429 and r.headers["retry-after"] == "10" and len(checks) == 3
    assert anyio.run(post, key).status_code == 200  # a key already verified is never held back
    assert anyio.run(post, "wrong", ("10.0.0.2", 5)).status_code == 401  # another address
    now[0] = 10.5  # the window has passed
    assert anyio.run(post, "wrong").status_code == 401


def test_an_error_answer_sent_in_pieces_is_rewritten_whole_and_other_answers_pass_as_they_are() -> None:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def run() -> None:
        errors = _error_bodies(send)
        await errors(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"x-a", b"1")],
            }
        )
        await errors({"type": "http.response.body", "body": b"Not ", "more_body": True})
        await errors({"type": "http.response.body", "body": b"Found"})
        ok = _error_bodies(send)
        await ok(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await ok({"type": "http.response.body", "body": b"fine", "more_body": True})
        await ok({"type": "http.response.body", "body": b"!"})

    anyio.run(run)
    assert sent[0]["status"] == 404 and (b"x-a", b"1") in sent[0]["headers"]
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "Not Found", "detail": []}
    assert [m.get("body") for m in sent[2:]] == [None, b"fine", b"!"]  # a 200 streams untouched


def test_the_failed_key_table_stays_bounded_however_many_addresses_try() -> None:
    now = [0.0]
    keys = FailedKeys(limit=3, window=10.0, clock=lambda: now[0])
    for i in range(FailedKeys.MAX_ADDRESSES + 500):
        keys.failed(f"2001:db8::{i:x}")
    assert len(keys._seen) == FailedKeys.MAX_ADDRESSES
    for _ in range(3):
        keys.failed("203.0.113.9")
    assert keys.blocked("203.0.113.9")  # the newest address is kept; the oldest were forgotten


def test_a_websocket_is_refused_unheard(tmp_path) -> None:
    access, _ = _access(tmp_path, tmp_path / "audit.jsonl")
    app = _App()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}

    anyio.run(_guard(app, access), {"type": "websocket", "path": "/x"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}] and app.calls == []


def test_a_server_looks_at_the_users_file_at_most_once_per_recheck_interval(tmp_path) -> None:
    now = [100.0]
    writer = UserStore(tmp_path / "users.json")
    ann = writer.add("ann", "officer")
    server = UserStore(writer.path, recheck_after=1.0, clock=lambda: now[0])
    assert server.verify(ann) is not None and server.cached(ann) is not None
    bob = writer.add("bob", "officer")
    writer.remove("ann")
    os.utime(writer.path, ns=(3, 3))  # a change the server's stamp sees
    now[0] += 0.5  # within the interval: the file is not looked at, the old records stand
    assert server.cached(ann) is not None and server.verify(bob) is None
    now[0] += 0.6  # past it: ann's removal and bob's key both take effect
    assert server.cached(ann) is None and server.verify(ann) is None
    assert server.verify(bob) is not None


def test_a_key_removed_while_it_is_being_checked_is_not_cached_as_good(tmp_path, monkeypatch) -> None:
    import serving.users as users

    store = UserStore(tmp_path / "users.json")
    key = store.add("ann", "officer")
    store.add("bob", "officer")
    real_hash = users._hash

    def hash_while_ann_is_removed(secret: str, salt: bytes) -> bytes:
        digest = real_hash(secret, salt)
        store.remove("ann")  # `ews user remove ann` lands during the scrypt ...
        os.utime(store.path, ns=(2, 2))
        store.cached("warm")  # ... and another request re-reads the file before this check ends
        return digest

    monkeypatch.setattr(users, "_hash", hash_while_ann_is_removed)
    assert store.verify(key) is not None  # checked against the records it began with
    monkeypatch.setattr(users, "_hash", real_hash)
    assert store.cached(key) is None  # not remembered past the removal ...
    assert store.verify(key) is None  # ... so the next request is refused


def test_a_users_file_that_cannot_be_written_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch
) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("ann", "officer")
    before = store.path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.add("bob", "officer")
    assert store.path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["users.json"]


def test_users_added_at_the_same_time_are_all_kept(tmp_path, monkeypatch) -> None:
    import threading
    import time

    store = UserStore(tmp_path / "users.json")
    slow_read = UserStore._read

    def read_then_pause(self):
        records = slow_read(self)
        time.sleep(0.05)  # another `ews user add` reads the same file meanwhile
        return records

    monkeypatch.setattr(UserStore, "_read", read_then_pause)
    names = [f"u{i}" for i in range(4)]
    threads = [threading.Thread(target=UserStore(store.path).add, args=(n, "officer")) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(u.name for u in store.users()) == names


def test_two_authorization_headers_are_no_key_whatever_their_order(tmp_path) -> None:
    """A wrong key followed by a valid one passed (the last header won); duplicates are refused."""
    access, key = _access(tmp_path, tmp_path / "audit.jsonl")
    app = _App()
    guard = _guard(app, access)

    async def post(headers: list[tuple[str, str]]) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as c:
            return await c.post("/score", json={"loan_id": "L1"}, headers=httpx.Headers(headers))

    good, bad = ("authorization", f"Bearer {key}"), ("authorization", "Bearer ews_nope_nope")
    assert anyio.run(post, [good]).status_code == 200
    for pair in ([bad, good], [good, bad], [good, good]):
        assert anyio.run(post, pair).status_code == 401, pair
    assert app.calls == ["/score"]  # only the request with one valid key reached the endpoint


def test_a_users_file_broken_while_serving_is_503_not_the_callers_wrong_key(tmp_path) -> None:
    """Every key got the 401 of a wrong key (and counted towards the wrong-key limit) while the users
    file was broken: the caller could not tell that the fault was the server's."""
    access, key = _access(tmp_path, tmp_path / "audit.jsonl")
    access.failed_keys = FailedKeys(limit=2)
    guard = _guard(_App(), access)
    assert anyio.run(_post, guard, key).status_code == 200
    good = access.users.path.read_text()
    access.users.path.write_text("{not json")
    os.utime(access.users.path, ns=(1, 1))
    for _ in range(3):
        r = anyio.run(_post, guard, key)
        assert r.status_code == 503 and "users file is unreadable" in r.json()["error"], r.text
        assert r.headers["retry-after"] == "30"
    assert not access.failed_keys._seen  # none of them counted as the caller's wrong key
    access.users.path.write_text(good)
    os.utime(access.users.path, ns=(2, 2))
    assert anyio.run(_post, guard, key).status_code == 200
