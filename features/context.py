"""Portfolio context: the book's own arrears and roll rates at each month, overall and by industry.

A borrower's risk moves with the cycle (macro stress, an industry's slump) that no loan-level field shows,
but the book shows it: how many of its loans are behind now, and how many current loans fell behind in
the last three months. These rates at month t use only rows dated at or before t, so they are point in
time like every other feature. The table is computed once over the whole book (the batch and the panel
pass it to every chunk; the service computes it from its book at startup) and joined by (month, segment).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.book import order_by_loan_month
from features.months import month_index

CONTEXT_FEATURES = (
    "book_arrears_rate",
    "book_arrears_change_6m",
    "book_roll_rate_3m",
    "book_roll_rate_change_3m",
    "industry_arrears_rate",
    "industry_roll_rate_3m",
)
BOOK_FEATURES = CONTEXT_FEATURES[:4]  # the book-wide rates (the rest are the borrower's industry's)
NO_INDUSTRY = "(none)"
MIN_LOANS = 30  # a segment-month with fewer open loans has no rate (too noisy to mean anything)
# how far back the rates at month t reach: the 6-month change of the arrears rate (t-6), the 3-month change
# of a 3-month roll rate (t-3 back to t-5, each against its previous month's state, t-6); kept generous,
# so a table over the months [t - LOOKBACK_MONTHS, t] has exactly the full table's values at t
LOOKBACK_MONTHS = 12


def context_table(performance: pd.DataFrame, loans: pd.DataFrame, borrowers: pd.DataFrame) -> pd.DataFrame:
    """One row per (month index, industry) with the book-wide and industry rates at that month.

    `performance` needs loan_id, month, days_past_due and status; rows that do not parse are ignored.
    """
    industry_of = _industry_of_loans(loans, borrowers)
    p = performance
    codes, ids = pd.factorize(p["loan_id"])
    m = month_index(pd.to_datetime(p["month"], errors="coerce")).astype(float)
    dpd = pd.to_numeric(p["days_past_due"], errors="coerce").to_numpy(dtype=float)
    is_open = (p["status"] == "open").to_numpy(dtype=bool, na_value=False)
    ok = (codes >= 0) & ~np.isnan(m) & ~np.isnan(dpd) & is_open
    order = order_by_loan_month(codes, m)
    c, mo, d, o = codes[order], m[order], dpd[order], ok[order]
    prev_same = np.r_[False, (c[1:] == c[:-1]) & (mo[1:] == mo[:-1] + 1)]
    prev_current = np.r_[False, (d[:-1] == 0) & o[:-1]] & prev_same
    if not o.any():
        return _empty()
    # counts per (industry, month) cell by bincount on integer codes: the same integers a groupby gives
    names = industry_of.reindex(pd.Index(ids)).fillna(NO_INDUSTRY).to_numpy(dtype=object)
    seg_codes, industries = pd.factorize(names)
    seg = seg_codes[np.maximum(c, 0)][o]
    months = mo[o].astype(np.int64)
    m0, n_months = int(months.min()), int(months.max() - months.min()) + 1
    cell = seg * n_months + (months - m0)
    n_cells = len(industries) * n_months

    def counts(flag: np.ndarray | None) -> np.ndarray:  # [industry x month]
        w = None if flag is None else flag[o].astype(float)
        return np.bincount(cell, weights=w, minlength=n_cells).reshape(len(industries), n_months)

    cells = {
        "open": counts(None),
        "behind": counts(d > 0),
        "prev_current": counts(prev_current),
        "rolled": counts(prev_current & (d > 0)),
    }
    month_axis = pd.Index(np.arange(m0, m0 + n_months), name="m")
    b = _rates(pd.DataFrame({k: v.sum(axis=0) for k, v in cells.items()}, index=month_axis))
    out = []
    for k in np.argsort(np.asarray(industries, dtype=str), kind="stable"):  # industries in name order
        if cells["open"][k].sum() == 0:
            continue
        r = _rates(pd.DataFrame({key: v[k] for key, v in cells.items()}, index=month_axis))
        out.append(
            pd.DataFrame(
                {
                    "m": month_axis,
                    "industry": industries[k],
                    "book_arrears_rate": b["arrears"].to_numpy(),
                    "book_arrears_change_6m": b["arrears_change_6m"].to_numpy(),
                    "book_roll_rate_3m": b["roll_3m"].to_numpy(),
                    "book_roll_rate_change_3m": b["roll_change_3m"].to_numpy(),
                    "industry_arrears_rate": r["arrears"].to_numpy(),
                    "industry_roll_rate_3m": r["roll_3m"].to_numpy(),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def _rates(g: pd.DataFrame) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        arrears = np.where(g["open"] >= MIN_LOANS, g["behind"] / g["open"], np.nan)
        pc3 = g["prev_current"].rolling(3, min_periods=3).sum()
        ro3 = g["rolled"].rolling(3, min_periods=3).sum()
        roll = np.where(pc3 >= MIN_LOANS, ro3 / pc3, np.nan)
    a = pd.Series(arrears, index=g.index)
    r = pd.Series(roll, index=g.index)
    return pd.DataFrame(
        {"arrears": a, "arrears_change_6m": a - a.shift(6), "roll_3m": r, "roll_change_3m": r - r.shift(3)},
        index=g.index,
    )


def _industry_of_loans(loans: pd.DataFrame, borrowers: pd.DataFrame) -> pd.Series:
    ind = borrowers.drop_duplicates("borrower_id").set_index("borrower_id")["industry"]
    lo = loans.drop_duplicates("loan_id")
    return pd.Series(
        ind.reindex(lo["borrower_id"].to_numpy()).to_numpy(dtype=object), index=lo["loan_id"].to_numpy()
    )


def _empty() -> pd.DataFrame:
    cols = {"m": pd.Series(dtype=np.int64), "industry": pd.Series(dtype=object)}
    cols.update({c: pd.Series(dtype=float) for c in CONTEXT_FEATURES})
    return pd.DataFrame(cols)


class ContextIndex:
    """A context table indexed once for joins by (month index, industry): built once per book (the
    service at start-up, the batch and the panel per call), joined for any number of rows."""

    def __init__(self, table: pd.DataFrame | None) -> None:
        self.empty = table is None or table.empty
        if self.empty:
            return
        months = table["m"].to_numpy(dtype=np.int64).tolist()
        self._pos = {key: i for i, key in enumerate(zip(months, table["industry"].tolist(), strict=True))}
        if len(self._pos) != len(table):
            raise ValueError("the context table has more than one row for a (month, industry)")
        self._book_pos: dict[int, int] = {}
        for i, m in enumerate(months):  # the book-wide rates of a month: its first row
            self._book_pos.setdefault(m, i)
        self._values = {c: table[c].to_numpy(dtype=float) for c in CONTEXT_FEATURES}

    def join(self, months: np.ndarray, industry: np.ndarray) -> dict[str, np.ndarray]:
        """The context features of rows given by month index and industry (NaN where the table has none)."""
        n = len(months)
        if self.empty:
            return {c: np.full(n, np.nan) for c in CONTEXT_FEATURES}
        ms = np.asarray(months, dtype=np.int64).tolist()
        pos = np.fromiter(
            (self._pos.get((m, _segment(i)), -1) for m, i in zip(ms, industry, strict=True)), np.int64, n
        )
        out = {}
        for c in CONTEXT_FEATURES:
            v = self._values[c]
            out[c] = np.where(pos >= 0, v[np.maximum(pos, 0)], np.nan)
        # an industry the table lacks still has the book-wide rates of its month
        bpos = np.fromiter((self._book_pos.get(m, -1) for m in ms), np.int64, n)
        for c in BOOK_FEATURES:
            v = self._values[c]
            out[c] = np.where(bpos >= 0, v[np.maximum(bpos, 0)], np.nan)
        return out


def _segment(industry: object) -> object:
    """The context segment of a borrower's industry: its own, or NO_INDUSTRY when it has none."""
    if industry is None or industry is pd.NA or (isinstance(industry, float) and industry != industry):
        return NO_INDUSTRY
    return industry


def join_context(
    table: pd.DataFrame | None, months: np.ndarray, industry: np.ndarray
) -> dict[str, np.ndarray]:
    """The context features of rows given by month index and industry (NaN where the table has none)."""
    return ContextIndex(table).join(months, industry)
