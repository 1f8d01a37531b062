"""The point-in-time feature builder: one pure function for training, the nightly batch and the API.

`build_features(book, as_of)` takes a book (or any subset of its loans with all their rows) and one or
more as-of months and returns one row per performing (loan, as-of month) with every feature of
`features.catalog`. Every value at month t comes from performance and house-price rows dated at or before
t and from attributes fixed at origination, so appending later rows changes nothing.

How: each loan's performance is laid on a dense month grid (missing reporting months are holes), and each
window feature is a reduction over the last k grid cells of the target month, gathered by lag. This is
hand-vectorised numpy; it runs per chunk of loans, so the book-wide path maps it over loan partitions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.book import Book, order_by_loan_month
from features.catalog import FEATURE_NAMES, HISTORY_MONTHS
from features.months import as_month, index_to_month
from features.months import month_index as _midx

MAX_LAG = HISTORY_MONTHS


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


def build_features(book: Book, as_of: Iterable | pd.Timestamp | str, dpd_threshold: int = 90) -> pd.DataFrame:
    """Features of every loan performing at each as-of month (DESIGN.md §3-4).

    Performing at t: a row for t with status open and days past due below `dpd_threshold`, and no
    default event (DPD at or above the threshold, or a charge-off) at or before t.
    """
    months = [as_of] if isinstance(as_of, (str, pd.Timestamp)) else list(as_of)
    targets_m = np.unique(_midx([as_month(x) for x in months]))
    perf = book.performance
    cols = ["loan_id", *FEATURE_NAMES]
    if perf.empty or len(targets_m) == 0:
        return _empty(cols)
    loan_codes, loan_index = pd.factorize(perf["loan_id"], sort=True)
    m = _midx(perf["month"])
    order = order_by_loan_month(loan_codes, m)
    lc = loan_codes[order]
    m = m[order]
    n_loans = len(loan_index)
    first = np.full(n_loans, np.iinfo(np.int64).max)
    last = np.full(n_loans, np.iinfo(np.int64).min)
    np.minimum.at(first, lc, m)
    np.maximum.at(last, lc, m)
    length = last - first + 1
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    size = int(length.sum())
    pos = start[lc] + (m - first[lc])

    def grid(col: str, fill=np.nan, dtype=float) -> np.ndarray:
        g = np.full(size, fill, dtype=dtype)
        g[pos] = perf[col].to_numpy()[order]
        return g

    present = np.zeros(size, dtype=bool)
    present[pos] = True
    dpd = grid("days_past_due")
    paid = grid("paid_amount")
    sched = grid("scheduled_payment")
    bal = grid("balance")
    restr = grid("restructured", False, bool)
    status = perf["status"]
    is_open = np.zeros(size, dtype=bool)
    is_open[pos] = (status == "open").to_numpy(dtype=bool, na_value=False)[order]
    charged_off = np.zeros(size, dtype=bool)
    charged_off[pos] = (status == "charged_off").to_numpy(dtype=bool, na_value=False)[order]
    gloan = np.repeat(np.arange(n_loans), length)
    gm = np.arange(size) - start[gloan] + first[gloan]  # month index of every grid cell
    offset = gm - first[gloan]
    # first default event per loan (point in time: compared with t below)
    event = present & ((dpd >= dpd_threshold) | charged_off)
    first_event = np.full(n_loans, np.iinfo(np.int64).max)
    np.minimum.at(first_event, gloan[event], gm[event])
    performing = present & is_open & (dpd < dpd_threshold) & (gm < first_event[gloan])
    tgt = np.flatnonzero(performing & np.isin(gm, targets_m))
    if len(tgt) == 0:
        return _empty(cols)

    # lagged views: column k holds the value k months before the target (NaN/False outside the loan's grid)
    lags = np.arange(MAX_LAG)
    idx = tgt[:, None] - lags[None, :]
    valid = offset[tgt][:, None] >= lags[None, :]
    idx = np.where(valid, idx, 0)
    p_l = present[idx] & valid
    dpd_l = np.where(p_l, dpd[idx], np.nan)
    paid_l = np.where(p_l, paid[idx], 0.0)
    sched_l = np.where(p_l, sched[idx], 0.0)
    restr_l = np.where(p_l, restr[idx], False)

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
        b6 = np.where(p_l[:, 6], bal[idx[:, 6]], np.nan)
        f["balance_trend_6m"] = np.where(b6 > 0, bal[tgt] / b6 - 1.0, np.nan)
        f["missing_months_12m"] = (valid[:, :12] & ~p_l[:, :12]).sum(axis=1).astype(float)
        # the regular installment: the smallest positive amount due in 3 months (skips a bullet month)
        due3 = np.where(p_l[:, :3] & (sched_l[:, :3] > 0), sched_l[:, :3], np.inf).min(axis=1)
        installment = np.where(np.isfinite(due3), due3, 0.0)

    t_m = gm[tgt]
    out = pd.DataFrame({"loan_id": loan_index[gloan[tgt]], "as_of_m": t_m})
    loans = book.loans.set_index("loan_id")
    L = loans.reindex(out["loan_id"])
    B = book.borrowers.set_index("borrower_id").reindex(L["borrower_id"].to_numpy())
    C = book.collateral.set_index("collateral_id").reindex(L["collateral_id"].to_numpy())
    orig_m = _midx(L["origination_date"])
    mob = (t_m - orig_m).astype(float)
    principal = L["principal"].to_numpy(dtype=float)
    income = B["annual_income"].to_numpy(dtype=float)
    bal_t = bal[tgt]

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
    f["remaining_term"] = L["term_months"].to_numpy(dtype=float) - mob
    f["balance_ratio"] = bal_t / principal
    f["interest_rate"] = L["interest_rate"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["payment_to_income"] = np.where((income > 0) & (installment > 0), 12 * installment / income, np.nan)
    f["lien_position"] = L["lien_position"].to_numpy(dtype=float, na_value=np.nan)

    secured = L["collateral_id"].notna().to_numpy() & C["appraisal_value"].notna().to_numpy()
    hpi = _hpi_lookup(book.house_prices)
    city = C["city"].fillna("").to_numpy()
    app_m = np.where(secured, _midx(C["appraisal_date"].fillna(pd.Timestamp("2000-01-01"))), 0)
    h_t = hpi(city, t_m)
    h_app = hpi(city, app_m)
    h_6 = hpi(city, t_m - 6)
    h_12 = hpi(city, t_m - 12)
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

    res = pd.DataFrame({"loan_id": out["loan_id"].to_numpy(), "as_of": index_to_month(t_m)})
    feats = pd.DataFrame({name: f[name] for name in FEATURE_NAMES})
    res = pd.concat([res, feats], axis=1)
    return res.sort_values(["as_of", "loan_id"], kind="stable").reset_index(drop=True)


def _empty(cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    df["loan_id"] = df["loan_id"].astype("str")
    df.insert(1, "as_of", pd.Series(dtype="datetime64[ns]"))
    return df
