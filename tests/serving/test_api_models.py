"""The request models against the book contract they are derived from, and their own bounds (no server)."""

from __future__ import annotations

import copy
import json
import typing

import pytest
from pydantic import ValidationError

from features.catalog import HISTORY_MONTHS
from features.schema import TABLES
from serving.api_models import (
    EXAMPLE_LOAN,
    INT64_MAX,
    Borrower,
    Collateral,
    HousePrice,
    Loan,
    LoanInput,
    PerformanceRow,
)

MODELS = {
    "borrowers": Borrower,
    "loans": Loan,
    "collateral": Collateral,
    "house_prices": HousePrice,
    "performance": PerformanceRow,
}
NOT_IN_REQUEST = {("house_prices", "city")}  # a request's prices are the collateral city's
KIND = {"str": "string", "int": "integer", "float": "number", "date": "string", "month": "string"}


def _prop(model, name: str) -> tuple[dict, bool]:
    """A field's JSON schema without the null branch, and whether null is allowed."""
    p = model.model_json_schema()["properties"][name]
    branches = p.get("anyOf", [p])
    nullable = {"type": "null"} in branches
    (schema,) = [b for b in branches if b != {"type": "null"}]
    return schema, nullable


@pytest.mark.parametrize("table", list(MODELS))
def test_request_models_follow_the_book_contract(table: str) -> None:
    model, spec = MODELS[table], TABLES[table]
    contract = {c.name for c in spec.columns} - {c for t, c in NOT_IN_REQUEST if t == table}
    assert set(model.model_fields) == contract, "request fields and contract columns differ"
    for c in spec.columns:
        if (table, c.name) in NOT_IN_REQUEST:
            continue
        schema, nullable = _prop(model, c.name)
        assert nullable == c.nullable, f"{table}.{c.name}: nullable"
        field = model.model_fields[c.name]
        # required exactly when the contract has no null and no default; the default is the contract's
        assert field.is_required() == (not c.nullable and c.name not in spec.defaults), f"{c.name}: required"
        if c.name in spec.defaults:
            assert field.default == spec.defaults[c.name], f"{table}.{c.name}: default"
        if c.kind == "bool":
            assert schema["type"] == "boolean"
            continue
        assert schema["type"] == KIND[c.kind], f"{table}.{c.name}: type"
        assert schema.get("enum") == (list(c.allowed) if c.allowed else None), f"{table}.{c.name}: allowed"
        assert schema.get("minimum") == c.min or (c.kind == "int" and c.min is None), f"{table}.{c.name}: min"
        assert schema.get("exclusiveMinimum") == c.min_exclusive, f"{table}.{c.name}: min_exclusive"
        assert schema.get("exclusiveMaximum") == c.max_exclusive, f"{table}.{c.name}: max_exclusive"
        if c.kind == "int" and not c.allowed:
            assert schema["maximum"] == INT64_MAX, f"{table}.{c.name}: no bound beyond the contract's"
        else:
            assert "maximum" not in schema, f"{table}.{c.name}: no bound beyond the contract's"
        assert c.description.rstrip(".") in model.model_fields[c.name].description


def test_history_length_is_the_feature_builders() -> None:
    assert LoanInput.model_json_schema()["properties"]["performance"]["maxItems"] == HISTORY_MONTHS


def test_literals_are_the_contracts_values() -> None:
    for model, field, table in ((Loan, "product", "loans"), (PerformanceRow, "status", "performance")):
        assert typing.get_args(model.model_fields[field].annotation) == TABLES[table].column(field).allowed


def _errors(body: dict) -> list[tuple]:
    try:
        LoanInput.model_validate_json(json.dumps(body))
    except ValidationError as e:
        return [e["loc"] for e in e.errors()]
    return []


def test_the_documented_example_is_valid() -> None:
    assert _errors(EXAMPLE_LOAN) == []


@pytest.mark.parametrize(
    "mutate, loc",
    [
        (
            lambda b: b["performance"][0].__setitem__("days_past_due", 2**63),
            ("performance", 0, "days_past_due"),
        ),
        (lambda b: b["loan"].__setitem__("term_months", 2**63), ("loan", "term_months")),
        (lambda b: b["performance"][1].__setitem__("balance", 1e400), ("performance", 1, "balance")),
        (lambda b: b["loan"].__setitem__("loan_id", "L\x00"), ("loan", "loan_id")),
        (lambda b: b["borrower"].__setitem__("industry", "x\u202egnp.exe"), ("borrower", "industry")),
        (lambda b: b["loan"].__setitem__("city", "c" * 201), ("loan", "city")),
        (lambda b: b["loan"].__setitem__("origination_date", 0), ("loan", "origination_date")),
        (lambda b: b["loan"].__setitem__("origination_date", "0001-01-01"), ("loan", "origination_date")),
        (
            lambda b: b["performance"][2].__setitem__("days_past_due", "15"),
            ("performance", 2, "days_past_due"),
        ),
        (lambda b: b["performance"][1].__setitem__("status", "paid_off"), ("performance", 2, "status")),
        # digits of other scripts are not ASCII digits (the OpenAPI pattern says [0-9])
        (lambda b: b.__setitem__("as_of", "\uff12\uff10\uff12\uff14-\uff10\uff14"), ("as_of",)),
        (
            lambda b: b["performance"][2].__setitem__("month", "2024-\u0660\u0664"),
            ("performance", 2, "month"),
        ),
        (
            lambda b: b["loan"].__setitem__("origination_date", "2024-01-\u0661\u0665"),
            ("loan", "origination_date"),
        ),
        (lambda b: b["performance"][2].__setitem__("month", "2024-13"), ("performance", 2, "month")),
        (lambda b: b["performance"][2].__setitem__("month", "2024-04-15"), ("performance", 2, "month")),
    ],
)
def test_bounds_beyond_the_contract(mutate, loc) -> None:
    body = copy.deepcopy(EXAMPLE_LOAN)
    mutate(body)
    assert loc in _errors(body)


def test_nan_and_infinity_literals_are_refused() -> None:
    text = json.dumps(EXAMPLE_LOAN).replace('"balance": 11750.0', '"balance": NaN')
    with pytest.raises(ValidationError, match="finite"):
        LoanInput.model_validate_json(text)
    text = json.dumps(EXAMPLE_LOAN).replace('"balance": 11750.0', '"balance": Infinity')
    with pytest.raises(ValidationError, match="finite"):
        LoanInput.model_validate_json(text)
