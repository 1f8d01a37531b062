"""The point-in-time feature builder: one implementation for training, the nightly batch and the API.

`build_features(book, as_of, rule)` takes a book (or any subset of its loans with all their rows) and
one or more as-of months and returns one row per performing (loan, as-of month) (`features.labels`) with
every feature of `features.catalog`. Every value at month t comes from performance and house-price rows
dated at or before t, the book's context at t, and attributes fixed at origination, so appending later
rows changes nothing. Window features look back at most `HISTORY_MONTHS`, so a loan sent to the API with
that much history gets exactly its book-wide features.

How: the formulas run on arrays, not frames (`features_at`): performance rows as `PerformanceArrays`,
what origination fixed as `LoanArrays` (one entry per loan), house prices as a `HousePriceIndex` and the
context as a `features.context.ContextIndex`. `build_features` turns a typed `Book` into those arrays
and the result into a frame; the service builds the same arrays straight from its request models
(`serving.loans`), so a single loan pays for no DataFrame and both paths run the same code. Each loan's
performance is laid on a dense month grid (`features.grid`; missing reporting months are holes), and
each window feature is a reduction over the last k grid cells of the target month, gathered by lag.

Features that cannot apply to a loan are missing by design: collateral for an unsecured loan, a credit
line's utilisation for an installment loan, a term for a revolving line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.book import Book
from features.catalog import FEATURE_NAMES, HISTORY_MONTHS
from features.context import ContextIndex
from features.grid import MonthGrid
from features.labels import GridStates, LabelRule, states_on_grid
from features.months import as_month, index_to_month
from features.months import month_index as _midx

MAX_LAG = HISTORY_MONTHS
REVOLVING = "revolving"
_CITY_KEY = 100_000  # month indices stay below this, so city code * _CITY_KEY + month is one sort key


class HousePriceIndex:
    """House price series by city, for "the index level at the latest month at or before t"."""

    def __init__(self, city: Sequence[object], month: np.ndarray, index: np.ndarray) -> None:
        """One entry per (city, month index, level); no missing values (see `of_frame`)."""
        code_of: dict[object, int] = {}
        code = np.fromiter((code_of.setdefault(c, len(code_of)) for c in city), np.int64, len(city))
        self._hold(code_of, code, month, index)

    def _hold(
        self, code_of: dict[object, int], code: np.ndarray, month: np.ndarray, index: np.ndarray
    ) -> None:
        """Keep the entries sorted by (city code, month), the order `at` searches."""
        self._code = code_of
        key = code * _CITY_KEY + np.asarray(month, dtype=np.int64)
        order = np.argsort(key, kind="stable")
        self._keys = key[order]
        self._values = np.asarray(index, dtype=float)[order]

    @classmethod
    def of_series(cls, series: Sequence[tuple[object, np.ndarray, np.ndarray]]) -> HousePriceIndex:
        """The index of whole series, one (city, month indices, levels) each: the same index as the
        entries given one by one, with one Python step per series instead of per entry (the service
        builds one per request)."""
        if not series:
            return cls([], np.empty(0, np.int64), np.empty(0))
        code_of: dict[object, int] = {}
        code = [np.full(len(m), code_of.setdefault(c, len(code_of)), np.int64) for c, m, _ in series]
        index = cls.__new__(cls)  # the entries are already coded: `__init__` would code them one by one
        index._hold(
            code_of,
            np.concatenate(code),
            np.concatenate([np.asarray(m, dtype=np.int64) for _, m, _ in series]),
            np.concatenate([np.asarray(v, dtype=float) for _, _, v in series]),
        )
        return index

    @classmethod
    def of_frame(cls, house_prices: pd.DataFrame) -> HousePriceIndex:
        """The index of a house_prices table (rows with a missing city, month or level are ignored)."""
        hp = house_prices.dropna(subset=["city", "month", "index"])
        return cls(hp["city"].tolist(), _midx(hp["month"]), hp["index"].to_numpy(dtype=float))

    def codes(self, city: Sequence[object]) -> np.ndarray:
        """The code of each city (-1 for a city without a series)."""
        return np.fromiter((self._code.get(c, -1) for c in city), np.int64, len(city))

    def at(self, code: np.ndarray, month: np.ndarray) -> np.ndarray:
        """Level of each city code's series at the latest month at or before `month` (NaN if none)."""
        if len(self._keys) == 0:
            return np.full(len(month), np.nan)
        pos = np.searchsorted(self._keys, code * _CITY_KEY + month, side="right") - 1
        ok = (code >= 0) & (pos >= 0)
        pos = np.clip(pos, 0, len(self._keys) - 1)
        ok &= (self._keys[pos] // _CITY_KEY) == code
        return np.where(ok, self._values[pos], np.nan)


@dataclass(frozen=True)
class PerformanceArrays:
    """Performance rows as arrays, in any order; `loan[r]` is the code of row r's loan (its position in
    `LoanArrays`), and every loan code has at least one row."""

    loan: np.ndarray  # int64
    month: np.ndarray  # int64 month index
    balance: np.ndarray  # float
    scheduled_payment: np.ndarray  # float
    paid_amount: np.ndarray  # float
    days_past_due: np.ndarray  # float
    status: np.ndarray  # object: open, paid_off, charged_off
    restructured: np.ndarray  # bool

    @classmethod
    def of_frame(cls, perf: pd.DataFrame, loan_codes: np.ndarray) -> PerformanceArrays:
        return cls(
            loan=np.asarray(loan_codes, dtype=np.int64),
            month=_midx(perf["month"]),
            balance=perf["balance"].to_numpy(dtype=float, na_value=np.nan),
            scheduled_payment=perf["scheduled_payment"].to_numpy(dtype=float, na_value=np.nan),
            paid_amount=perf["paid_amount"].to_numpy(dtype=float, na_value=np.nan),
            days_past_due=perf["days_past_due"].to_numpy(dtype=float, na_value=np.nan),
            status=perf["status"].to_numpy(dtype=object, na_value=None),
            restructured=perf["restructured"].to_numpy(dtype=bool, na_value=False),
        )


@dataclass(frozen=True)
class LoanArrays:
    """What origination fixed, one entry per loan code: the loan, its borrower and its collateral.

    Text columns are object arrays (None or NaN where missing), numbers float (NaN where missing); a loan
    without collateral has `has_collateral` False and missing collateral fields."""

    loan_id: np.ndarray
    product: np.ndarray
    repayment_type: np.ndarray
    city_tier: np.ndarray
    city: np.ndarray  # "" where missing
    funding_partner: np.ndarray  # "none" where missing
    origination_month: np.ndarray  # month index (float where a date is missing)
    term_months: np.ndarray
    principal: np.ndarray
    interest_rate: np.ndarray
    lien_position: np.ndarray
    borrower_type: np.ndarray
    industry: np.ndarray
    birth_year: np.ndarray
    annual_income: np.ndarray
    bureau_score: np.ndarray
    years_in_business: np.ndarray
    has_collateral: np.ndarray  # bool: the loan names a collateral
    property_type: np.ndarray
    collateral_city: np.ndarray  # "" where missing
    appraisal_value: np.ndarray
    appraisal_month: np.ndarray  # int month index (2000-01 where missing)
    prior_lien_balance: np.ndarray

    @classmethod
    def of_book(cls, book: Book, loan_ids: np.ndarray | pd.Index) -> LoanArrays:
        """The static tables of a book joined for the given loan ids, in that order."""
        L = book.loans.set_index("loan_id").reindex(loan_ids)
        B = book.borrowers.set_index("borrower_id").reindex(L["borrower_id"].to_numpy())
        C = book.collateral.set_index("collateral_id").reindex(L["collateral_id"].to_numpy())

        def num(df: pd.DataFrame, c: str) -> np.ndarray:
            return df[c].to_numpy(dtype=float, na_value=np.nan)

        return cls(
            loan_id=np.asarray(loan_ids, dtype=object),
            product=L["product"].to_numpy(dtype=object),
            repayment_type=L["repayment_type"].to_numpy(dtype=object),
            city_tier=L["city_tier"].to_numpy(dtype=object),
            city=L["city"].fillna("").to_numpy(dtype=object),
            funding_partner=L["funding_partner"].fillna("none").to_numpy(dtype=object),
            origination_month=_midx(L["origination_date"]),
            term_months=num(L, "term_months"),
            principal=num(L, "principal"),
            interest_rate=num(L, "interest_rate"),
            lien_position=num(L, "lien_position"),
            borrower_type=B["borrower_type"].to_numpy(dtype=object),
            industry=B["industry"].to_numpy(dtype=object),
            birth_year=num(B, "birth_year"),
            annual_income=num(B, "annual_income"),
            bureau_score=num(B, "bureau_score"),
            years_in_business=num(B, "years_in_business"),
            has_collateral=L["collateral_id"].notna().to_numpy(dtype=bool),
            property_type=C["property_type"].to_numpy(dtype=object),
            collateral_city=C["city"].fillna("").to_numpy(dtype=object),
            appraisal_value=num(C, "appraisal_value"),
            appraisal_month=_midx(C["appraisal_date"].fillna(pd.Timestamp("2000-01-01"))),
            prior_lien_balance=num(C, "prior_lien_balance"),
        )


@dataclass(frozen=True)
class LoanHistory:
    """Performance rows on the month grid with their states: what every window feature reads."""

    grid: MonthGrid
    states: GridStates
    paid: np.ndarray
    sched: np.ndarray
    bal: np.ndarray
    restr: np.ndarray

    @property
    def performing(self) -> np.ndarray:
        return self.states.performing


def loan_history(rows: PerformanceArrays, loan_index: pd.Index | np.ndarray, rule: LabelRule) -> LoanHistory:
    """Lay the rows of the loans `loan_index` names (by code) on their month grid."""
    g = MonthGrid(rows.loan, rows.month, loan_index)
    st = states_on_grid(g, rows.days_past_due, rows.status, rule)
    return LoanHistory(
        grid=g,
        states=st,
        paid=g.put(rows.paid_amount),
        sched=g.put(rows.scheduled_payment),
        bal=g.put(rows.balance),
        restr=g.put(rows.restructured, False, bool),
    )


def features_at(
    h: LoanHistory,
    cells: np.ndarray,
    loans: LoanArrays,
    prices: HousePriceIndex,
    context: ContextIndex | None,
) -> dict[str, np.ndarray]:
    """Every feature of `features.catalog` at the given grid cells (performing ones: `h.performing`),
    as one array per feature name. The one place each feature formula is written."""
    g, st = h.grid, h.states
    present, dpd, paid, sched, bal, restr = g.present, st.dpd, h.paid, h.sched, h.bal, h.restr
    tgt = np.asarray(cells, dtype=np.int64)
    n = len(tgt)

    # lagged views: column k holds the value k months before the target (NaN/False outside the loan's grid)
    lags = np.arange(MAX_LAG)
    idx = tgt[:, None] - lags[None, :]
    valid = g.offset[tgt][:, None] >= lags[None, :]
    idx = np.where(valid, idx, 0)
    p_l = present[idx] & valid
    # the history starts at the loan's first row inside the window: months missing at the window's start
    # read as before its history, not as gaps, because a request carries only the window and cannot tell
    # the two apart (a book whose row 23 months back is missing would otherwise count one month more)
    first = MAX_LAG - 1 - np.argmax(p_l[:, ::-1], axis=1)
    valid &= lags[None, :] <= first[:, None]
    dpd_l = np.where(p_l, dpd[idx], np.nan)
    paid_l = np.where(p_l, paid[idx], 0.0)
    sched_l = np.where(p_l, sched[idx], 0.0)
    bal_l = np.where(p_l, bal[idx], np.nan)
    restr_l = np.where(p_l, restr[idx], False)
    ev_l = np.where(p_l, st.event[idx], False)

    f: dict[str, np.ndarray] = {}
    f["dpd_now"] = dpd[tgt]
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in (3, 6, 12):
            f[f"max_dpd_{w}m"] = np.nanmax(np.where(p_l[:, :w], dpd_l[:, :w], -1), axis=1).clip(0)
        for w in (6, 12):
            f[f"months_30plus_{w}m"] = (dpd_l[:, :w] >= 30).sum(axis=1).astype(float)
        for w in (3, 12):
            f[f"months_delinquent_{w}m"] = (dpd_l[:, :w] > 0).sum(axis=1).astype(float)
        missed = p_l & (sched_l > 0) & (paid_l <= 0)
        partial = p_l & (paid_l > 0) & (paid_l < sched_l - 0.005)
        for w in (3, 6):
            f[f"missed_payments_{w}m"] = missed[:, :w].sum(axis=1).astype(float)
        for w in (6, 12):
            f[f"partial_payments_{w}m"] = partial[:, :w].sum(axis=1).astype(float)
        for w in (1, 3, 6, 12):
            due = sched_l[:, :w].sum(axis=1)
            f[f"pay_ratio_{w}m"] = np.where(due > 0, np.minimum(paid_l[:, :w].sum(axis=1) / due, 1.0), np.nan)
        delinquent = dpd_l > 0
        f["months_since_delinquency"] = np.where(
            delinquent.any(axis=1), delinquent.argmax(axis=1), MAX_LAG
        ).astype(float)
        f["restructured_24m"] = restr_l.sum(axis=1).astype(float)
        b6 = bal_l[:, 6]
        f["balance_trend_6m"] = np.where(b6 > 0, bal[tgt] / b6 - 1.0, np.nan)
        f["missing_months_12m"] = (valid[:, :12] & ~p_l[:, :12]).sum(axis=1).astype(float)
        f["history_months"] = valid.sum(axis=1).astype(float)
        # cure history: default episodes that ended before t within the window
        ever = ev_l.any(axis=1)
        f["defaulted_24m"] = ever.astype(float)
        last_ev = np.where(ever, ev_l.argmax(axis=1), MAX_LAG)
        f["months_since_cure"] = np.where(ever, last_ev - 1.0, np.nan)
        starts = ev_l & ~np.concatenate([ev_l[:, 1:], np.zeros((n, 1), bool)], axis=1)
        f["default_episodes_24m"] = starts.sum(axis=1).astype(float)
        # the regular installment: the smallest positive amount due in 3 months (skips a bullet month)
        due3 = np.where(p_l[:, :3] & (sched_l[:, :3] > 0), sched_l[:, :3], np.inf).min(axis=1)
        installment = np.where(np.isfinite(due3), due3, 0.0)

    t_m = g.gm[tgt]
    k = g.gloan[tgt]  # each target's loan code
    mob = (t_m - loans.origination_month[k]).astype(float)
    principal = loans.principal[k]
    # an income of 0 is one not declared (as a missing one): never the lowest income, nor a ratio that is
    # left out and so lowers the PD (a declared 0 had scored below the loan's real income)
    income = np.where(loans.annual_income[k] > 0, loans.annual_income[k], np.nan)
    bal_t = bal[tgt]
    revolving = (loans.product[k] == REVOLVING) | (loans.repayment_type[k] == REVOLVING)

    f["borrower_type"] = loans.borrower_type[k]
    f["industry"] = loans.industry[k]
    f["age"] = t_m // 12 - loans.birth_year[k]
    f["annual_income"] = income
    f["bureau_score"] = loans.bureau_score[k]
    f["years_in_business"] = loans.years_in_business[k] + mob / 12.0
    f["product"] = loans.product[k]
    f["repayment_type"] = loans.repayment_type[k]
    f["city_tier"] = loans.city_tier[k]
    f["funding_partner"] = loans.funding_partner[k]
    f["months_on_book"] = mob
    f["remaining_term"] = np.where(revolving, np.nan, loans.term_months[k] - mob)
    f["balance_ratio"] = np.where(revolving, np.nan, bal_t / principal)
    f["interest_rate"] = loans.interest_rate[k]
    with np.errstate(invalid="ignore", divide="ignore"):
        f["payment_to_income"] = np.where((income > 0) & (installment > 0), 12 * installment / income, np.nan)
    f["lien_position"] = loans.lien_position[k]

    # revolving credit lines: principal is the limit, balance the statement, scheduled the minimum due
    with np.errstate(invalid="ignore", divide="ignore"):
        util = bal_l / principal[:, None]
        f["utilisation"] = np.where(revolving, util[:, 0], np.nan)
        f["utilisation_change_3m"] = np.where(revolving, util[:, 0] - util[:, 3], np.nan)
        owed = np.nansum(bal_l[:, 1:4], axis=1)
        f["payment_to_balance_3m"] = np.where(
            revolving & (owed > 0), np.minimum(paid_l[:, :3].sum(axis=1) / owed, 1.0), np.nan
        )
        prev_bal = np.concatenate([bal_l[:, 1:], np.full((n, 1), np.nan)], axis=1)
        at_min = p_l & (sched_l > 0) & (paid_l >= sched_l - 0.005) & (paid_l <= 1.05 * sched_l)
        min_only = at_min & (prev_bal > paid_l + 1.0)
        strain = p_l & (bal_l > prev_bal) & (paid_l <= 1.05 * sched_l)
        f["min_payment_months_6m"] = np.where(revolving, min_only[:, :6].sum(axis=1), np.nan)
        f["strain_months_6m"] = np.where(revolving, strain[:, :6].sum(axis=1), np.nan)

    appraisal = loans.appraisal_value[k]
    prior = loans.prior_lien_balance[k]
    pledged = loans.has_collateral[k] & ~np.isnan(appraisal)
    # an appraisal dated after t was not known at t: the loan is scored as secured by an unknown value
    # (value and LTV features missing), as it was before the revaluation, not with a later value; its
    # city's house prices up to t stay known
    secured = pledged & (loans.appraisal_month[k] <= t_m)
    city = prices.codes(loans.collateral_city[k])
    loan_city = prices.codes(loans.city[k])
    app_m = np.where(secured, loans.appraisal_month[k], 0)
    h_t = prices.at(city, t_m)
    h_app = prices.at(city, app_m)
    h_6 = prices.at(city, t_m - 6)
    h_12 = prices.at(city, t_m - 12)
    has_hpi = secured & ~np.isnan(h_t) & ~np.isnan(h_app)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(has_hpi, appraisal * h_t / h_app, appraisal)
        f["property_type"] = loans.property_type[k]
        f["indexed_value"] = np.where(secured, value, np.nan)
        f["current_ltv"] = np.where(secured, bal_t / value, np.nan)
        f["combined_ltv"] = np.where(secured, (bal_t + prior) / value, np.nan)
        f["ltv_change"] = np.where(secured, f["combined_ltv"] - (principal + prior) / appraisal, np.nan)
        f["hpi_change_6m"] = np.where(pledged, h_t / h_6 - 1.0, np.nan)
        f["hpi_change_12m"] = np.where(pledged, h_t / h_12 - 1.0, np.nan)
        f["hpi_missing"] = np.where(secured, (~has_hpi).astype(float), np.nan)
        f["local_hpi_change_12m"] = prices.at(loan_city, t_m) / prices.at(loan_city, t_m - 12) - 1.0
    f.update((context or ContextIndex(None)).join(t_m, f["industry"]))
    return f


def as_of_months(as_of: Iterable | pd.Timestamp | str) -> np.ndarray:
    """Month indices of one month (text, date, timestamp) or many."""
    months = [as_of] if isinstance(as_of, (str, pd.Timestamp, date)) else list(as_of)
    return np.unique(_midx([as_month(x) for x in months]))


def build_features(
    book: Book,
    as_of: Iterable | pd.Timestamp | str,
    rule: LabelRule | None = None,
    context: pd.DataFrame | ContextIndex | None = None,
) -> pd.DataFrame:
    """Features of every loan performing at each as-of month (DESIGN.md §3-4), one row per (loan, month)
    sorted by as_of and loan_id.

    `rule` says what a default is and how long a cured loan waits (default: 90 DPD, 3 months);
    `context` is the book's `features.context.context_table` (None: context features missing), or that
    table already indexed.
    """
    rule = rule or LabelRule()
    targets_m = as_of_months(as_of)
    perf = book.performance
    cols = ["loan_id", *FEATURE_NAMES]
    if perf.empty or len(targets_m) == 0:
        return _empty(cols)
    codes, loan_index = pd.factorize(perf["loan_id"], sort=True)
    h = loan_history(PerformanceArrays.of_frame(perf, codes), loan_index, rule)
    g = h.grid
    tgt = np.flatnonzero(h.performing & np.isin(g.gm, targets_m))
    if len(tgt) == 0:
        return _empty(cols)
    loans = LoanArrays.of_book(book, loan_index)
    ctx = context if isinstance(context, ContextIndex) else ContextIndex(context)
    f = features_at(h, tgt, loans, HousePriceIndex.of_frame(book.house_prices), ctx)

    res = pd.DataFrame({"loan_id": loan_index[g.gloan[tgt]], "as_of": index_to_month(g.gm[tgt])})
    feats = pd.DataFrame({name: f[name] for name in FEATURE_NAMES})
    res = pd.concat([res, feats], axis=1)
    return res.sort_values(["as_of", "loan_id"], kind="stable").reset_index(drop=True)


def _empty(cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    df["loan_id"] = df["loan_id"].astype("str")
    df.insert(1, "as_of", pd.Series(dtype="datetime64[ns]"))
    return df
