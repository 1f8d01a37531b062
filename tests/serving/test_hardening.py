"""Issue 14 over HTTP on the real server: the hand cases, isolation, keys and roles, the audit log, logs,
what a caller without rights can learn, the OpenAPI document and the server's own metrics folder."""

from __future__ import annotations

import collections
import copy
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from openapi_spec_validator import validate

AS_OF = "2025-12"
POSTS = ("/score", "/score_by_id", "/score_batch", "/explain", "/model_info")
LOAN_READS = ("/score", "/score_by_id", "/score_batch", "/explain")


@pytest.fixture(scope="module")
def loan_body(book_index) -> dict:
    """A secured loan with house prices and 24 months of history, performing at AS_OF."""
    from features.build import build_features

    rows = build_features(book_index.book, AS_OF)
    for lid in rows["loan_id"]:
        body = book_index.request_json(lid, AS_OF)
        if body.get("house_prices") and len(body["performance"]) == 24:
            return body
    raise AssertionError("no secured loan with 24 months of history")


@pytest.fixture(scope="module")
def not_performing_id(book_index) -> str:
    perf = book_index.book.performance
    last = perf[perf["month"] == perf["month"].max()]
    return str(last[last["days_past_due"] >= 90]["loan_id"].iloc[0])


def _body(loan_body: dict, mutate) -> dict:
    b = copy.deepcopy(loan_body)
    mutate(b)
    return {"loan": b}


# ------------------------------------------------------------------------------------------ hand cases


@pytest.mark.parametrize("path", POSTS)
def test_multipart_without_boundary_is_415_on_every_post(served, path) -> None:
    r = served.admin.post(path, content=b"x", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 415, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "content-type"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(served, loan_body, ctype) -> None:
    headers = {"content-type": ctype} if ctype else {}
    r = served.officer.post("/score", content=json.dumps({"loan": loan_body}).encode(), headers=headers)
    assert r.status_code == 415, r.text


@pytest.mark.parametrize(
    "field, loc",
    [
        (
            lambda b: b["performance"][-1].__setitem__("days_past_due", 2**63),
            ["loan", "performance", 23, "days_past_due"],
        ),
        (lambda b: b["loan"].__setitem__("term_months", 2**64), ["loan", "loan", "term_months"]),
        (lambda b: b["loan"].__setitem__("loan_id", "L\x00X"), ["loan", "loan", "loan_id"]),
        (lambda b: b["loan"].__setitem__("loan_id", "L\u202e1000"), ["loan", "loan", "loan_id"]),
        (lambda b: b["loan"].__setitem__("loan_id", "L" * 10_000), ["loan", "loan", "loan_id"]),
        (lambda b: b["house_prices"][0].__setitem__("month", 0), ["loan", "house_prices", 0, "month"]),
    ],
)
def test_out_of_type_values_are_400_naming_the_field(served, loan_body, field, loc) -> None:
    r = served.officer.post("/score", json=_body(loan_body, field))
    assert r.status_code == 400, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]]
    assert "\x00" not in r.text and "\u202e" not in r.text and len(r.text) < 5000  # never echoed back


