"""The numba row loop behind `model.shap_tables` (imported on first use, so importing the bundle does not
pay numba's import; compiled once and cached on disk by numba, `cache=True`).

Each row: bin every used feature once on the whole model's cuts, then per group add the table cell that the
row's bins select to the group's features. The binning follows LightGBM's reading of a value exactly (see
`model.shap_tables`): NaN first, |x| <= KZERO is zero, categories by truncated code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

KZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float literal 1e-35f, read as double)
INT_LIMIT = 2147483648.0  # a category code at or above 2**31 is no int: LightGBM sends it right
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
    for b0 in range(lo, hi, BLOCK):
        m = min(hi, b0 + BLOCK) - b0
        for r in range(m):
            for u in range(used.shape[0]):
                f = used[u]
                gbin[f, r] = _bin(X[b0 + r, f], kind[f], cuts, cut_ptr[f], cut_ptr[f + 1])
        acc[:, :m] = 0.0
        for g in range(val_off.shape[0]):
            j0 = g_ptr[g]
            k = g_ptr[g + 1] - j0
            v0 = val_off[g]
            if k == 3:  # the common case (trees of 4 leaves): unrolled
                f0, f1, f2 = g_feat[j0], g_feat[j0 + 1], g_feat[j0 + 2]
                l0, l1, l2 = lut_ptr[j0], lut_ptr[j0 + 1], lut_ptr[j0 + 2]
                for r in range(m):
                    base = v0 + 3 * (lut[l0 + gbin[f0, r]] + lut[l1 + gbin[f1, r]] + lut[l2 + gbin[f2, r]])
                    acc[f0, r] += values[base]
                    acc[f1, r] += values[base + 1]
                    acc[f2, r] += values[base + 2]
            else:
                for r in range(m):
                    cell = 0
                    for j in range(j0, j0 + k):
                        cell += lut[lut_ptr[j] + gbin[g_feat[j], r]]
                    base = v0 + cell * k
                    for j in range(k):
                        acc[g_feat[j0 + j], r] += values[base + j]
        for r in range(m):
            for f in range(nf):
                out[b0 + r, f] = acc[f, r]
            out[b0 + r, nf] = bias


@njit(cache=True, nogil=True, inline="always")
def _bin(x: float, kind: int, cuts: np.ndarray, c0: int, c1: int) -> int:
    """The feature's global bin of x: numeric intervals 0..nc, zero nc+1, NaN nc+2; categorical listed
    codes 0..nc-1, any other value nc, NaN nc+1 (nc = c1 - c0 cuts)."""
    nc = c1 - c0
    if kind == 0:
        if np.isnan(x):
            return nc + 2
        if abs(x) <= KZERO:
            return nc + 1
        return _count_below(cuts, c0, c1, x)
    if np.isnan(x):
        return nc + 1
    if x <= -1.0 or x >= INT_LIMIT:
        return nc
    code = float(int(x))
    k = _count_below(cuts, c0, c1, code)
    return k if k < nc and cuts[c0 + k] == code else nc


@njit(cache=True, parallel=True)
def fill_parallel(
    X: np.ndarray,
    out: np.ndarray,
    block: int,
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
    """`fill_rows` over all rows of X, blocks of `block` rows spread over numba's threads."""
    n = X.shape[0]
    nblocks = (n + block - 1) // block
    for b in prange(nblocks):
        lo = b * block
        hi = min(n, lo + block)
        fill_rows(
            X, lo, hi, out, kind, cut_ptr, cuts, used, g_ptr, g_feat, lut_ptr, lut, val_off, values, bias
        )
