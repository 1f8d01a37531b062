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
from features.context import context_table
from features.labels import LabelRule
from features.months import as_month
from features.schema import TABLES
from features.validation import DEFAULT_MAX_REJECT_SHARE, load_book, typed_records
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
        """The JSON error body (`serving.api_models.ErrorBody`): field paths as lists, indexes as ints."""
        return {
            "error": str(self),
            "detail": [
                {"loc": [int(p) if p.isdigit() else p for p in loc.split(".")], "msg": msg}
                for loc, msg in self.problems
            ],
        }

    def under(self, prefix: str) -> InputError:
        """The same error with every field path under `prefix` (the request field holding the loan)."""
        return InputError(self.status, [(f"{prefix}.{loc}", msg) for loc, msg in self.problems])


def _window(perf: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    first = as_of - pd.DateOffset(months=HISTORY_MONTHS - 1)
    return perf[(perf["month"] <= as_of) & (perf["month"] >= first)]


def features_of(
    book: Book, loan_id: str, as_of: pd.Timestamp, rule: LabelRule, context: pd.DataFrame | None
) -> pd.DataFrame:
    """The feature row of one loan of a one-loan book; 422 if it is not performing at as_of."""
    book = replace(book, performance=_window(book.performance, as_of))
    row = build_features(book, as_of, rule, context)
    if row.empty:
        last = book.performance[book.performance["month"] == as_of]
        raise _not_performing(loan_id, as_of, last, rule)
    return row


def inputs_book(items: list[LoanInput], prices: pd.DataFrame | None) -> tuple[Book, list[pd.Timestamp]]:
    """Loans given in requests as one typed book (so features are built in one pass) and each loan's
    as-of month. Loan ids must be unique among `items`. Borrower and collateral ids are made unique per
    item, and a request's own house prices become a series of their own, so no item can change another's
    features. The request models have checked every field; here values are only parsed to contract types.
    """
    borrowers, loans, colls, perf, own_hp = [], [], [], [], []
    as_ofs: list[pd.Timestamp] = []
    book_cities: set[str] = set()
    for k, it in enumerate(items):
        tag = f"#{k}"
        b = it.borrower.model_dump()
        b["borrower_id"] += tag
        loan = it.loan.model_dump()
        loan["borrower_id"] += tag
        if it.collateral is not None:
            c = it.collateral.model_dump()
            c["collateral_id"] += tag
            loan["collateral_id"] = c["collateral_id"]
            if it.house_prices is not None:
                # the request's own series (city is not a model feature); it is the borrower's city's too
                # when the property lies there, as local house prices are a feature of every loan
                if loan["city"] == c["city"]:
                    loan["city"] = f"{loan['city']}{tag}"
                c["city"] = f"{c['city']}{tag}"
                own_hp += [{"city": c["city"], "month": h.month, "index": h.index} for h in it.house_prices]
            else:
                book_cities.add(c["city"])
            colls.append(c)
        if not loan["city"].endswith(tag):
            book_cities.add(loan["city"])  # local house prices of the borrower's city, from the book
        borrowers.append(b)
        loans.append(loan)
        t = as_month(it.as_of) if it.as_of else as_month(it.performance[-1].month)
        as_ofs.append(t)
        first = t - pd.DateOffset(months=HISTORY_MONTHS - 1)
        perf += [r.model_dump() for r in it.performance if first <= as_month(r.month) <= t]
    hp = own_hp
    if prices is not None and book_cities:
        sel = prices[prices["city"].isin(book_cities)]
        hp = hp + [
            {"city": c, "month": m, "index": i}
            for c, m, i in zip(sel["city"], sel["month"], sel["index"], strict=True)
        ]
    records = {
        "borrowers": borrowers,
        "loans": loans,
        "collateral": colls,
        "house_prices": hp,
        "performance": perf,
    }
    typed = {name: typed_records(name, rows) for name, rows in records.items()}
    return Book(**typed), as_ofs


def features_of_inputs(
    items: list[LoanInput], prices: pd.DataFrame | None, rule: LabelRule, context: pd.DataFrame | None
) -> tuple[pd.DataFrame, dict[int, InputError]]:
    """Feature rows of many request loans in one pass (in item order) and, per item that
    cannot be scored, its error. The `_item` column says which item a row belongs to. Items whose loan
    id repeats go in later passes."""
    rounds: list[list[int]] = []
    for i, it in enumerate(items):
        for r in rounds:
            if all(items[j].loan.loan_id != it.loan.loan_id for j in r):
                r.append(i)
                break
        else:
            rounds.append([i])
    found: list[pd.DataFrame] = []
    errors: dict[int, InputError] = {}
    for r in rounds:
        book, as_ofs = inputs_book([items[i] for i in r], prices)
        rows = build_features(book, sorted(set(as_ofs)), rule, context)
        want = pd.DataFrame({"_item": r, "loan_id": [items[i].loan.loan_id for i in r], "as_of": as_ofs})
        hit = want.merge(rows, on=["loan_id", "as_of"], how="inner")
        found.append(hit)
        for i, lid, t in want[~want["_item"].isin(hit["_item"])].itertuples(index=False):
            perf = book.performance
            last = perf[(perf["loan_id"] == lid) & (perf["month"] == t)]
            errors[i] = _not_performing(lid, t, last, rule)
    out = pd.concat(found, ignore_index=True).sort_values("_item", kind="stable").reset_index(drop=True)
    return out, errors


def _not_performing(loan_id: str, as_of: pd.Timestamp, last: pd.DataFrame, rule: LabelRule) -> InputError:
    state = (
        f"status {last['status'].iloc[0]}, {int(last['days_past_due'].iloc[0])} days past due"
        if len(last)
        else "no performance row"
    )
    return InputError(
        422,
        [
            (
                "as_of",
                f"loan {loan_id} is not performing at {as_of:%Y-%m} ({state}); only performing loans are "
                f"scored (open, below {rule.dpd_threshold} DPD, and {rule.probation_months} months past any "
                "default)",
            )
        ],
    )


class BookIndex:
    """The configured book held in memory, indexed by loan id for scoring by id."""

    def __init__(self, book: Book, source: str = "", context: pd.DataFrame | None = None) -> None:
        self.source = source
        self.context = (
            context if context is not None else context_table(book.performance, book.loans, book.borrowers)
        )
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
    def load(cls, folder: Path, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> BookIndex:
        """The book with the loans that break the contract set aside (they are unknown ids here)."""
        kept = load_book(folder, max_reject_share)
        return cls(kept.book, str(folder))

    @property
    def house_prices(self) -> pd.DataFrame:
        return self.book.house_prices

    def loan_book(self, loan_id: str, as_of: str | pd.Timestamp | None = None) -> tuple[Book, pd.Timestamp]:
        """One loan with its rows; 404 for an unknown id, 422 for a month the loan has no row for."""
        if loan_id not in self._loans.index:
            raise InputError(404, [("loan_id", f"unknown loan id {loan_id!r}")])
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