def test_infinity_and_nan_are_400(served, loan_body) -> None:
    text = json.dumps({"loan": loan_body}, allow_nan=True)
    for literal in ("Infinity", "-Infinity", "NaN"):
        bad = text.replace(
            f'"balance": {loan_body["performance"][-1]["balance"]!r}', f'"balance": {literal}', 1
        )
        assert bad != text
        r = served.officer.post("/score", content=bad.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400 and "finite" in r.text, r.text


@pytest.mark.parametrize("ident", ["L\x00", "L\u202e0001", "L" * 10_000])
def test_bad_ids_by_id_are_400(served, ident) -> None:
    for path in ("/score_by_id", "/explain"):
        r = served.officer.post(path, json={"loan_id": ident})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["loan_id"], r.text


def test_a_20_mb_body_is_413_unread(served) -> None:
    r = served.officer.post("/score", content=b" " * 20_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]

    def stream():  # no Content-Length: refused as soon as it passes the limit
        for _ in range(200):
            yield b" " * 100_000

    r = served.officer.post("/score", content=stream(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert served.officer.get("/readyz").status_code == 200


def test_a_full_batch_fits_its_own_limit(served, loan_body) -> None:
    loans = []
    for i in range(1001):
        b = copy.deepcopy(loan_body)
        b["loan"]["loan_id"] = f"L-{i}"
        for r in b["performance"]:
            r["loan_id"] = f"L-{i}"
        loans.append(b)
    r = served.officer.post("/score_batch", json={"loans": loans})
    assert r.status_code == 400 and ["loans"] in [d["loc"] for d in r.json()["detail"]]  # 1001 > 1000


# ----------------------------------------------------------------------------------------- isolation


def test_poison_requests_never_fail_their_neighbours(
    served, book_index, loan_body, not_performing_id
) -> None:
    """Rounds of 15 valid /score requests and one poisoned one, sent together (issue 14)."""
    from features.build import build_features

    ids = build_features(book_index.book, AS_OF)["loan_id"].sample(60, random_state=3).tolist()
    valid = [{"loan": book_index.request_json(lid, AS_OF)} for lid in ids]
    poisons = [
        _body(loan_body, lambda b: b["performance"][-1].__setitem__("days_past_due", 2**63)),  # 400
        {"loan": book_index.request_json(not_performing_id)},  # 422 from the batch scorer, per item
    ]
    seen: collections.Counter = collections.Counter()
    with (
        httpx.Client(base_url=served.url, headers=served.officer.headers, timeout=60) as c,
        ThreadPoolExecutor(16) as ex,
    ):
        for rnd in range(12):
            bodies = [valid[(rnd * 15 + i) % len(valid)] for i in range(15)] + [poisons[rnd % 2]]
            codes = list(ex.map(lambda b: c.post("/score", json=b).status_code, bodies))
            seen.update(("valid", s) for s in codes[:15])
            seen[("poison", codes[15])] += 1
    assert seen[("valid", 200)] == 12 * 15, seen
    assert seen[("poison", 400)] == 6 and seen[("poison", 422)] == 6, seen


# ------------------------------------------------------------------------------------ keys and roles


def test_every_endpoint_but_the_probes_and_docs_needs_a_key(served, api_keys) -> None:
    for path in POSTS:
        r = served.anonymous.post(path, json={})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    for path in ("/metrics", "/schema.json", "/no-such-path"):
        assert served.anonymous.get(path).status_code == 401, path
    for path in ("/livez", "/healthz", "/readyz", "/docs.json", "/"):
        assert served.anonymous.get(path).status_code == 200, path
    # an unknown key, a real key id with a wrong secret and a malformed header answer the same
    key_id = api_keys["officer"].split("_")[1]
    wrong = [
        f"ews_{key_id}_{'A' * 43}",
        "ews_000000000000_" + "A" * 43,
        "not-a-key",
        api_keys["officer"][:-1],
    ]
    bodies = set()
    for key in wrong:
        r = served.anonymous.post(
            "/score_by_id", json={"loan_id": "L000001"}, headers={"authorization": f"Bearer {key}"}
        )
        assert r.status_code == 401
        bodies.add(r.text)
    r = served.anonymous.post(
        "/score_by_id", json={}, headers={"authorization": f"Basic {api_keys['officer']}"}
    )
    assert r.status_code == 401
    bodies.add(r.text)
    assert len(bodies) == 1 and "officer" not in bodies.pop()


def test_officer_scores_and_reads_loans_admin_also_sees_the_model(served, loan_body) -> None:
    lid = loan_body["loan"]["loan_id"]
    assert served.officer.post("/score", json={"loan": loan_body}).status_code == 200
    assert served.officer.post("/score_by_id", json={"loan_id": lid}).status_code == 200
    assert served.officer.post("/score_batch", json={"loans": [loan_body]}).status_code == 200
    assert served.officer.post("/explain", json={"loan_id": lid}).status_code == 200
    for path in ("/model_info", "/metrics"):
        r = served.officer.request(
            "POST" if path == "/model_info" else "GET", path, json={} if path == "/model_info" else None
        )
        assert r.status_code == 403 and r.json()["detail"][0]["loc"] == ["header", "authorization"], path
    assert served.admin.post("/model_info", json={}).status_code == 200
    assert served.admin.post("/score_by_id", json={"loan_id": lid}).status_code == 200
    metrics = served.admin.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_service_request_total" in metrics.text


def test_no_server_path_leaks_to_a_caller_without_admin(served, demo_book_dir) -> None:
    secret_bits = [str(demo_book_dir), str(demo_book_dir.parent), tempfile.gettempdir() + "/"]
    texts = [
        served.officer.post("/score_by_id", json={"loan_id": "L-NOT-THERE"}).text,
        served.officer.post("/model_info", json={}).text,
        served.anonymous.get("/docs.json").text,
        served.anonymous.get("/").text,
        served.anonymous.post("/model_info", json={}).text,
    ]
    for text in texts:
        assert not any(bit in text for bit in secret_bits), text[:300]
    assert str(demo_book_dir) in served.admin.post("/model_info", json={}).text  # admin sees the book


# --------------------------------------------------------------------------------- audit log and logs


def _audit(served) -> list[dict]:
    return [json.loads(line) for line in served.audit_log.read_text().splitlines()]


def test_every_read_of_a_loan_is_in_the_audit_log(served, loan_body, not_performing_id) -> None:
    before = len(_audit(served))
    lid = loan_body["loan"]["loan_id"]
    served.officer.post("/score_by_id", json={"loan_id": lid, "as_of": "2025-11"})
    served.officer.post("/score_by_id", json={"loan_id": "L-NOT-THERE"})
    served.officer.post("/score_by_id", json={"loan_id": not_performing_id})
    served.admin.post("/explain", json={"loan_id": lid})
    served.officer.post("/score", json={"loan": loan_body})
    served.officer.post("/score_batch", json={"loans": [loan_body]})
    # refused before any loan is read, but a known key's request all the same
    served.officer.post("/score", content=b"{}", headers={"content-type": "text/plain"})
    served.officer.post("/score", content=b" " * (3 * 2**20), headers={"content-type": "application/json"})
    served.anonymous.post("/score_by_id", json={"loan_id": lid})  # 401: no user, no loan read
    served.admin.post("/model_info", json={})  # not a loan read
    new = _audit(served)[before:]
    got = [(r["who"], r["role"], r["endpoint"], r["loan_ids"], r["as_of"], r["status"]) for r in new]
    assert got == [
        ("pytest-officer", "officer", "/score_by_id", [lid], ["2025-11"], 200),
        ("pytest-officer", "officer", "/score_by_id", ["L-NOT-THERE"], [None], 404),
        ("pytest-officer", "officer", "/score_by_id", [not_performing_id], [None], 422),
        ("pytest-admin", "admin", "/explain", [lid], [AS_OF], 200),
        ("pytest-officer", "officer", "/score", [lid], [AS_OF], 200),
        ("pytest-officer", "officer", "/score_batch", [lid], [AS_OF], 200),
        ("pytest-officer", "officer", "/score", [], [], 415),
        ("pytest-officer", "officer", "/score", [], [], 413),
    ]
    assert all(r["model_name"] == "loan-ews-pd-12m" and r["model_version"] == "1" for r in new)
    assert all(r["when"].endswith("+00:00") for r in new)


def test_client_errors_log_one_line_never_a_traceback(served, loan_body) -> None:
    start = served.log.stat().st_size
    served.officer.post("/score", json=_body(loan_body, lambda b: b["loan"].pop("principal")))
    served.officer.post("/score", content=b"{not json", headers={"content-type": "application/json"})
    served.officer.post("/score_by_id", json={"loan_id": "L-NOT-THERE"})
    served.anonymous.post("/score", json={})
    served.officer.get("/readyz")  # a request after them, so their lines are flushed
    new = served.log.read_bytes()[start:].decode(errors="replace")
    assert "Traceback" not in new and "[ERROR]" not in new, new
    assert "400 POST /score: 1 problem(s) at loan.loan.principal" in new
    whole = served.log.read_text(errors="replace")
    assert "Traceback" not in whole, "a request somewhere in the session logged a traceback"


# ------------------------------------------------------------------------------ OpenAPI and metrics


def test_the_openapi_document_validates_and_documents_the_real_errors(served) -> None:
    spec = served.anonymous.get("/docs.json").json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # openapi-spec-validator picks the 3.1 validator from the document
    for path in POSTS:
        responses = spec["paths"][path]["post"]["responses"]
        for code in ("400", "401", "413", "415"):
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"404", "422"} <= set(spec["paths"]["/score_by_id"]["post"]["responses"])
    assert "403" in spec["paths"]["/model_info"]["post"]["responses"]
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "array"
    assert spec["paths"]["/readyz"]["get"]["security"] == []


def test_unknown_paths_are_one_name_in_the_metrics_and_cannot_write_log_lines(served) -> None:
    """A keyless caller sending distinct paths made new Prometheus series each (84 MB of the server's
    folder for 2,000 of them) and a `%0A` in a path printed a forged line in the server's log."""
    forged = "FORGED-LINE-7731 user root deleted"
    paths = [f"/no-such-{i}-zq9" for i in range(40)] + [f"/x%0A2026-12-01T20:00:00+0000 [ERROR] {forged}"]
    for path in paths:
        assert served.anonymous.get(path).status_code == 401, path
    assert served.officer.get("/no-such-with-a-key-zq9").status_code == 404
    metrics = served.admin.get("/metrics").text
    assert "zq9" not in metrics and 'endpoint="/(other)"' in metrics
    served.anonymous.get("/livez")  # let the log catch up
    text = served.log.read_text()
    assert forged not in text and "zq9" not in text, [x for x in text.splitlines() if "zq9" in x][:3]


def test_a_forwarded_for_header_is_not_the_callers_address(served, loan_body) -> None:
    """uvicorn took a loopback caller's X-Forwarded-For as its address: a local client could dodge the
    wrong-key limit with a new address per request and write any address into the server's log."""
    for i in range(3):
        r = served.anonymous.get("/model_info", headers={"x-forwarded-for": f"10.97.{i}.41"})
        assert r.status_code == 401
        forged = {"x-forwarded-for": f"10.98.{i}.7"}
        r = served.officer.post("/score", json={"loan": loan_body}, headers=forged)
        assert r.status_code == 200, r.text
    served.anonymous.get("/livez")  # let the log catch up
    text = served.log.read_text()
    assert "10.97." not in text and "10.98." not in text
    assert "127.0.0.1:" in text  # the access log names the connection's own address


def test_every_error_has_one_shape_that_names_the_field_and_not_the_library(served, loan_body) -> None:
    bad = {"loan": {**loan_body, "loan": {**loan_body["loan"], "principal": "lots"}}}
    r = served.officer.post("/score", json=bad)
    assert r.status_code == 400 and "loan.loan.principal" in r.json()["error"], r.text
    assert "pydantic" not in r.text and all(set(d) <= {"loc", "msg", "type"} for d in r.json()["detail"])
    r = served.officer.get("/no-such-path")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json" and r.json()["error"]
    r = served.officer.request("DELETE", "/score")
    assert r.status_code == 405 and r.json()["detail"] == []


def test_the_front_page_is_the_services_own_and_calls_no_other_host(served) -> None:
    r = served.anonymous.get("/")
    assert r.status_code == 200 and "googletagmanager" not in r.text and "<script" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "<code>/score_by_id</code>" in r.text and 'href="/docs.json"' in r.text


def test_metrics_come_from_this_servers_own_folder(served) -> None:
    """Each `ews serve` runs BentoML with its own BENTOML_HOME (prometheus multiprocess folder) in a
    temp folder, never the host-wide one another server would share or wipe."""
    workers = psutil.Process(served.proc.pid).children(recursive=True)
    dirs = {
        p.environ().get("PROMETHEUS_MULTIPROC_DIR")
        for p in workers
        if "worker.service" in " ".join(p.cmdline())
    }
    assert len(dirs) == 1
    (folder,) = dirs
    assert Path(folder).name == "prometheus_multiproc_dir" and Path(folder).parent.name.startswith(
        "ews-serve-"
    )
    assert Path(folder).is_dir()
