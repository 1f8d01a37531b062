"""From loans given in a request, or a loan id of the configured book, to their feature rows.

Loans in a request go from the request models straight to the feature builder's arrays
(`request_arrays`) and through its columnar core (`features.build.features_at`), with no frame per
request; a loan of the book goes as a one-loan `Book` through `build_features`, which wraps the same core.
Either way a loan keeps its last `HISTORY_MONTHS` months up to the as-of month, so the API sees exactly
the features the nightly batch sees.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from features.book import Book
from features.build import (
    HousePriceIndex,
    LoanArrays,
    PerformanceArrays,
    build_features,
    features_at,
    loan_history,
)
from features.catalog import HISTORY_MONTHS
from features.context import ContextIndex, context_table
from features.labels import LabelRule, cells_of_codes
from features.months import add_months, as_month, index_to_month, month_index, month_number
from features.schema import TABLES
from features.validation import DEFAULT_MAX_REJECT_SHARE, load_book
from serving.api_models import HousePrice, LoanInput

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
    first = add_months(as_of, -(HISTORY_MONTHS - 1))
    return perf[(perf["month"] <= as_of) & (perf["month"] >= first)]


def features_of(
    book: Book,
    loan_id: str,
    as_of: pd.Timestamp,
    rule: LabelRule,
    context: pd.DataFrame | ContextIndex | None,
) -> pd.DataFrame:
    """The feature row of one loan of a one-loan book; 422 if it is not performing at as_of."""
    book = replace(book, performance=_window(book.performance, as_of))
    row = build_features(book, as_of, rule, context)
    if row.empty:
        last = book.performance[book.performance["month"] == as_of]
        state = (last["status"].iloc[0], int(last["days_past_due"].iloc[0])) if len(last) else None
        raise _not_performing(loan_id, as_of, state, rule)
    return row


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def request_arrays(
    items: Sequence[LoanInput], prices: PriceSeries
) -> tuple[PerformanceArrays, LoanArrays, HousePriceIndex, np.ndarray]:
    """Loans given in requests as the feature builder's arrays, straight from the request models (no
    frame): loan code k is items[k], whatever its loan id, so no item can change another's features.
    Each loan keeps its last `HISTORY_MONTHS` rows up to its as-of month (returned as month indices).

    A request's own house prices are a series of their own (keyed by item, so they never mix with the
    book's or another item's); they are the borrower's city's too when the property lies there, as local
    house prices are a feature of every loan. Other cities take the configured book's series."""
    n = len(items)
    rows: dict[str, list] = {
        k: [] for k in ("loan", "month", "bal", "sched", "paid", "dpd", "status", "restr")
    }
    s: dict[str, list] = {f: [] for f in LoanArrays.__dataclass_fields__}
    own: list[tuple[object, list[HousePrice]]] = []
    book_cities: set[str] = set()
    as_of = np.empty(n, dtype=np.int64)
    for k, it in enumerate(items):
        b, loan, coll = it.borrower, it.loan, it.collateral
        t = month_number(it.as_of if it.as_of is not None else it.performance[-1].month)
        as_of[k] = t
        for r in it.performance:
            m = month_number(r.month)
            if t - HISTORY_MONTHS < m <= t:
                rows["loan"].append(k)
                rows["month"].append(m)
                rows["bal"].append(r.balance)
                rows["sched"].append(r.scheduled_payment)
                rows["paid"].append(r.paid_amount)
                rows["dpd"].append(r.days_past_due)
                rows["status"].append(r.status)
                rows["restr"].append(r.restructured)
        city: object = loan.city
        coll_city: object = ""
        if coll is not None:
            coll_city = coll.city
            if it.house_prices is not None:
                coll_city = (k, coll.city)  # the request's own series
                own.append((coll_city, it.house_prices))
                if loan.city == coll.city:
                    city = coll_city
            else:
                book_cities.add(coll.city)
        if city == loan.city:
            book_cities.add(loan.city)
        s["loan_id"].append(loan.loan_id)
        s["product"].append(loan.product)
        s["repayment_type"].append(loan.repayment_type)
        s["city_tier"].append(loan.city_tier)
        s["city"].append(city)
        s["funding_partner"].append("none" if loan.funding_partner is None else loan.funding_partner)
        s["origination_month"].append(month_number(loan.origination_date))
        s["term_months"].append(loan.term_months)
        s["principal"].append(loan.principal)
        s["interest_rate"].append(loan.interest_rate)
        s["lien_position"].append(_nan(loan.lien_position))
        s["borrower_type"].append(b.borrower_type)
        s["industry"].append(b.industry)
        s["birth_year"].append(_nan(b.birth_year))
        s["annual_income"].append(_nan(b.annual_income))
        s["bureau_score"].append(_nan(b.bureau_score))
        s["years_in_business"].append(_nan(b.years_in_business))
        s["has_collateral"].append(coll is not None)
        s["property_type"].append(None if coll is None else coll.property_type)
        s["collateral_city"].append(coll_city)
        s["appraisal_value"].append(np.nan if coll is None else coll.appraisal_value)
        s["appraisal_month"].append(month_number(coll.appraisal_date) if coll is not None else _NO_APPRAISAL)
        s["prior_lien_balance"].append(np.nan if coll is None else coll.prior_lien_balance)
    perf = PerformanceArrays(
        loan=np.array(rows["loan"], dtype=np.int64),
        month=np.array(rows["month"], dtype=np.int64),
        balance=np.array(rows["bal"], dtype=float),
        scheduled_payment=np.array(rows["sched"], dtype=float),
        paid_amount=np.array(rows["paid"], dtype=float),
        days_past_due=np.array(rows["dpd"], dtype=float),
        status=np.array(rows["status"], dtype=object),
        restructured=np.array(rows["restr"], dtype=bool),
    )
    loans = LoanArrays(**{f: _column(f, v) for f, v in s.items()})
    return perf, loans, prices.index_for(book_cities, own), as_of


