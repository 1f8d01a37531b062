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

    Built from arrays (`loan_codes[r]` in 0..len(loan_index)-1, every code with at least one row), so the
    book-wide path and the service's one-loan path share it; `of_rows` builds it from a performance frame.
    """

    def __init__(self, loan_codes: np.ndarray, months: np.ndarray, loan_index: pd.Index | np.ndarray) -> None:
        codes = np.asarray(loan_codes, dtype=np.int64)
        self.loan_index = loan_index
        self.order = order_by_loan_month(codes, months)
        lc, m = codes[self.order], np.asarray(months)[self.order].astype(np.int64)
        self.n_loans = len(loan_index)
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

    @classmethod
    def of_rows(cls, performance: pd.DataFrame) -> MonthGrid:
        """The grid of a performance frame's rows; loans coded in sorted loan id order."""
        codes, loan_index = pd.factorize(performance["loan_id"], sort=True)
        return cls(codes, month_index(performance["month"]), loan_index)

    def put(self, values: np.ndarray, fill=np.nan, dtype=float) -> np.ndarray:
        """A column of the rows (in their given order) laid on the grid (`fill` in the holes)."""
        g = np.full(self.size, fill, dtype=dtype)
        g[self.pos] = np.asarray(values)[self.order]
        return g

    def flag(self, mask: np.ndarray) -> np.ndarray:
        """A boolean row mask laid on the grid (False in the holes)."""
        return self.put(mask, False, bool)

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
