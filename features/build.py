"""The point-in-time feature builder: one pure function for training, the nightly batch and the API.

`build_features(book, as_of, rule)` takes a book (or any subset of its loans with all their rows) and
one or more as-of months and returns one row per performing (loan, as-of month) (`features.labels`) with
every feature of `features.catalog`. Every value at month t comes from performance and house-price rows
dated at or before t, the book's context at t, and attributes fixed at origination, so appending later
rows changes nothing. Window features look back at most `HISTORY_MONTHS`, so a loan sent to the API with
that much history gets exactly its book-wide features.

How: each loan's performance is laid on a dense month grid (`features.grid`; missing reporting months
are holes), and each window feature is a reduction over the last k grid cells of the target month,
gathered by lag. Hand-vectorised numpy; the book-wide path maps it over partitions of loans.

Features that cannot apply to a loan are missing by design: collateral for an unsecured loan, a credit
line's utilisation for an installment loan, a term for a revolving line.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd

from features.book import Book
from features.catalog import FEATURE_NAMES, HISTORY_MONTHS
from features.context import join_context
from features.grid import MonthGrid
from features.labels import LabelRule, grid_states
from features.months import as_month, index_to_month
from features.months import month_index as _midx

MAX_LAG = HISTORY_MONTHS
REVOLVING = "revolving"


def _hpi_lookup(house_prices: pd.DataFrame):
    """Return f(city_array, month_idx_array) -> index level at the latest month at or before, NaN if none."""
    hp = house_prices.dropna(subset=["city", "month", "index"])
    cities = pd.Index(pd.unique(hp["city"]))
    if len(cities) == 0:
        return lambda city, m: np.full(len(m), np.nan)
    code = cities.get_indexer(hp["city"])
    m = _midx(hp["month"])
    key = code.astype(np.int64) * 100_000 + m
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    vals = hp["index"].to_numpy(dtype=float)[order]

    def lookup(city: np.ndarray, month: np.ndarray) -> np.ndarray:
        c = cities.get_indexer(pd.Index(city))
        q = c.astype(np.int64) * 100_000 + month
        pos = np.searchsorted(key_sorted, q, side="right") - 1
        ok = (c >= 0) & (pos >= 0)
        pos = np.clip(pos, 0, len(key_sorted) - 1)
        ok &= (key_sorted[pos] // 100_000) == c
        return np.where(ok, vals[pos], np.nan)

    return lookup


def as_of_months(as_of: Iterable | pd.Timestamp | str) -> np.ndarray:
    """Month indices of one month (text, date, timestamp) or many."""
    months = [as_of] if isinstance(as_of, (str, pd.Timestamp, date)) else list(as_of)
    return np.unique(_midx([as_month(x) for x in months]))


def build_features(
    book: Book,
    as_of: Iterable | pd.Timestamp | str,
    rule: LabelRule | None = None,
    context: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features of every loan performing at each as-of month (DESIGN.md §3-4).

    `rule` says what a default is and how long a cured loan waits (default: 90 DPD, 3 months);
    `context` is the book's `features.context.context_table` (None: context features missing).
    """
    rule = rule or LabelRule()
    targets_m = as_of_months(as_of)
    perf = book.performance
    cols = ["loan_id", *FEATURE_NAMES]
    if perf.empty or len(targets_m) == 0:
        return _empty(cols)
    g = MonthGrid(perf)
    st = grid_states(perf, rule, g)
    present, dpd = g.present, st.dpd
    paid = g.put("paid_amount")
    sched = g.put("scheduled_payment")
    bal = g.put("balance")
    restr = g.put("restructured", False, bool)
    tgt = np.flatnonzero(st.performing & np.isin(g.gm, targets_m))
    if len(tgt) == 0:
        return _empty(cols)

    # lagged views: column k holds the value k months before the target (NaN/False outside the loan's grid)
    lags = np.arange(MAX_LAG)
    idx = tgt[:, None] - lags[None, :]
    valid = g.offset[tgt][:, None] >= lags[None, :]
    idx = np.where(valid, idx, 0)
    p_l = present[idx] & valid
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
        starts = ev_l & ~np.concatenate([ev_l[:, 1:], np.zeros((len(tgt), 1), bool)], axis=1)
        f["default_episodes_24m"] = starts.sum(axis=1).astype(float)
        # the regular installment: the smallest positive amount due in 3 months (skips a bullet month)
        due3 = np.where(p_l[:, :3] & (sched_l[:, :3] > 0), sched_l[:, :3], np.inf).min(axis=1)
        installment = np.where(np.isfinite(due3), due3, 0.0)

    t_m = g.gm[tgt]
    loan_ids = g.loan_index[g.gloan[tgt]]
    L = book.loans.set_index("loan_id").reindex(loan_ids)
    B = book.borrowers.set_index("borrower_id").reindex(L["borrower_id"].to_numpy())
    C = book.collateral.set_index("collateral_id").reindex(L["collateral_id"].to_numpy())
    orig_m = _midx(L["origination_date"])
    mob = (t_m - orig_m).astype(float)
    principal = L["principal"].to_numpy(dtype=float)
    income = B["annual_income"].to_numpy(dtype=float)
    bal_t = bal[tgt]
    revolving = ((L["product"] == REVOLVING) | (L["repayment_type"] == REVOLVING)).to_numpy(dtype=bool)

    f["borrower_type"] = B["borrower_type"].to_numpy()
    f["industry"] = B["industry"].to_numpy()
    f["age"] = t_m // 12 - B["birth_year"].to_numpy(dtype=float)
    f["annual_income"] = income
    f["bureau_score"] = B["bureau_score"].to_numpy(dtype=float)
    f["years_in_business"] = B["years_in_business"].to_numpy(dtype=float) + mob / 12.0
    f["product"] = L["product"].to_numpy()
    f["repayment_type"] = L["repayment_type"].to_numpy()
    f["city_tier"] = L["city_tier"].to_numpy()
    f["funding_partner"] = L["funding_partner"].fillna("none").to_numpy()
    f["months_on_book"] = mob
    f["remaining_term"] = np.where(revolving, np.nan, L["term_months"].to_numpy(dtype=float) - mob)
    f["balance_ratio"] = np.where(revolving, np.nan, bal_t / principal)
    f["interest_rate"] = L["interest_rate"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["payment_to_income"] = np.where((income > 0) & (installment > 0), 12 * installment / income, np.nan)
    f["lien_position"] = L["lien_position"].to_numpy(dtype=float, na_value=np.nan)

    # revolving credit lines: principal is the limit, balance the statement, scheduled the minimum due
    with np.errstate(invalid="ignore", divide="ignore"):
        util = bal_l / principal[:, None]
        f["utilisation"] = np.where(revolving, util[:, 0], np.nan)
        f["utilisation_change_3m"] = np.where(revolving, util[:, 0] - util[:, 3], np.nan)
        owed = np.nansum(bal_l[:, 1:4], axis=1)
        f["payment_to_balance_3m"] = np.where(
            revolving & (owed > 0), np.minimum(paid_l[:, :3].sum(axis=1) / owed, 1.0), np.nan
        )
        prev_bal = np.concatenate([bal_l[:, 1:], np.full((len(tgt), 1), np.nan)], axis=1)
        at_min = p_l & (sched_l > 0) & (paid_l >= sched_l - 0.005) & (paid_l <= 1.05 * sched_l)
        min_only = at_min & (prev_bal > paid_l + 1.0)
        strain = p_l & (bal_l > prev_bal) & (paid_l <= 1.05 * sched_l)
        f["min_payment_months_6m"] = np.where(revolving, min_only[:, :6].sum(axis=1), np.nan)
        f["strain_months_6m"] = np.where(revolving, strain[:, :6].sum(axis=1), np.nan)

    secured = L["collateral_id"].notna().to_numpy() & C["appraisal_value"].notna().to_numpy()
    hpi = _hpi_lookup(book.house_prices)
    city = C["city"].fillna("").to_numpy()
    app_m = np.where(secured, _midx(C["appraisal_date"].fillna(pd.Timestamp("2000-01-01"))), 0)
    h_t = hpi(city, t_m)
    h_app = hpi(city, app_m)
    h_6 = hpi(city, t_m - 6)
    h_12 = hpi(city, t_m - 12)
    loan_city = L["city"].fillna("").to_numpy()
    appraisal = C["appraisal_value"].to_numpy(dtype=float)
    prior = C["prior_lien_balance"].to_numpy(dtype=float)
    has_hpi = secured & ~np.isnan(h_t) & ~np.isnan(h_app)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(has_hpi, appraisal * h_t / h_app, appraisal)
        f["property_type"] = C["property_type"].to_numpy()
        f["indexed_value"] = np.where(secured, value, np.nan)
        f["current_ltv"] = np.where(secured, bal_t / value, np.nan)
        f["combined_ltv"] = np.where(secured, (bal_t + prior) / value, np.nan)
        f["ltv_change"] = np.where(secured, f["combined_ltv"] - (principal + prior) / appraisal, np.nan)
        f["hpi_change_6m"] = np.where(secured, h_t / h_6 - 1.0, np.nan)
        f["hpi_change_12m"] = np.where(secured, h_t / h_12 - 1.0, np.nan)
        f["hpi_missing"] = np.where(secured, (~has_hpi).astype(float), np.nan)
        f["local_hpi_change_12m"] = hpi(loan_city, t_m) / hpi(loan_city, t_m - 12) - 1.0
    f.update(join_context(context, t_m, f["industry"]))

    res = pd.DataFrame({"loan_id": loan_ids, "as_of": index_to_month(t_m)})
    feats = pd.DataFrame({name: f[name] for name in FEATURE_NAMES})
    res = pd.concat([res, feats], axis=1)
    return res.sort_values(["as_of", "loan_id"], kind="stable").reset_index(drop=True)


def _empty(cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    df["loan_id"] = df["loan_id"].astype("str")
    df.insert(1, "as_of", pd.Series(dtype="datetime64[ns]"))
    return df