_NO_APPRAISAL = 2000 * 12  # the month `LoanArrays.of_book` gives a loan without collateral (never read)
_TEXT = frozenset(
    {
        "loan_id",
        "product",
        "repayment_type",
        "city_tier",
        "city",
        "funding_partner",
        "borrower_type",
        "industry",
        "property_type",
        "collateral_city",
    }
)
_MONTHS = frozenset({"origination_month", "appraisal_month"})


def _column(name: str, values: list) -> np.ndarray:
    """One `LoanArrays` field from per-item values, with the dtype `LoanArrays.of_book` gives it."""
    if name in _TEXT:
        out = np.empty(len(values), dtype=object)
        out[:] = values  # a tuple (a request's own price series) stays one value
        return out
    if name in _MONTHS:
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=bool if name == "has_collateral" else float)


class PriceSeries:
    """The configured book's house price series by city, for the service to join a request's own."""

    CACHED = 256  # indexes of the book's own series kept, by the set of cities they hold

    def __init__(self, house_prices: pd.DataFrame | None) -> None:
        self._series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # A request with no series of its own needs only the book's: its index is built once per set of
        # cities (a request's one or two), not per request (a tenth of a single loan's features' time).
        self._cache: dict[frozenset[str], HousePriceIndex] = {}
        self._cache_lock = threading.Lock()
        if house_prices is None:
            return
        hp = house_prices.dropna(subset=["city", "month", "index"])
        months = month_index(hp["month"])
        levels = hp["index"].to_numpy(dtype=float)
        for city, pos in hp.groupby("city", sort=False).indices.items():
            self._series[city] = (months[pos], levels[pos])

    def index_for(self, cities: set[str], own: list[tuple[object, list[HousePrice]]]) -> HousePriceIndex:
        """The series of `cities` from the book and each request's own, as one index."""
        if not own:
            held = frozenset(c for c in cities if c in self._series)  # bounded by the book's cities
            with self._cache_lock:
                index = self._cache.get(held)
            if index is None:
                index = self._index(held, own)
                with self._cache_lock:
                    if len(self._cache) >= self.CACHED:
                        self._cache.pop(next(iter(self._cache)))
                    self._cache[held] = index
            return index
        return self._index(cities, own)

    def _index(
        self, cities: set[str] | frozenset[str], own: list[tuple[object, list[HousePrice]]]
    ) -> HousePriceIndex:
        series = [
            (
                key,
                np.fromiter((month_number(h.month) for h in own_series), np.int64, len(own_series)),
                np.fromiter((h.index for h in own_series), float, len(own_series)),
            )
            for key, own_series in own
        ]
        series += [(city, *self._series[city]) for city in cities if city in self._series]
        return HousePriceIndex.of_series(series)


