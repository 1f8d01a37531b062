"""A book's performance rows laid on a dense month grid, one contiguous run of cells per loan.

Every window feature, the performing population and the labels are reductions over this grid, gathered
by lag or accumulated along it in numpy: no per-loan Python. A month a loan did not report is a hole
(`present` is False), never a made-up row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.book import order_by_loan_month
from features.months import month_index


class MonthGrid:
    """Cells (loan, month) from each loan's first to its last reported month.

    `pos[r]` is the cell of the r-th row in `order` (rows sorted by loan and month); `gloan` and `gm` give
    each cell's loan code and month index; `start[k]` is loan k's first cell.
    """

    def __init__(self, performance: pd.DataFrame) -> None:
        codes, self.loan_index = pd.factorize(performance["loan_id"], sort=True)
        m = month_index(performance["month"])
        self.order = order_by_loan_month(codes, m)
        lc, m = codes[self.order], np.asarray(m)[self.order].astype(np.int64)
        self.n_loans = len(self.loan_index)
        self.first = np.full(self.n_loans, np.iinfo(np.int64).max)
        self.last = np.full(self.n_loans, np.iinfo(np.int64).min)
        np.minimum.at(self.first, lc, m)
        np.maximum.at(self.last, lc, m)
        length = self.last - self.first + 1
        self.start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        self.size = int(length.sum())
        self.pos = self.start[lc] + (m - self.first[lc])
        self.gloan = np.repeat(np.arange(self.n_loans), length)
        self.offset = np.arange(self.size) - self.start[self.gloan]  # months since the loan's first row
        self.gm = self.offset + self.first[self.gloan]  # month index of every cell
        self.present = np.zeros(self.size, dtype=bool)
        self.present[self.pos] = True
        self._rows = performance

    def put(self, column: str | np.ndarray, fill=np.nan, dtype=float) -> np.ndarray:
        """A column of the performance rows laid on the grid (`fill` in the holes)."""
        vals = self._rows[column].to_numpy() if isinstance(column, str) else np.asarray(column)
        g = np.full(self.size, fill, dtype=dtype)
        g[self.pos] = vals[self.order]
        return g

    def flag(self, mask: pd.Series | np.ndarray) -> np.ndarray:
        """A boolean row mask laid on the grid (False in the holes)."""
        m = mask.to_numpy(dtype=bool, na_value=False) if isinstance(mask, pd.Series) else np.asarray(mask)
        return self.put(m, False, bool)

    def months_since(self, flag: np.ndarray, strictly_before: bool = False) -> np.ndarray:
        """Per cell, months since the latest flagged cell of the same loan at (or strictly before) it;
        a large number where there is none. One accumulate along the grid."""
        idx = np.arange(self.size)
        hit = np.where(flag, idx, -1)
        if strictly_before:
            hit = np.r_[-1, hit[:-1]]
        last = np.maximum.accumulate(hit) if self.size else hit
        none = last < self.start[self.gloan]
        return np.where(none, np.iinfo(np.int32).max, idx - last)

    def months_until(self, flag: np.ndarray) -> np.ndarray:
        """Per cell, months until the next flagged cell of the same loan strictly after it; a large number
        where there is none."""
        idx = np.arange(self.size)
        big = np.iinfo(np.int64).max
        hit = np.where(flag, idx, big)
        nxt = np.r_[np.minimum.accumulate(hit[::-1])[::-1][1:], big] if self.size else hit
        end = self.start[self.gloan] + (self.last - self.first)[self.gloan]
        none = nxt > end
        return np.where(none, np.iinfo(np.int32).max, nxt - idx)
