"""From a loan given in a request, or a loan id of the configured book, to its feature row.

Both paths produce a one-loan `Book` with the loan's last `HISTORY_MONTHS` months up to the as-of month
and call the shared `build_features`, so the API sees exactly the features the nightly batch sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.book import Book
from features.build import build_features
from features.catalog import HISTORY_MONTHS
from features.months import as_month
from features.schema import TABLES
from features.validation import load_book, validate_tables
from serving.api_models import LoanInput

log = logging.getLogger(__name__)


@dataclass
class InputError(Exception):
    """A request the service cannot score: HTTP status, and (field path, message) pairs."""

    status: int
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{loc}: {msg}" for loc, msg in self.problems)

    def body(self) -> dict:
        return {
            "error": str(self),
            "detail": [{"loc": loc.split("."), "msg": msg} for loc, msg in self.problems],
        }


def _window(perf: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    first = as_of - pd.DateOffset(months=HISTORY_MONTHS - 1)
    return perf[(perf["month"] <= as_of) & (perf["month"] >= first)]


def features_of(book: Book, loan_id: str, as_of: pd.Timestamp, dpd_threshold: int) -> pd.DataFrame:
    """The feature row of one loan of a one-loan book; 422 if it is not performing at as_of."""
    book = replace(book, performance=_window(book.performance, as_of))
    row = build_features(book, as_of, dpd_threshold)
    if row.empty:
        last = book.performance[book.performance["month"] == as_of]
        state = (
            f"status {last['status'].iloc[0]}, {int(last['days_past_due'].iloc[0])} days past due"
            if len(last)
            else "no performance row"
        )
        raise InputError(
            422,
            [
                (
                    "as_of",
                    f"loan {loan_id} is not performing at {as_of:%Y-%m} ({state}); only performing "
                    f"loans are scored (open, below {dpd_threshold} DPD, never defaulted)",
                )
            ],
        )
    return row


def input_book(item: LoanInput, prices: pd.DataFrame | None) -> tuple[Book, pd.Timestamp]:
    """The request's loan as a typed one-loan book, checked against the book contract."""
    lid = item.loan.loan_id
    perf = pd.DataFrame([r.model_dump() for r in item.performance])
    if item.house_prices is not None and item.collateral is not None:
        hp = pd.DataFrame(
            [{"city": item.collateral.city, **r.model_dump()} for r in item.house_prices],
            columns=TABLES["house_prices"].column_names,
        )
    elif prices is not None and item.collateral is not None:
        hp = prices[prices["city"] == item.collateral.city]
    else:
        hp = pd.DataFrame(columns=TABLES["house_prices"].column_names)
    raw = {
        "borrowers": pd.DataFrame([item.borrower.model_dump()]),
        "loans": pd.DataFrame([item.loan.model_dump()]),
        "collateral": pd.DataFrame(
            [item.collateral.model_dump()] if item.collateral else [],
            columns=TABLES["collateral"].column_names,
        ),
        "house_prices": hp.reset_index(drop=True),
        "performance": perf,
    }
    report = validate_tables(raw)
    if not report.ok:
        raise InputError(
            422, [(f"{p.table}.{p.column or '*'}", f"[{p.rule}] {p.message}") for p in report.errors]
        )
    book = report.book
    assert book is not None
    as_of = as_month(item.as_of) if item.as_of else book.performance["month"].max()
    log.debug("request loan %s as of %s", lid, as_of)
    return book, as_of


class BookIndex:
    """The configured book held in memory, indexed by loan id for scoring by id."""

    def __init__(self, book: Book, source: str = "") -> None:
        self.source = source
        perf = book.performance.sort_values(["loan_id", "month"], kind="stable").reset_index(drop=True)
        self.book = replace(book, performance=perf)
        ids = perf["loan_id"].to_numpy()
        self._ids, self._start = np.unique(ids, return_index=True)
        self._end = np.r_[self._start[1:], len(ids)]
        self._loans = book.loans.set_index("loan_id", drop=False)
        self._borrowers = book.borrowers.set_index("borrower_id", drop=False)
        self._collateral = book.collateral.set_index("collateral_id", drop=False)
        self.last_month = book.performance["month"].max()

    @classmethod
    def load(cls, folder: Path) -> BookIndex:
        return cls(load_book(folder), str(folder))

    @property
    def house_prices(self) -> pd.DataFrame:
        return self.book.house_prices

    def loan_book(self, loan_id: str, as_of: str | pd.Timestamp | None = None) -> tuple[Book, pd.Timestamp]:
        """One loan with its rows; 404 for an unknown id, 422 for a month the loan has no row for."""
        if loan_id not in self._loans.index:
            raise InputError(404, [("loan_id", f"unknown loan id {loan_id!r} in book {self.source}")])
        i = np.searchsorted(self._ids, loan_id)
        if i >= len(self._ids) or self._ids[i] != loan_id:
            raise InputError(422, [("loan_id", f"loan {loan_id!r} has no performance rows")])
        perf = self.book.performance.iloc[self._start[i] : self._end[i]]
        t = perf["month"].max() if as_of is None else as_month(as_of)
        if t > self.last_month:
            raise InputError(
                422, [("as_of", f"{t:%Y-%m} is after the book's last month {self.last_month:%Y-%m}")]
            )
        if not (perf["month"] == t).any():
            raise InputError(422, [("as_of", f"loan {loan_id!r} has no performance row for {t:%Y-%m}")])
        loan = self._loans.loc[[loan_id]].reset_index(drop=True)
        borrower = self._borrowers.loc[loan["borrower_id"]].reset_index(drop=True)
        cid = loan["collateral_id"].dropna()
        coll = (
            self._collateral.loc[cid].reset_index(drop=True) if len(cid) else self.book.collateral.iloc[0:0]
        )
        return Book(borrower, loan, coll, self.book.house_prices, perf), t

    def request_json(self, loan_id: str, as_of: str | pd.Timestamp | None = None) -> dict:
        """The loan as a `/score` request body (the contract's fields, JSON-ready): what a lender's
        system would send for a loan of this book. Used by tests and the latency benchmark."""
        book, t = self.loan_book(loan_id, as_of)
        perf = _window(book.performance, t)

        def records(df: pd.DataFrame, table: str) -> list[dict]:
            cols = [c for c in TABLES[table].column_names if c in df.columns]
            out = []
            for r in df[cols].to_dict("records"):
                out.append({k: _json(v) for k, v in r.items()})
            return out

        body = {
            "borrower": records(book.borrowers, "borrowers")[0],
            "loan": records(book.loans, "loans")[0],
            "collateral": (records(book.collateral, "collateral") or [None])[0],
            "performance": records(perf, "performance"),
            "as_of": f"{t:%Y-%m}",
        }
        coll = body["collateral"]
        if coll is not None:
            hp = book.house_prices[
                (book.house_prices["city"] == coll["city"]) & (book.house_prices["month"] <= t)
            ]
            body["house_prices"] = [
                {"month": f"{m:%Y-%m}", "index": float(i)}
                for m, i in zip(hp["month"], hp["index"], strict=True)
            ]
        return body


def _json(v: object) -> object:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return v.date().isoformat()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v
