"""The numba row kernel behind `model.shap_tables`.

Imported on the first `ShapTables.contributions` call, so importing the bundle does not pay numba's
import; compiled once and cached on disk by numba (`cache=True`: a cold compile takes ~2.5 s, a cached load
~0.5 s with numba's import). `nogil=True` lets `ShapTables.contributions` run row ranges in threads.

Per block of rows: bin every used feature once on the whole model's cuts, then group by group add the cell
the rows' bins select to the group's features. The binning follows LightGBM's reading of a value exactly
(see `model.shap_tables`): NaN first, |x| <= KZERO is zero, categories by their truncated code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from model.shap_tables import INT_LIMIT, KZERO  # numba freezes them into the compiled code

BLOCK = 256  # rows binned together, then explained group by group


@njit(cache=True, nogil=True)
def _count_below(cuts: np.ndarray, lo: int, hi: int, x: float) -> int:
    """How many of the sorted cuts[lo:hi] are < x (numpy's searchsorted, side='left')."""
    a, b = lo, hi
    while a < b:
        m = (a + b) >> 1
        if cuts[m] < x:
            a = m + 1
        else:
            b = m
    return a - lo


@njit(cache=True, nogil=True)
def fill_rows(
    X: np.ndarray,
    lo: int,
    hi: int,
    out: np.ndarray,
    kind: np.ndarray,
    cut_ptr: np.ndarray,
    cuts: np.ndarray,
    used: np.ndarray,
    g_ptr: np.ndarray,
    g_feat: np.ndarray,
    lut_ptr: np.ndarray,
    lut: np.ndarray,
    val_off: np.ndarray,
    values: np.ndarray,
    bias: float,
) -> None:
    """Contributions of rows lo..hi-1 of X into out (n x (features + 1), bias last).

    Rows go in blocks, and within a block group by group: one group's lookups and cells stay in cache
    across the block's rows instead of every table passing through the cache once per row. Bins and sums
    are kept feature-major within the block, so the row loop of a group reads and writes contiguously."""
    nf = X.shape[1]
    gbin = np.zeros((nf, BLOCK), dtype=np.int32)
    acc = np.zeros((nf, BLOCK), dtype=np.float64)
    cell = np.zeros(BLOCK, dtype=np.int64)
    for b0 in range(lo, hi, BLOCK):
        m = min(hi, b0 + BLOCK) - b0
        for u in range(used.shape[0]):
            f = used[u]
            c0, c1, row = cut_ptr[f], cut_ptr[f + 1], gbin[f]
            if kind[f] == 0:
                for r in range(m):
                    row[r] = _numeric_bin(X[b0 + r, f], cuts, c0, c1)
            else:
                for r in range(m):
                    row[r] = _categorical_bin(X[b0 + r, f], cuts, c0, c1)
        acc[:, :m] = 0.0
        for g in range(val_off.shape[0]):
            j0 = g_ptr[g]
            k = g_ptr[g + 1] - j0
            v0 = val_off[g]
            cell[:m] = 0
            for j in range(j0, j0 + k):  # the cell of each row: the sum of its features' offsets
                row, offset = gbin[g_feat[j]], lut[lut_ptr[j] :]
                for r in range(m):
                    cell[r] += offset[row[r]]
            vals = values[v0:]
            for j in range(k):  # add the cell's contribution to each of the group's features
                a = acc[g_feat[j0 + j]]
                for r in range(m):
                    a[r] += vals[cell[r] * k + j]
        for r in range(m):
            for f in range(nf):
                out[b0 + r, f] = acc[f, r]
            out[b0 + r, nf] = bias


@njit(cache=True, nogil=True)
def _numeric_bin(x: float, cuts: np.ndarray, c0: int, c1: int) -> int:
    """Intervals 0..nc (x <= cut goes to the lower one), then zero (|x| <= KZERO) nc+1, NaN nc+2."""
    if np.isnan(x):
        return c1 - c0 + 2
    if abs(x) <= KZERO:
        return c1 - c0 + 1
    return _count_below(cuts, c0, c1, x)


@njit(cache=True, nogil=True)
def _categorical_bin(x: float, cuts: np.ndarray, c0: int, c1: int) -> int:
    """The listed codes 0..nc-1 (the value truncated to an int), any other value nc, NaN nc+1."""
    nc = c1 - c0
    if np.isnan(x):
        return nc + 1
    if x <= -1.0 or x >= INT_LIMIT:
        return nc
    code = float(int(x))
    k = _count_below(cuts, c0, c1, code)
    return k if k < nc and cuts[c0 + k] == code else nc