def request_features(
    items: Sequence[LoanInput], prices: PriceSeries, rule: LabelRule, context: ContextIndex | None
) -> tuple[dict[str, np.ndarray], list[int], dict[int, InputError]]:
    """Feature columns (`features.build.features_at`, plus loan_id and as_of as month indices) of the
    request loans performing at their as-of month, in item order, the items they belong to, and the
    error of each item that cannot be scored. One pass over all items, however many share a loan id."""
    perf, loans, hpi, as_of = request_arrays(items, prices)
    h = loan_history(perf, loans.loan_id, rule)
    cells = cells_of_codes(h.grid, np.arange(len(items)), as_of)
    ok = (cells >= 0) & h.performing[np.maximum(cells, 0)]
    errors = {
        i: _not_performing(
            items[i].loan.loan_id, index_to_month([as_of[i]])[0], _row_at(items[i], as_of[i]), rule
        )
        for i in np.flatnonzero(~ok).tolist()
    }
    good = np.flatnonzero(ok)
    columns = features_at(h, cells[good], loans, hpi, context)
    columns["loan_id"] = loans.loan_id[good]
    columns["as_of"] = as_of[good]
    return columns, good.tolist(), errors


def _row_at(item: LoanInput, month: int) -> tuple[str, int] | None:
    """(status, days past due) of the item's row for a month index, if it has one."""
    for r in item.performance:
        if month_number(r.month) == month:
            return r.status, r.days_past_due
    return None


def _not_performing(
    loan_id: str, as_of: pd.Timestamp, last: tuple[str, int] | None, rule: LabelRule
) -> InputError:
    state = f"status {last[0]}, {int(last[1])} days past due" if last is not None else "no performance row"
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

    def __init__(
        self,
        book: Book,
        source: str = "",
        context: pd.DataFrame | None = None,
        set_aside: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.set_aside = set_aside or {}  # loan id -> the first validation rule it broke
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
        """The book with the loans that break the contract set aside (asked for, each says its rule)."""
        kept = load_book(folder, max_reject_share)
        return cls(kept.book, str(folder), set_aside=kept.rejected)

    @property
    def house_prices(self) -> pd.DataFrame:
        return self.book.house_prices

    @cached_property
    def price_series(self) -> PriceSeries:
        """The book's house price series by city, for loans given in requests."""
        return PriceSeries(self.book.house_prices)

    @cached_property
    def context_index(self) -> ContextIndex:
        """The book's portfolio context, indexed once for every request."""
        return ContextIndex(self.context)

    def loan_book(self, loan_id: str, as_of: str | pd.Timestamp | None = None) -> tuple[Book, pd.Timestamp]:
        """One loan with its rows; 404 for an unknown id, 422 for a loan set aside by the book's
        validation or a month the loan has no row for."""
        if loan_id in self.set_aside:
            rule = self.set_aside[loan_id]
            raise InputError(
                422, [("loan_id", f"loan {loan_id!r} was set aside by the book's validation ({rule})")]
            )
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
