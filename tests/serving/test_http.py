"""The real BentoML server over HTTP: parity with the book-wide scorer, every bad input gets its 4xx."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from features.build import build_features

AS_OF = "2025-12"


@pytest.fixture(scope="module")
def book_wide(demo_generated, demo_context, champion_scorer):
    """Every performing loan of the demo book at AS_OF, scored by the book-wide path (as the batch does),
    with its days past due."""
    rows = build_features(demo_generated.book, AS_OF, context=demo_context)
    return champion_scorer.score(rows).set_index("loan_id").join(rows.set_index("loan_id")[["dpd_now"]])


@pytest.fixture(scope="module")
def loan_ids(book_wide) -> list[str]:
    risky = book_wide.sort_values("pd", ascending=False).index[:10].tolist()
    rest = book_wide.sample(15, random_state=4).index.tolist()
    return risky + rest


def _same(resp: dict, row: pd.Series) -> None:
    assert resp["pd"] == pytest.approx(row["pd"], abs=1e-9)
    assert resp["raw_score"] == pytest.approx(row["raw_score"], abs=1e-9)
    assert resp["grade"] == row["grade"] and resp["tier"] == row["tier"]
    assert resp["watch_list"] == row["watch_list"]
    want = [row[f"reason_{k}_concept"] for k in (1, 2, 3) if row[f"reason_{k}_concept"] is not None]
    assert [r["concept"] for r in resp["reasons"]] == want
    assert [r["text"] for r in resp["reasons"]] == [row[f"reason_{k}_text"] for k in range(1, len(want) + 1)]


def test_score_by_id_equals_the_book_wide_scorer(server, served, book_wide, loan_ids) -> None:
    for lid in loan_ids:
        r = server.post("/score_by_id", json={"loan_id": lid})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "loan-ews-pd-12m" and body["model_version"] == "1"
        assert body["as_of"] == AS_OF and body["loan_id"] == lid
        _same(body, book_wide.loc[lid])
    info = served.admin.post("/model_info", json={}).json()
    for x in loan_ids[:3]:  # the riskiest loans: tiered against their list's calibration-window thresholds
        body = server.post("/score_by_id", json={"loan_id": x}).json()
        t = info["tier_thresholds"][body["watch_list"]]
        assert body["tier"] == (
            "red" if body["pd"] >= t["red"] else "amber" if body["pd"] >= t["amber"] else "green"
        )


def test_score_with_the_loan_in_the_request_equals_the_book_wide_scorer(
    server, book_wide, loan_ids, book_index
) -> None:
    for lid in loan_ids[:12]:
        r = server.post("/score", json={"loan": book_index.request_json(lid, AS_OF)})
        assert r.status_code == 200, r.text
        _same(r.json(), book_wide.loc[lid])
    # without house prices in the request the server uses its book's price table: same score
    body = book_index.request_json(loan_ids[0], AS_OF)
    body.pop("house_prices", None)
    _same(server.post("/score", json={"loan": body}).json(), book_wide.loc[loan_ids[0]])


def test_batch_scores_a_list_in_one_call(server, book_wide, loan_ids, book_index) -> None:
    loans = [book_index.request_json(lid, AS_OF) for lid in loan_ids[:8]]
    r = server.post("/score_batch", json={"loans": loans})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert [s["loan_id"] for s in scores] == loan_ids[:8]
    for s in scores:
        _same(s, book_wide.loc[s["loan_id"]])


def test_a_loan_past_the_threshold_in_a_batch_never_costs_the_others_their_scores(
    server, book_wide, loan_ids, book_index
) -> None:
    """A loan 90+ days past due is routine in a book: it failed the whole batch (422), so a client had to
    copy the performing rule to pre-filter. Now it is an error of its own, and the others are scored."""
    perf = book_index.book.performance
    now = perf[perf["month"] == pd.Timestamp(AS_OF)]
    behind = str(now[now["days_past_due"] >= 90]["loan_id"].iloc[0])
    alone = server.post("/score", json={"loan": book_index.request_json(behind, AS_OF)})
    assert alone.status_code == 422, alone.text
    good = loan_ids[:3]
    loans = [book_index.request_json(lid, AS_OF) for lid in (good[0], behind, *good[1:])]
    r = server.post("/score_batch", json={"loans": loans})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["loan_id"] for s in body["scores"]] == good
    for s in body["scores"]:
        _same(s, book_wide.loc[s["loan_id"]])
    [err] = body["errors"]
    assert err["index"] == 1 and err["loan_id"] == behind and err["status"] == 422, err
    # the same problems /score gives for it alone, under the loan's place in the batch
    assert [d["loc"][:2] for d in err["detail"]] == [["loans", 1]] * len(err["detail"])
    assert [d["msg"] for d in err["detail"]] == [d["msg"] for d in alone.json()["detail"]]


def test_explain_returns_the_full_contribution_vector(server, book_wide, loan_ids, champion_scorer) -> None:
    """The contributions add up to the raw score, and the reasons are concepts in order of weight,
    except for a loan 30+ days past due, whose arrears come first (riskiest loans and a sample: both)."""
    from serving.scorer import ARREARS_FIRST_DPD

    kinds = set()
    for lid in loan_ids:
        r = server.post("/explain", json={"loan_id": lid})
        assert r.status_code == 200, r.text
        e = r.json()
        assert set(e["contributions"]) == set(champion_scorer.bundle.features)
        assert e["base_value"] + sum(e["contributions"].values()) == pytest.approx(e["raw_score"], abs=1e-9)
        assert e["pd"] == pytest.approx(book_wide.loc[lid, "pd"], abs=1e-9)
        first = book_wide.loc[lid, "reason_1_concept"]
        behind = book_wide.loc[lid, "dpd_now"] >= ARREARS_FIRST_DPD
        kinds.add(bool(behind))
        if behind:
            assert first == "arrears", (lid, e["concepts"])
        elif first is not None:  # the weightiest concept the loan's values can tell (a collateral
            # concept of an unsecured loan weighs but cannot be told), then the next ones down
            told = [book_wide.loc[lid, f"reason_{k}_concept"] for k in (1, 2, 3)]
            weights = [e["concepts"][c] for c in told if c is not None]
            assert weights[0] > 0 and weights == sorted(weights, reverse=True), (lid, told, e["concepts"])
    assert kinds == {True, False}


def test_model_info_needs_admin_and_readiness_is_public(served) -> None:
    assert served.officer.post("/model_info", json={}).status_code == 403
    info = served.admin.post("/model_info", json={}).json()
    assert info["model_name"] == "loan-ews-pd-12m" and info["model_version"] == "1"
    assert info["model_ref"] == "champion" and info["windows"]["test"] == ["2024-07", "2024-12"]
    for name in ("early_warning", "in_arrears"):
        assert 0 < info["tier_thresholds"][name]["amber"] < info["tier_thresholds"][name]["red"]
    assert "auc" in info["test_metrics"] and info["loaded_at"]
    assert served.anonymous.get("/readyz").status_code == 200
    assert served.anonymous.get("/livez").status_code == 200
    spec = served.anonymous.get("/docs.json").json()
    schema = str(spec)
    assert "Calibrated probability of the label event" in schema and "LoanInput" in schema


def test_unseen_category_is_scored_and_flagged_not_rejected(server, book_index, loan_ids) -> None:
    body = book_index.request_json(loan_ids[3], AS_OF)
    body["loan"]["funding_partner"] = "Brand New Trust"
    r = server.post("/score", json={"loan": body})
    assert r.status_code == 200, r.text
    assert r.json()["unknown_categories"] == ["funding_partner=Brand New Trust"]


@pytest.fixture(scope="module")
def secured_id(loan_ids, book_index) -> str:
    """A loan with collateral, house prices and a full 24 months of history at AS_OF."""
    for lid in loan_ids:
        body = book_index.request_json(lid, AS_OF)
        if body.get("house_prices") and len(body["performance"]) == 24 and body["collateral"]:
            return lid
    raise AssertionError("no secured loan with 24 months among the sampled loans")


def _bad(server, book_index, lid, mutate):
    body = copy.deepcopy(book_index.request_json(lid, AS_OF))
    mutate(body)
    return server.post("/score", json={"loan": body})


BAD = {
    "missing field": (lambda b: b["loan"].pop("principal"), 400, ["loan", "loan", "principal"]),
    "wrong type": (
        lambda b: b["loan"].__setitem__("term_months", "sixty"),
        400,
        ["loan", "loan", "term_months"],
    ),
    "unknown category": (
        lambda b: b["loan"].__setitem__("product", "payday"),
        400,
        ["loan", "loan", "product"],
    ),
    "negative balance": (
        lambda b: b["performance"][-1].__setitem__("balance", -5.0),
        400,
        ["loan", "performance", 23, "balance"],
    ),
    "month in the future": (lambda b: b.__setitem__("as_of", "2031-01"), 400, ["loan", "as_of"]),
    "rows out of order": (
        lambda b: b["performance"].__setitem__(slice(0, 2), b["performance"][1::-1]),
        400,
        ["loan", "performance", 1, "month"],
    ),
    "row of another loan": (
        lambda b: b["performance"][2].__setitem__("loan_id", "L999999"),
        400,
        ["loan", "performance", 2, "loan_id"],
    ),
    "not the first of the month": (
        lambda b: b["performance"][0].__setitem__("month", "2024-03-15"),
        400,
        ["loan", "performance", 0, "month"],
    ),
    "borrower id mismatch": (
        lambda b: b["loan"].__setitem__("borrower_id", "B-OTHER"),
        400,
        ["loan", "loan", "borrower_id"],
    ),
    "as_of without a row": (lambda b: b.__setitem__("as_of", "2015-01"), 400, ["loan", "as_of"]),
    "origination after the rows": (
        lambda b: b["loan"].__setitem__("origination_date", "2025-11-20"),
        400,
        ["loan", "loan", "origination_date"],
    ),
    "house price month 0": (
        lambda b: b["house_prices"][0].__setitem__("month", 0),
        400,
        ["loan", "house_prices", 0, "month"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_a_4xx_naming_the_field(server, book_index, secured_id, case) -> None:
    mutate, status, loc = BAD[case]
    r = _bad(server, book_index, secured_id, mutate)
    assert r.status_code == status, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]], r.text


def test_bad_ids_lists_and_bodies_get_4xx_and_the_server_keeps_serving(server, book_index, loan_ids) -> None:
    r = server.post("/score_by_id", json={"loan_id": "L-NOT-THERE"})
    assert r.status_code == 404 and "unknown loan id 'L-NOT-THERE'" in r.text
    r = server.post("/score_by_id", json={"loan_id": loan_ids[0], "as_of": "2030-01"})
    assert r.status_code == 422 and "as_of" in r.text
    r = server.post("/score_batch", json={"loans": []})
    assert r.status_code == 400 and "loans" in r.text
    one = book_index.request_json(loan_ids[0], AS_OF)
    r = server.post("/score_batch", json={"loans": [one] * 1001})
    assert r.status_code == 400 and "loans" in r.text and "1000" in r.text
    r = server.post("/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "json" in r.text.lower()
    for body in ({}, {"loan_id": loan_ids[0], "loan": one}):  # a cross-field rule: 400, naming the field
        r = server.post("/explain", json=body)
        assert r.status_code == 400 and "exactly one of loan_id or loan" in r.text, r.text
        assert r.json()["detail"][0]["loc"] == ["loan_id"]
    # a month beside a loan given in full was ignored (scored at the loan's last row): refused
    r = server.post("/explain", json={"loan": one, "as_of": "2025-06"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["as_of"], r.text
    # an unknown field beside the known ones is refused, never ignored (a typo of as_of, say)
    for path, body in (
        ("/score", {"loan": one, "as_off": "2024-01"}),
        ("/score_by_id", {"loan_id": loan_ids[0], "foo": 1}),
        ("/score_batch", {"loans": [one], "foo": 1}),
        ("/explain", {"loan_id": loan_ids[0], "foo": 1}),
    ):
        r = server.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert [d["loc"] for d in r.json()["detail"]] == [
            [next(k for k in body if k not in ("loan", "loan_id", "loans"))]
        ], r.text
    assert server.get("/readyz").status_code == 200
    assert server.post("/score_by_id", json={"loan_id": loan_ids[0]}).status_code == 200
